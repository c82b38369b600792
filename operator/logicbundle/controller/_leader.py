"""Which replica acts, and the pod label that routes the distributor Service to it.

kopf elects nothing by itself: every replica writes a heartbeat (priority,
lifetime, last seen) under its identity into the status of one
ClusterKopfPeering, and each replica pauses while it sees a live peer of higher
priority, or of its own priority (then all of them pause).  The distributor
Service must reach the one replica that acts, because the targets and the
agents' reports live in its memory; so each replica asks the same question of
the same object (:func:`decide`) and labels its own pod
``logicbundle.io/leader=true`` while the answer is yes (:class:`LeaderLabeler`).

The rule is kopf 1.45's, from ``kopf._core.engines.peering.process_peering_event``:

* a record is dead when ``lastseen + lifetime <= now`` (``lifetime`` defaults to
  60 s, a missing ``lastseen`` means now); dead records and our own are ignored;
* a live peer with a higher priority pauses us;
* a live peer with the same priority pauses us too (kopf pauses every
  same-priority operator, itself included, unless the operator is sharded,
  which ours never is);
* otherwise we act.  kopf re-evaluates on every change of the object and when
  the earliest blocking peer's record lapses; the labeler polls the object and
  also wakes at that instant.

A peering object that does not exist means kopf stays paused (our peering is
mandatory): not the leader.  Without peering (``--standalone``) the replica
always acts.  Records kopf could not read either (not a mapping, a priority that
is no number) are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from logicbundle.api import names
from logicbundle.controller._kube import KubeError

logger = logging.getLogger("logicbundle.operator")

T = TypeVar("T")

DEFAULT_LIFETIME = datetime.timedelta(seconds=60)
"""kopf's lifetime for a record that does not say its own."""

POLL_INTERVAL = 2.0
"""Seconds between two reads of the peering object.

kopf resumes a standby at once when the leader leaves cleanly (its record is
removed) and one lifetime (60 s) after it dies; a 2 s poll adds little to either,
at one cheap list request per replica.
"""

_WAKE_MARGIN = 0.05
"""Seconds past a peer's deadline to wake at, so that it is dead when we look."""

STOP_TIMEOUT = 5.0
"""Seconds :meth:`LeaderLabeler.stop` lets a decision in flight finish before cancelling it."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True, kw_only=True)
class Peer:
    """One replica's record in the peering object's status."""

    identity: str
    priority: int
    deadline: datetime.datetime
    """When the record lapses unless the replica renews it."""


@dataclass(frozen=True, kw_only=True)
class Leadership:
    """Whether this replica acts, why, and when to decide again at the latest."""

    leader: bool
    reason: str
    recheck_at: datetime.datetime | None = None
    """When the earliest blocking peer's record lapses; None when no peer blocks us."""


def peers(status: Mapping[str, Any] | None, *, now: datetime.datetime) -> list[Peer]:
    """The readable records of a peering object's status, dead ones included."""
    found = []
    for identity, record in (status or {}).items():
        if not isinstance(record, Mapping):
            continue
        try:
            priority = int(record.get("priority", 0))
            lifetime = datetime.timedelta(
                seconds=int(record.get("lifetime", DEFAULT_LIFETIME.total_seconds()))
            )
        except (TypeError, ValueError):
            continue
        lastseen = _parse_time(record.get("lastseen"), now=now)
        if lastseen is None:
            continue
        found.append(Peer(identity=str(identity), priority=priority, deadline=lastseen + lifetime))
    return found


def _parse_time(value: Any, *, now: datetime.datetime) -> datetime.datetime | None:
    if value is None:
        return now
    try:
        parsed = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    # kopf (iso8601) reads a time without a zone as UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def decide(
    status: Mapping[str, Any] | None, *, identity: str, priority: int, now: datetime.datetime
) -> Leadership:
    """Whether the replica ``identity`` with ``priority`` acts, by kopf's rule (see above)."""
    live = [p for p in peers(status, now=now) if p.deadline > now and p.identity != identity]
    higher = [p for p in live if p.priority > priority]
    same = [p for p in live if p.priority == priority]
    blocking = higher + same
    recheck = min((p.deadline for p in blocking), default=None)
    if higher:
        first = max(higher, key=lambda p: p.priority)
        return Leadership(
            leader=False,
            reason=f"{first.identity} has a higher priority ({first.priority} > {priority})",
            recheck_at=recheck,
        )
    if same:
        return Leadership(
            leader=False,
            reason=f"{same[0].identity} has the same priority ({priority}): kopf pauses both",
            recheck_at=recheck,
        )
    return Leadership(leader=True, reason="no live peer has the same or a higher priority")


@dataclass(frozen=True, kw_only=True)
class OwnPod:
    """The pod this replica runs in (from ``POD_NAME``/``POD_NAMESPACE``)."""

    namespace: str
    name: str

    @property
    def identity(self) -> str:
        """The kopf peering identity of the replica in this pod."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class LeaderSettings:
    """What the labeler needs: whose pod, which peering, and this replica's priority."""

    pod: OwnPod
    peering_name: str | None
    """None: standalone, this replica always acts."""
    priority: int

    @property
    def identity(self) -> str:
        """The identity kopf is started with: the pod's (see :attr:`OwnPod.identity`)."""
        return self.pod.identity


class LeaderApi(Protocol):
    """The calls the labeler makes (:class:`~logicbundle.controller._kube.Kube`)."""

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...

    def cluster_peering(self, name: str) -> Mapping[str, Any] | None: ...

    def patch_pod_labels(
        self, namespace: str, name: str, labels: Mapping[str, str | None]
    ) -> None: ...


class LeaderLabeler:
    """Keep ``logicbundle.io/leader=true`` on this replica's pod exactly while it acts.

    :meth:`start` clears the label (a previous run in the same pod may have left
    it) and follows the peering object in a task; :meth:`stop` ends the task and
    clears the label, so a replica that shuts down leaves the Service at once.
    Only this replica's own pod is ever written.
    """

    def __init__(
        self,
        *,
        api: LeaderApi,
        settings: LeaderSettings,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self._api = api
        self._settings = settings
        self._poll_interval = poll_interval
        self._clock = clock
        self._labelled: bool | None = None
        """What the pod's label says, as far as we know (None: unknown, a write failed)."""
        self._decided = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def labelled(self) -> bool | None:
        """Whether our pod carries the label, as last written (None: not known yet)."""
        return self._labelled

    async def start(self) -> None:
        await self._write(leader=False, reason="starting")
        self._task = asyncio.create_task(self._follow(), name="leader labeler")

    async def stop(self) -> None:
        # The loop ends between two decisions: a label write cancelled mid-flight
        # could still land after the final unlabelling below (it runs in a thread).
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=STOP_TIMEOUT)
            self._task = None
        await self._write(leader=False, reason="shutting down")

    async def evaluate(self) -> float:
        """Decide once, relabel if the answer changed; the seconds until the next decision."""
        peering = self._settings.peering_name
        now = self._clock()
        if peering is None:
            decision = Leadership(leader=True, reason="standalone: this replica acts alone")
        else:
            try:
                obj = await self._api.run(self._api.cluster_peering, peering)
            except KubeError as exc:
                # The label stays as it is: the API server may be what is unreachable.
                logger.warning("leader label: %s; trying again", exc)
                return self._poll_interval
            if obj is None:
                decision = Leadership(
                    leader=False, reason=f"ClusterKopfPeering {peering} does not exist"
                )
            else:
                decision = decide(
                    obj.get("status"),
                    identity=self._settings.identity,
                    priority=self._settings.priority,
                    now=now,
                )
        if decision.leader != self._labelled:
            await self._write(leader=decision.leader, reason=decision.reason)
        elif not self._decided:
            logger.info(
                "%s (%s)", "leader" if decision.leader else "not the leader", decision.reason
            )
        self._decided = True
        wait = self._poll_interval
        if decision.recheck_at is not None:
            until = (decision.recheck_at - now).total_seconds() + _WAKE_MARGIN
            wait = min(wait, max(until, 0.0))
        return wait

    async def _follow(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = await self.evaluate()
            except Exception:
                logger.exception("leader label: the decision failed; trying again")
                wait = self._poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)

    async def _write(self, *, leader: bool, reason: str) -> None:
        pod = self._settings.pod
        value = names.LABEL_LEADER_VALUE if leader else None
        try:
            await self._api.run(
                self._api.patch_pod_labels, pod.namespace, pod.name, {names.LABEL_LEADER: value}
            )
        except KubeError as exc:
            self._labelled = None  # retried at the next decision
            logger.warning("leader label: %s", exc)
            return
        if leader != self._labelled:
            logger.info(
                "%s pod %s/%s (%s)",
                "leader: labelled" if leader else "not the leader: unlabelled",
                pod.namespace,
                pod.name,
                reason,
            )
        self._labelled = leader
