"""The operator's view of the opted-in pods: one list-and-watch, compact snapshots.

kopf's per-object machinery does not scale to the pods of a big cluster: every
object gets a worker, and each new worker wakes every other one (measured at
10,000 pods: the operator spent minutes at full CPU in kopf's toggles before
its first reconcile).  The controller only needs a few fields of each pod, per
namespace, so it keeps them itself, fed by the same list-and-watch threads as
the distributor replicas (:class:`~logicbundle.distributor.PodWatch`).

Per pod a :class:`PodSnapshot` with only what a reconcile reads: the labels
(one shared mapping per distinct set), the two annotations of the target
rule, the agent container's presence, the restart count, deletion and the
readiness condition.  A watch event that changes none of them (kwok's or the
kubelet's status updates: phase, IPs, other conditions) is dropped here, so it
wakes no reconcile.  Until every scope's first list is applied
:meth:`PodView.wait_synced` waits: a reconcile never judges an empty view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from logicbundle import contract
from logicbundle.controller._reconcile import PodSnapshot, snapshot_pod
from logicbundle.distributor import LabelSets, PodWatch, WatchSource

Change = Callable[[PodSnapshot | None, PodSnapshot | None], None]
"""Called with (before, after): None before for a new pod, None after for one gone."""

RULE_ANNOTATIONS = (contract.ANNOTATION_COHORT_KEY, contract.ANNOTATION_ADMITTED_AT)
"""The annotations the controller reads (the target rule's facts); the rest are dropped."""


def compact_snapshot(obj: Mapping[str, Any], *, label_sets: LabelSets) -> PodSnapshot:
    """:func:`snapshot_pod` keeping only what the controller reads, labels shared."""
    full = snapshot_pod(obj)
    annotations = {k: full.annotations[k] for k in RULE_ANNOTATIONS if k in full.annotations}
    return PodSnapshot(
        namespace=full.namespace,
        name=full.name,
        uid=full.uid,
        labels=label_sets.get(full.labels),
        annotations=annotations,
        has_agent=full.has_agent,
        restarts=full.restarts,
        deleting=full.deleting,
        bundles_ready=full.bundles_ready,
    )


class PodView:
    """Opted-in pods per namespace, as the last list and watch events left them.

    Event loop only, except :meth:`start` and :meth:`stop` (any thread).
    """

    def __init__(
        self,
        *,
        source: WatchSource,
        loop: asyncio.AbstractEventLoop,
        on_change: Change,
        namespaces: Iterable[str] = (),
        watch_timeout_seconds: int = 300,
    ) -> None:
        self._on_change = on_change
        self._pods: dict[str, dict[str, PodSnapshot]] = {}
        self._synced = asyncio.Event()
        label_sets = LabelSets()
        self._watch: PodWatch[PodSnapshot] = PodWatch(
            source=source,
            convert=lambda obj: compact_snapshot(obj, label_sets=label_sets),
            on_list=self._listed,
            on_event=self._event,
            loop=loop,
            namespaces=namespaces,
            watch_timeout_seconds=watch_timeout_seconds,
        )
        self._unsynced: set[str | None] = set(self._watch.scopes)

    def start(self) -> None:
        self._watch.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the watches (blocking: joins their threads)."""
        self._watch.stop(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def in_namespace(self, namespace: str) -> list[PodSnapshot]:
        return list(self._pods.get(namespace, {}).values())

    def __len__(self) -> int:
        return sum(len(pods) for pods in self._pods.values())

    def _listed(self, scope: str | None, listed: list[PodSnapshot]) -> None:
        present = {(p.namespace, p.name) for p in listed}
        namespaces = list(self._pods) if scope is None else [scope]
        for ns in namespaces:
            for name in [n for n in self._pods.get(ns, {}) if (ns, n) not in present]:
                self._remove(ns, name)
        for pod in listed:
            self._event("MODIFIED", pod)
        if scope in self._unsynced:
            self._unsynced.discard(scope)
            if not self._unsynced:
                self._synced.set()

    def _event(self, kind: str, pod: PodSnapshot) -> None:
        if kind == "DELETED":
            self._remove(pod.namespace, pod.name)
            return
        pods = self._pods.setdefault(pod.namespace, {})
        before = pods.get(pod.name)
        if before == pod:
            return  # nothing the controller reads changed
        pods[pod.name] = pod
        self._on_change(before, pod)

    def _remove(self, namespace: str, name: str) -> None:
        pods = self._pods.get(namespace)
        before = pods.pop(name, None) if pods is not None else None
        if pods is not None and not pods:
            del self._pods[namespace]
        if before is not None:
            self._on_change(before, None)
