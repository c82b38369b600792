"""Feed the rule targets from the API server (the standalone distributor).

Inside the operator the controller's handlers feed :class:`RuleTargets`.  A
distributor running as its own Deployment watches the same two sources of
truth itself: every LogicBundle (its spec and the state it published in
``status.targetState``, read by :func:`rule_of`) and every opted-in pod that
carries the agent (its facts, read by :func:`facts_of`).  :class:`RuleTargets`
joins them; nothing about targets is read from, or written to, a pod.

Order.  Per namespace (or for the whole cluster) the pods are listed only once
the bundles' first list has been handed to the event loop, which runs the
hand-overs in order: a pod is never computed against bundles not loaded yet,
which would tell its agent "known, no targets" and make it drop what it runs.
Until every first pod list is applied the store knows no pod (agents see
``known: false`` and follow their slow path); :meth:`RuleWatcher.wait_synced`
says when, and the standalone server only listens from then on.

Fail closed.  A published state that does not parse, or names another
bundle, is ignored: the pods keep the targets of the last state that could be
followed (as the agent's slow path does).  A spec that does not parse serves
nothing for that bundle (the operator reports it).

Mechanics.  One thread per list-and-watch with the synchronous client, reading
the raw JSON stream (a pod's full model is large and four fields are needed):
a list in pages, a watch from its resourceVersion, a relist when the API
server says that version is gone (410), which forgets what the new list no
longer holds; other failures back off up to ``max_backoff_seconds``.  Updates
reach the event loop with ``call_soon_threadsafe``.  :meth:`RuleWatcher.stop`
shuts the open responses down, so stopping never waits for a watch timeout.

Memory.  The threads keep nothing per object (a relist holds one page of
JSON at a time, and the compact records of the list).  Per pod,
:class:`RuleTargets` keeps its facts and this module its uid, readiness
condition (handed to :class:`PodStatusWriter` as ``current``) and a reference
to the same facts, so that a change that leaves them as they were (a status
update: phase, conditions, IPs) recomputes nothing; the pods of one
ReplicaSet share one label mapping.  Measured at 10,000 pods: about 3.5 MB,
most of it the names, uids and cohort keys themselves.  Per bundle a
fingerprint of what the rule reads, so a status write that changes neither the
spec nor the published state (counts, conditions) recomputes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Generic, Protocol, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from logicbundle import contract
from logicbundle.api import names
from logicbundle.distributor._reports import ReportStore
from logicbundle.distributor._rules import RuleTargets, facts_of, rule_of

logger = logging.getLogger("logicbundle.distributor.watcher")

INJECT_SELECTOR: Final = f"{names.LABEL_INJECT}={names.LABEL_INJECT_ENABLED}"
"""The pods a distributor serves: those opted in (the webhook adds the agent to them)."""

DEFAULT_PAGE_SIZE: Final = 500
"""Objects per list page: a relist of 10,000 pods never holds them all as JSON at once."""


class WatchSource(Protocol):
    """Raw list and watch calls; responses as the client returns them unread.

    A list response has ``data`` (the JSON bytes) and ``release_conn()``; a
    watch response also ``stream()`` and ``shutdown()``.  An HTTP error raises
    :class:`~kubernetes.client.exceptions.ApiException`.
    """

    def bundles(self, namespace: str | None, **params: Any) -> Any:
        """List (or, with ``watch=True``, watch) the LogicBundles of a namespace or all."""

    def pods(self, namespace: str | None, **params: Any) -> Any:
        """List (or watch) the opted-in pods of a namespace or all."""


class KubeSource:
    """:class:`WatchSource` over a kubernetes ``ApiClient``.

    Needs ``list`` and ``watch`` on ``logicbundles.logicbundle.io`` and on ``pods``.
    ``field_selector`` narrows the cluster-wide lists and watches (the namespaces
    not served: :attr:`~logicbundle.api.namespaces.ServedNamespaces.field_selector`).
    """

    def __init__(
        self,
        api_client: Any,
        *,
        label_selector: str = INJECT_SELECTOR,
        field_selector: str | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._selector = label_selector
        self._cluster_wide: dict[str, Any] = (
            {"field_selector": field_selector} if field_selector else {}
        )

    def bundles(self, namespace: str | None, **params: Any) -> Any:
        group, version, plural = names.GROUP, names.VERSION, names.PLURAL
        if namespace is None:
            return self._custom.list_cluster_custom_object(
                group, version, plural, _preload_content=False, **self._cluster_wide, **params
            )
        return self._custom.list_namespaced_custom_object(
            group, version, namespace, plural, _preload_content=False, **params
        )

    def pods(self, namespace: str | None, **params: Any) -> Any:
        common: dict[str, Any] = {"label_selector": self._selector, "_preload_content": False}
        if namespace is None:
            return self._core.list_pod_for_all_namespaces(**common, **self._cluster_wide, **params)
        return self._core.list_namespaced_pod(namespace, **common, **params)


# --- what the threads hand to the event loop ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BundleSeen:
    namespace: str
    name: str
    fingerprint: str
    """What :func:`rule_of` reads, as canonical JSON."""
    body: Mapping[str, Any]
    """Name, spec and published state only."""


@dataclass(frozen=True, slots=True)
class _PodSeen:
    namespace: str
    name: str
    uid: str | None
    facts: contract.PodFacts | None
    """None: not served (no agent container, or being deleted)."""
    ready: bool | None
    """The pod's ``logicbundle.io/bundles-ready`` condition (None: absent or Unknown)."""


def _bundle_seen(obj: Mapping[str, Any]) -> _BundleSeen:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    body: dict[str, Any] = {
        "metadata": {"name": meta.get("name", "")},
        "spec": obj.get("spec") or {},
    }
    if status.get("targetState") is not None:
        body["status"] = {"targetState": status["targetState"]}
    return _BundleSeen(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        fingerprint=json.dumps(body, sort_keys=True, separators=(",", ":")),
        body=body,
    )


def _readiness(obj: Mapping[str, Any]) -> bool | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == names.POD_CONDITION_READY:
            return {"True": True, "False": False}.get(condition.get("status"))
    return None


def _served(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    containers = (obj.get("spec") or {}).get("initContainers") or []
    return any(c.get("name") == names.AGENT_CONTAINER for c in containers)


class LabelSets:
    """One shared read-only mapping per distinct label set (a ReplicaSet's pods share one).

    Bounded: when ``limit`` sets are held it starts over (the sets already
    handed out stay valid; only the sharing of new ones restarts).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._sets: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        self._lock = threading.Lock()  # the pod threads of several namespaces share it

    def get(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        key = tuple(sorted((sys.intern(str(k)), sys.intern(str(v))) for k, v in labels.items()))
        with self._lock:
            shared = self._sets.get(key)
            if shared is None:
                if len(self._sets) >= self._limit:
                    self._sets.clear()
                shared = self._sets[key] = MappingProxyType(dict(key))
            return shared


def _pod_seen(obj: Mapping[str, Any], *, label_sets: LabelSets) -> _PodSeen:
    meta = obj.get("metadata") or {}
    facts = None
    if _served(obj):
        raw = facts_of(obj)
        labels = label_sets.get(raw.labels)
        facts = contract.PodFacts(key=raw.key, labels=labels, admitted=raw.admitted)
    return _PodSeen(
        namespace=sys.intern(str(meta.get("namespace", ""))),
        name=str(meta.get("name", "")),
        uid=meta.get("uid") or None,
        facts=facts,
        ready=_readiness(obj),
    )


# --- one list-and-watch, in a thread ------------------------------------------------------

R = TypeVar("R")


class _Gone(Exception):  # control flow: relist
    pass


class _Stream(Generic[R]):
    """Lists then watches one kind of object in one scope; hands records to the loop."""

    def __init__(
        self,
        *,
        what: str,
        call: Callable[..., Any],
        convert: Callable[[Mapping[str, Any]], R],
        on_list: Callable[[list[R]], None],
        on_event: Callable[[str, R], None],
        loop: asyncio.AbstractEventLoop,
        stop: threading.Event,
        after: threading.Event | None,
        page_size: int,
        watch_timeout_seconds: int,
        max_backoff_seconds: float,
    ) -> None:
        self.what = what
        self._call = call
        self._convert = convert
        self._on_list = on_list
        self._on_event = on_event
        self._loop = loop
        self._stop = stop
        self._after = after
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._max_backoff = max_backoff_seconds
        self._lock = threading.Lock()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.listed = threading.Event()
        """Set once the first list has been handed to the loop."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.what}", daemon=True)
        self._thread.start()

    def interrupt(self) -> None:
        """Shut the open response down (``stop`` must be set first)."""
        with self._lock:
            response = self._response
        if response is not None:
            response.shutdown()
        self.listed.set()  # releases a stream waiting for this one; it sees ``stop``

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        if self._after is not None:
            self._after.wait()
        backoff = first = min(0.5, self._max_backoff)
        while not self._stop.is_set():
            try:
                version = self._list()
                backoff = first
                while not self._stop.is_set():
                    version = self._watch(version)
            except _Gone:
                logger.info("%s: the watched version is gone; listing again", self.what)
            except Exception as exc:
                if self._stop.is_set():
                    return
                logger.warning(
                    "%s: listing or watching failed (%s); retrying in %.1fs",
                    self.what,
                    _describe(exc),
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def _request(self, **params: Any) -> Any:
        try:
            return self._call(**params)
        except ApiException as exc:
            if exc.status == 410:  # an expired continue token or resourceVersion
                raise _Gone from None
            raise

    def _list(self) -> str:
        records: list[R] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self._page_size, "_request_timeout": 60}
            if token:
                params["_continue"] = token
            response = self._request(**params)
            try:
                data = json.loads(response.data)
            finally:
                response.release_conn()
            records.extend(self._convert(item) for item in data.get("items") or [])
            meta = data.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        if self._stop.is_set():
            return ""
        self._loop.call_soon_threadsafe(self._on_list, records)
        self.listed.set()
        return str(meta["resourceVersion"])

    def _watch(self, version: str) -> str:
        response = self._request(
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
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._loop.call_soon_threadsafe(self._on_event, kind, self._convert(obj))
        finally:
            with self._lock:
                self._response = None
            response.release_conn()
        return version


def _describe(exc: Exception) -> str:
    # An API error's body may echo the request: keep the status and reason only.
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__


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


# --- the watcher ----------------------------------------------------------------------------


class _Streams:
    """Start and stop a set of list-and-watch threads that share one stop flag."""

    _stop: threading.Event
    _streams: list[_Stream[Any]]

    def start(self) -> None:
        for stream in self._streams:
            stream.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every watch (blocking: joins the threads)."""
        self._stop.set()
        for stream in self._streams:
            stream.interrupt()
        for stream in self._streams:
            stream.join(timeout)


class PodWatch(_Streams, Generic[R]):
    """Lists then watches the opted-in pods of some namespaces (or all), for another owner.

    The operator's view of its pods uses it (``logicbundle.controller``): the
    same threads as :class:`RuleWatcher`'s pod streams (pages, a watch from the
    list's resourceVersion, a relist on 410, backoff), with the caller's
    ``convert`` run in the thread.  On ``loop``: ``on_list(scope, records)``
    with a scope's whole list (``scope`` None: the whole cluster), then
    ``on_event(kind, record)`` for each change.  ``namespaces`` empty watches
    the whole cluster.
    """

    def __init__(
        self,
        *,
        source: WatchSource,
        convert: Callable[[Mapping[str, Any]], R],
        on_list: Callable[[str | None, list[R]], None],
        on_event: Callable[[str, R], None],
        loop: asyncio.AbstractEventLoop,
        namespaces: Iterable[str] = (),
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._stop = threading.Event()
        self.scopes: tuple[str | None, ...] = tuple(dict.fromkeys(namespaces)) or (None,)
        self._streams: list[_Stream[Any]] = [
            _Stream(
                what=f"pods/{scope or 'all'}",
                call=_bind(source.pods, scope),
                convert=convert,
                on_list=_bind_list(on_list, scope),
                on_event=on_event,
                loop=loop,
                stop=self._stop,
                after=None,
                page_size=page_size,
                watch_timeout_seconds=watch_timeout_seconds,
                max_backoff_seconds=max_backoff_seconds,
            )
            for scope in self.scopes
        ]


class RuleWatcher(_Streams):
    """Lists and watches LogicBundles and opted-in pods into a :class:`RuleTargets`.

    ``namespaces`` empty watches the whole cluster.  Start and stop from any
    thread; everything else (``wait_synced``, ``current_readiness``) on the loop.
    """

    def __init__(
        self,
        *,
        source: WatchSource,
        rules: RuleTargets,
        loop: asyncio.AbstractEventLoop,
        namespaces: Iterable[str] = (),
        reports: ReportStore | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self._rules = rules
        self._reports = reports
        self._stop = threading.Event()
        self._synced = asyncio.Event()
        self._bundles: dict[str, dict[str, str]] = {}
        """Per namespace and bundle, the fingerprint of the last object handled."""
        self._pods: dict[str, dict[str, tuple[str | None, bool | None, contract.PodFacts]]] = {}
        """Per namespace and served pod, its uid, readiness condition and facts."""
        self._streams: list[_Stream[Any]] = []
        label_sets = LabelSets()
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self._unsynced: set[str | None] = set(scopes)
        common: dict[str, Any] = {
            "loop": loop,
            "stop": self._stop,
            "page_size": page_size,
            "watch_timeout_seconds": watch_timeout_seconds,
            "max_backoff_seconds": max_backoff_seconds,
        }
        for scope in scopes:
            where = scope or "all"
            bundles: _Stream[_BundleSeen] = _Stream(
                what=f"logicbundles/{where}",
                call=_bind(source.bundles, scope),
                convert=_bundle_seen,
                on_list=_bind_list(self._bundles_listed, scope),
                on_event=self._bundle_event,
                after=None,
                **common,
            )
            pods: _Stream[_PodSeen] = _Stream(
                what=f"pods/{where}",
                call=_bind(source.pods, scope),
                convert=functools.partial(_pod_seen, label_sets=label_sets),
                on_list=_bind_list(self._pods_listed, scope),
                on_event=self._pod_event,
                after=bundles.listed,
                **common,
            )
            self._streams += [bundles, pods]

    @property
    def synced(self) -> bool:
        """Every scope's bundles, then pods, have been listed into the rules."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def current_readiness(self, namespace: str, name: str, uid: str) -> bool | None:
        """The pod's readiness condition as the watch saw it last (for ``PodStatusWriter``)."""
        seen = self._pods.get(namespace, {}).get(name)
        if seen is None or seen[0] != uid:
            return None
        return seen[1]

    # -- bundles, on the loop -------------------------------------------------------------

    def _bundles_listed(self, scope: str | None, listed: list[_BundleSeen]) -> None:
        present = {(b.namespace, b.name) for b in listed}
        for namespace, name in _in_scope(self._bundles, scope) - present:
            self._bundle_event("DELETED", _BundleSeen(namespace, name, "", {}))
        for bundle in listed:
            self._bundle_event("MODIFIED", bundle)

    def _bundle_event(self, kind: str, bundle: _BundleSeen) -> None:
        ns, name = bundle.namespace, bundle.name
        known = self._bundles.setdefault(ns, {})
        if kind == "DELETED":
            known.pop(name, None)
            self._rules.set_bundle(ns, name, None)
            return
        if known.get(name) == bundle.fingerprint:
            return  # a status write that changes nothing the rule reads
        known[name] = bundle.fingerprint
        problem = _state_problem(bundle.body)
        if problem is not None:
            logger.warning(
                "LogicBundle %s/%s: status.targetState ignored (%s); its pods keep the "
                "targets of the last state that could be followed",
                ns,
                name,
                problem,
            )
            return
        rule = rule_of(bundle.body)
        if rule is None:
            logger.warning("LogicBundle %s/%s: the spec does not parse; nothing served", ns, name)
            self._rules.set_bundle(ns, name, None)
            return
        self._rules.set_bundle(ns, name, rule)

    # -- pods, on the loop ----------------------------------------------------------------

    def _pods_listed(self, scope: str | None, listed: list[_PodSeen]) -> None:
        present = {(p.namespace, p.name) for p in listed}
        gone = _in_scope(self._pods, scope)
        if self._reports is not None:
            gone |= {key for key in self._reports.all_latest() if scope is None or key[0] == scope}
        for namespace, name in gone - present:
            self._pod_event("DELETED", _PodSeen(namespace, name, None, None, None))
        for pod in listed:
            self._pod_event("MODIFIED", pod)
        if scope in self._unsynced:
            self._unsynced.discard(scope)
            if not self._unsynced:
                logger.info("LogicBundles and pods listed: every pod's targets are known")
                self._synced.set()

    def _pod_event(self, kind: str, pod: _PodSeen) -> None:
        ns, name = pod.namespace, pod.name
        known = self._pods.setdefault(ns, {})
        if kind == "DELETED" or pod.facts is None:
            known.pop(name, None)
            if not known:
                del self._pods[ns]
            self._rules.forget_pod(ns, name)
            if kind == "DELETED" and self._reports is not None:
                self._reports.forget(ns, name)
            return
        before = known.get(name)
        known[name] = (pod.uid, pod.ready, pod.facts)
        if before is not None and before[0] == pod.uid and before[2] == pod.facts:
            return  # a status change (phase, readiness, IPs): the targets are the same
        self._rules.set_pod(ns, name, uid=pod.uid, facts=pod.facts)


def _state_problem(body: Mapping[str, Any]) -> str | None:
    """Why a published state must not be followed (None: it can be, or there is none)."""
    raw = (body.get("status") or {}).get("targetState")
    if raw is None:
        return None
    try:
        state = contract.state_from_json(raw)
    except contract.StateError as exc:
        return str(exc)
    name = (body.get("metadata") or {}).get("name")
    if state.bundle != name:
        return f"it is published for bundle {state.bundle!r}"
    return None


def _in_scope(known: Mapping[str, Mapping[str, object]], scope: str | None) -> set[tuple[str, str]]:
    namespaces = known if scope is None else ([scope] if scope in known else [])
    return {(ns, name) for ns in namespaces for name in known[ns]}


def _bind(call: Callable[..., Any], scope: str | None) -> Callable[..., Any]:
    return lambda **params: call(scope, **params)


def _bind_list(
    apply: Callable[[str | None, list[R]], None], scope: str | None
) -> Callable[[list[R]], None]:
    return lambda records: apply(scope, records)
