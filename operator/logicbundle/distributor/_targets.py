"""What each pod should run, and a cheap way for many long-polls to wait for a change.

The store lives on the event loop.  Each pod has one :class:`asyncio.Event`
that every long-poll of that pod awaits; a change sets it and installs a fresh
one, so one assignment wakes all of the pod's waiters at once and an idle
long-poll costs a suspended coroutine, never a timer loop.  Callers in other
threads (the standalone pod watcher) hand their updates over with
``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import TypeAdapter

from logicbundle.distributor._models import BundleTarget, TargetMap, targets_version

_EMPTY: TargetMap = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One pod's assignment at one instant, as the long-poll answers it."""

    version: str
    known: bool
    targets: TargetMap


@dataclass(slots=True)
class _Entry:
    known: bool = False
    uid: str | None = None
    targets: TargetMap = field(default_factory=lambda: _EMPTY)
    version: str = ""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


_UNKNOWN_VERSION = targets_version(known=False, targets=_EMPTY)
_TARGETS_JSON: TypeAdapter[dict[str, BundleTarget]] = TypeAdapter(dict[str, BundleTarget])
_CACHED = 1024
"""Distinct assignments whose version and JSON are kept (then the caches start again)."""


class TargetStore:
    """Assignments per pod, keyed by namespace and name; not thread-safe (event loop only).

    ``uid`` guards against a pod recreated under the same name (a StatefulSet
    pod): an assignment recorded for one uid is not shown to another.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._closed = False
        self._versions: dict[tuple[tuple[str, int], ...], tuple[TargetMap, str]] = {}
        """Versions by the identity of the targets: the pods of one cohort share their target
        objects (:class:`~logicbundle.distributor.RuleTargets`), so a rollout step hashes
        each distinct assignment once, not once per pod."""
        self._bodies: dict[str, bytes] = {}
        """The JSON of each recent version's targets, shared by the answers to its pods."""

    def set_targets(
        self,
        namespace: str,
        name: str,
        targets: Mapping[str, BundleTarget],
        *,
        uid: str | None = None,
    ) -> bool:
        """Record a pod's whole assignment; wakes its long-polls when it changed.

        Returns whether anything changed.
        """
        entry = self._entries.setdefault((namespace, name), _Entry())
        frozen = MappingProxyType(dict(targets))
        if entry.known and entry.uid == uid and dict(entry.targets) == dict(frozen):
            return False
        entry.known, entry.uid, entry.targets = True, uid, frozen
        entry.version = self._version(frozen)
        self._notify(entry)
        return True

    def targets_json(self, snapshot: TargetSnapshot) -> bytes:
        """``snapshot.targets`` as the long-poll's JSON, encoded once per version."""
        body = self._bodies.get(snapshot.version)
        if body is None:
            body = _TARGETS_JSON.dump_json(dict(snapshot.targets), exclude_none=True)
            if len(self._bodies) >= _CACHED:
                self._bodies.clear()
            self._bodies[snapshot.version] = body
        return body

    def _version(self, targets: TargetMap) -> str:
        key = tuple((name, id(target)) for name, target in targets.items())
        hit = self._versions.get(key)
        # The cached mapping holds its targets, so their ids are not reused meanwhile.
        if hit is not None and all(hit[0][name] is target for name, target in targets.items()):
            return hit[1]
        version = targets_version(known=True, targets=targets)
        if len(self._versions) >= _CACHED:
            self._versions.clear()
        self._versions[key] = (targets, version)
        return version

    def forget(self, namespace: str, name: str) -> None:
        """The pod is gone (or no longer opted in): its long-polls see it as unknown."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return
        entry.known, entry.uid, entry.targets = False, None, _EMPTY
        self._notify(entry)
        self._drop_if_idle((namespace, name), entry)

    def pods(self) -> set[tuple[str, str]]:
        """Every pod with a recorded assignment."""
        return {key for key, entry in self._entries.items() if entry.known}

    def get(self, namespace: str, name: str, *, uid: str | None = None) -> TargetSnapshot:
        """The pod's assignment now (unknown when none, or recorded for another uid)."""
        entry = self._entries.get((namespace, name))
        return self._snapshot(entry, uid)

    async def wait_for_change(
        self,
        namespace: str,
        name: str,
        *,
        uid: str | None,
        version: str,
        wait_seconds: float,
    ) -> TargetSnapshot:
        """Return as soon as the pod's version differs from ``version``, or at the timeout."""
        key = (namespace, name)
        entry = self._entries.setdefault(key, _Entry())
        entry.waiters += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        try:
            while True:
                snapshot = self._snapshot(entry, uid)
                remaining = deadline - loop.time()
                if snapshot.version != version or self._closed or remaining <= 0:
                    return snapshot
                changed = entry.changed
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    return self._snapshot(entry, uid)
        finally:
            entry.waiters -= 1
            self._drop_if_idle(key, entry)

    def waiting(self) -> int:
        """How many long-polls are waiting, over all pods."""
        return sum(entry.waiters for entry in self._entries.values())

    def close(self) -> None:
        """Answer every waiting long-poll now (the server is shutting down)."""
        self._closed = True
        for entry in list(self._entries.values()):
            self._notify(entry)

    @staticmethod
    def _notify(entry: _Entry) -> None:
        entry.changed.set()
        entry.changed = asyncio.Event()

    def _drop_if_idle(self, key: tuple[str, str], entry: _Entry) -> None:
        if not entry.known and entry.waiters == 0 and self._entries.get(key) is entry:
            del self._entries[key]

    @staticmethod
    def _snapshot(entry: _Entry | None, uid: str | None) -> TargetSnapshot:
        if entry is None or not entry.known or (entry.uid is not None and entry.uid != uid):
            return TargetSnapshot(version=_UNKNOWN_VERSION, known=False, targets=_EMPTY)
        return TargetSnapshot(version=entry.version, known=True, targets=entry.targets)
