"""Feed the target store from the pods' target annotations (the standalone distributor).

Inside the operator the controller calls :meth:`TargetStore.set_targets`
itself.  A distributor running as its own Deployment learns the same thing
from the source of truth, the ``logicbundle.io/target.<bundle>`` annotations
of opted-in pods: a list, then a watch from its resourceVersion, relisting
when the API server says the version is gone (410).

The watch runs in a thread with the synchronous client and reads the raw
JSON stream (a pod's full model is large and we need four fields); updates go
to the event loop with ``call_soon_threadsafe``.  :meth:`PodTargetWatcher.stop`
shuts the open response down, so stopping never waits for the watch timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client
from pydantic import ValidationError

from logicbundle.api import names
from logicbundle.distributor._models import BundleTarget
from logicbundle.distributor._reports import ReportStore
from logicbundle.distributor._targets import TargetStore

logger = logging.getLogger("logicbundle.distributor.watcher")

INJECT_SELECTOR: Final = f"{names.LABEL_INJECT}={names.LABEL_INJECT_ENABLED}"


@dataclass(frozen=True, slots=True)
class PodTargets:
    namespace: str
    name: str
    uid: str | None
    targets: Mapping[str, BundleTarget]


def pod_targets(pod: Mapping[str, Any]) -> PodTargets:
    """The assignment a pod's annotations hold; malformed values are skipped (and logged)."""
    meta = pod.get("metadata") or {}
    targets: dict[str, BundleTarget] = {}
    for key, value in (meta.get("annotations") or {}).items():
        if not key.startswith(names.ANNOTATION_TARGET_PREFIX):
            continue
        bundle = key.removeprefix(names.ANNOTATION_TARGET_PREFIX)
        try:
            targets[bundle] = BundleTarget(digest=value)
        except ValidationError:
            logger.warning(
                "pod %s/%s: annotation %s is not a digest; ignored",
                meta.get("namespace"),
                meta.get("name"),
                key,
            )
    return PodTargets(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=meta.get("uid"),
        targets=targets,
    )


class _Gone(Exception):  # control flow: relist
    pass


class PodTargetWatcher:
    """Lists and watches opted-in pods of one namespace (or all) into a :class:`TargetStore`."""

    def __init__(
        self,
        *,
        api_client: Any,
        store: TargetStore,
        loop: asyncio.AbstractEventLoop,
        namespace: str | None = None,
        reports: ReportStore | None = None,
        label_selector: str = INJECT_SELECTOR,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._store = store
        self._loop = loop
        self._namespace = namespace
        self._reports = reports
        self._selector = label_selector
        self._watch_timeout = watch_timeout_seconds
        self._max_backoff = max_backoff_seconds
        self._stop = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._known: set[tuple[str, str]] = set()
        self.synced = threading.Event()
        """Set once the first list has been handed to the store."""

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"pod-watcher-{self._namespace or 'all'}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            response.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                backoff = 0.5
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Gone:
                continue
            except Exception as exc:
                if self._stop.is_set():
                    return
                logger.warning("watching pods failed (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _call(self, **kwargs: Any) -> Any:
        common: dict[str, Any] = {"label_selector": self._selector, "_preload_content": False}
        if self._namespace is None:
            return self._core.list_pod_for_all_namespaces(**common, **kwargs)
        return self._core.list_namespaced_pod(self._namespace, **common, **kwargs)

    def _list(self) -> str:
        response = self._call(_request_timeout=60)
        data = json.loads(response.data)
        pods = [pod_targets(item) for item in data.get("items") or []]
        keys = {(p.namespace, p.name) for p in pods}
        gone = self._known - keys
        self._known = keys
        self._loop.call_soon_threadsafe(self._apply_list, pods, gone)
        return str(data["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        response = self._call(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout,
            _request_timeout=(10, self._watch_timeout + 30),
        )
        with self._lock:
            self._response = response
        if self._stop.is_set():
            response.shutdown()
        try:
            for line in _lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    pod = pod_targets(obj)
                    self._known.add((pod.namespace, pod.name))
                    self._loop.call_soon_threadsafe(self._apply_pod, pod)
                elif kind == "DELETED":
                    pod = pod_targets(obj)
                    self._known.discard((pod.namespace, pod.name))
                    self._loop.call_soon_threadsafe(self._apply_gone, {(pod.namespace, pod.name)})
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return version

    # -- on the event loop ---------------------------------------------------------------

    def _apply_pod(self, pod: PodTargets) -> None:
        self._store.set_targets(pod.namespace, pod.name, pod.targets, uid=pod.uid)

    def _apply_gone(self, gone: set[tuple[str, str]]) -> None:
        for namespace, name in gone:
            self._store.forget(namespace, name)
            if self._reports is not None:
                self._reports.forget(namespace, name)

    def _apply_list(self, pods: list[PodTargets], gone: set[tuple[str, str]]) -> None:
        self._apply_gone(gone)
        for pod in pods:
            self._apply_pod(pod)


def _lines(response: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending
