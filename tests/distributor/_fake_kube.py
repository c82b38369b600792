"""A fake API server for the rule watcher: paged lists, watch streams from a version, 410s.

Each :class:`FakeKind` is one resource (LogicBundles or pods).  The test
changes objects with :meth:`FakeKind.put` / :meth:`FakeKind.delete` (an event
every open watch sees) or their ``quietly`` forms (no event: a change missed
while the watch was down, which only a relist finds).  :meth:`FakeKind.settle`
waits until the watcher's thread has taken every event and blocks for the next
one, so the test knows every hand-over to the event loop has been posted.

Responses are raw like the client's ``_preload_content=False`` ones: ``data``
for a list, ``stream()`` for a watch, ``shutdown()`` and ``release_conn()``.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from logicbundle import contract
from logicbundle.api import names

SETTLE_SECONDS = 10.0
"""How long :meth:`FakeKind.settle` waits for the watcher's thread before failing the test."""

VERIFY = {"keys": [{"pem": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"}]}
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def bundle(
    name: str = "pricing",
    *,
    namespace: str = "shop",
    selector: Mapping[str, str] | None = None,
    state: Any = None,
    generation: int = 1,
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A LogicBundle object; ``state`` is ``status.targetState`` as published (any JSON)."""
    body: dict[str, Any] = {
        "apiVersion": names.API_VERSION,
        "kind": "LogicBundle",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}"},
        "spec": dict(spec)
        if spec is not None
        else {
            "source": {"ref": "registry.example.com/team/pricing:v1"},
            "verify": VERIFY,
            "target": {"podSelector": {"matchLabels": dict(selector or {"app": "web"})}},
        },
        "status": {"observedGeneration": generation},
    }
    if state is not None:
        body["status"]["targetState"] = state
    return body


def stable(digest: str, *, bundle: str = "pricing") -> dict[str, Any]:
    """A published state with every pod on ``digest``."""
    return {"bundle": bundle, "stable": digest}


def pod(
    name: str,
    *,
    namespace: str = "shop",
    labels: Mapping[str, str] | None = None,
    uid: str | None = None,
    agent: bool = True,
    deleting: bool = False,
    ready: str | None = None,
    key: str | None = None,
    admitted: int | None = None,
) -> dict[str, Any]:
    """An opted-in pod object, with the agent container unless ``agent`` is False."""
    annotations: dict[str, str] = {}
    if key is not None:
        annotations[contract.ANNOTATION_COHORT_KEY] = key
    if admitted is not None:
        annotations[contract.ANNOTATION_ADMITTED_AT] = str(admitted)
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{name}",
        "labels": {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED, **(labels or {"app": "web"})},
        "annotations": annotations,
    }
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    init = [{"name": names.AGENT_CONTAINER, "image": "agent:1", "restartPolicy": "Always"}]
    status: dict[str, Any] = {"phase": "Running"}
    if ready is not None:
        status["conditions"] = [{"type": names.POD_CONDITION_READY, "status": ready}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "initContainers": init if agent else [],
            "containers": [{"name": "app", "image": "app:1"}],
        },
        "status": status,
    }


class FakeList:
    """A list response: the JSON body, read at once."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


@dataclass(eq=False)
class FakeWatch:
    """A watch response: the events after ``version`` in one scope, until shut down."""

    kind: FakeKind
    namespace: str | None
    version: int
    position: int = 0
    """Index of the next event of the kind's log to look at."""
    closed: bool = False
    blocked: bool = False
    """Waiting for an event, with none left to hand out."""
    expired: bool = False

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        del amt, decode_content
        cond = self.kind.cond
        while True:
            with cond:
                line = self._next()
                while line is None and not self.closed:
                    self.blocked = True
                    cond.notify_all()
                    cond.wait()
                    line = self._next()
                self.blocked = False
                if line is None:
                    return
            yield line

    def _next(self) -> bytes | None:
        if self.closed:
            return None
        if self.expired:
            self.expired = False
            error = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            return json.dumps({"type": "ERROR", "object": error}).encode() + b"\n"
        log = self.kind.log
        while self.position < len(log):
            version, namespace, line = log[self.position]
            self.position += 1
            if version > self.version and self.namespace in (None, namespace):
                return line
        return None

    def caught_up(self) -> bool:
        """Open, waiting, and nothing left for it (the kind's lock held)."""
        if self.closed or not self.blocked or self.expired:
            return False
        return not any(
            version > self.version and self.namespace in (None, namespace)
            for version, namespace, _ in self.kind.log[self.position :]
        )

    def shutdown(self) -> None:
        self.release_conn()

    def release_conn(self) -> None:
        with self.kind.cond:
            self.closed = True
            self.kind.cond.notify_all()


@dataclass(eq=False)
class FakeKind:
    """One resource of the fake API server (see the module doc)."""

    name: str
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    version: int = 1
    log: list[tuple[int, str, bytes]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    watches: list[FakeWatch] = field(default_factory=list)
    lists: int = 0
    """List calls answered (every page counts)."""
    listed: threading.Event = field(default_factory=threading.Event)
    """Set at the first list call."""
    gate: threading.Event = field(default_factory=threading.Event)
    """Lists wait for it (set unless a test closes it)."""
    failures: list[Exception] = field(default_factory=list)
    """Raised, in order, by the next calls (list or watch)."""
    expire_continue: bool = False
    """The next call with a continue token is answered 410 (the token expired)."""
    _snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gate.set()

    # -- the test's side ----------------------------------------------------------------

    def put(self, obj: Mapping[str, Any], *, quietly: bool = False) -> None:
        """Create or replace an object (an ADDED or MODIFIED event unless ``quietly``)."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        with self.cond:
            self.version += 1
            stored = copy.deepcopy(dict(obj))
            stored["metadata"]["resourceVersion"] = str(self.version)
            kind = "MODIFIED" if key in self.objects else "ADDED"
            self.objects[key] = stored
            if not quietly:
                self._event(kind, stored)

    def delete(self, namespace: str, name: str, *, quietly: bool = False) -> None:
        with self.cond:
            self.version += 1
            stored = self.objects.pop((namespace, name))
            stored["metadata"]["resourceVersion"] = str(self.version)
            if not quietly:
                self._event("DELETED", stored)

    def raw_event(self, namespace: str, line: bytes) -> None:
        """Send a line as it is (a malformed or unusual event)."""
        with self.cond:
            self.version += 1
            self.log.append((self.version, namespace, line))
            self.cond.notify_all()

    def expire(self) -> None:
        """Every open watch is told its version is gone (410): the watcher must relist."""
        with self.cond:
            for watch in self.watches:
                if not watch.closed:
                    watch.expired = True
            self.cond.notify_all()

    def settle(self, *, watches: int = 1) -> None:
        """Wait until ``watches`` watches are open, caught up and blocked for the next event."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: sum(1 for w in self.watches if w.caught_up()) >= watches,
                timeout=SETTLE_SECONDS,
            )
        assert ok, f"the {self.name} watch never caught up"

    def open_watches(self) -> int:
        with self.cond:
            return sum(1 for w in self.watches if not w.closed)

    def _event(self, kind: str, obj: Mapping[str, Any]) -> None:
        line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
        self.log.append((self.version, obj["metadata"]["namespace"], line))
        self.cond.notify_all()

    # -- the watcher's side --------------------------------------------------------------

    def call(self, namespace: str | None, **params: Any) -> Any:
        with self.cond:
            if self.failures:
                raise self.failures.pop(0)
        if params.get("watch"):
            with self.cond:
                watch = FakeWatch(self, namespace, int(params["resource_version"]))
                self.watches.append(watch)
                return watch
        self.listed.set()
        assert self.gate.wait(SETTLE_SECONDS), "the test never opened the gate"
        with self.cond:
            self.lists += 1
            token = params.get("_continue")
            if token:
                if self.expire_continue:
                    self.expire_continue = False
                    raise ApiException(status=410, reason="Expired")
                version, items = self._snapshots.pop(token)
            else:
                version = self.version
                items = [
                    copy.deepcopy(o)
                    for (ns, _), o in sorted(self.objects.items())
                    if namespace in (None, ns)
                ]
            limit = int(params.get("limit") or len(items) or 1)
            page, rest = items[:limit], items[limit:]
            meta: dict[str, Any] = {"resourceVersion": str(version)}
            if rest:
                next_token = f"{self.name}-{self.lists}"
                self._snapshots[next_token] = (version, rest)
                meta["continue"] = next_token
            return FakeList({"kind": "List", "metadata": meta, "items": page})


@dataclass(eq=False)
class FakeSource:
    """A :class:`~logicbundle.distributor.WatchSource` over two fake kinds."""

    bundle_kind: FakeKind = field(default_factory=lambda: FakeKind("logicbundles"))
    pod_kind: FakeKind = field(default_factory=lambda: FakeKind("pods"))

    def bundles(self, namespace: str | None, **params: Any) -> Any:
        return self.bundle_kind.call(namespace, **params)

    def pods(self, namespace: str | None, **params: Any) -> Any:
        return self.pod_kind.call(namespace, **params)

    def settle(self, *, scopes: int = 1) -> None:
        self.bundle_kind.settle(watches=scopes)
        self.pod_kind.settle(watches=scopes)
