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

**The fence.**  kopf's peering is advisory: a leader cut off from the API server
hears nothing, so kopf never pauses it; its distributor goes on serving the
targets it holds, and when the partition heals it acts again, beside the standby
that took over meanwhile.  So the labeler treats the replica's own record as a
lease: it acts only while that record is live, and once it has acted, a lease it
cannot see renewed makes it stand down (:func:`stand_down`: the process exits,
its distributor and handlers with it; the kubelet restarts the container, which
rejoins as the youngest replica and stands by).  The timing, with ``D`` the own
record's deadline (``lastseen + lifetime``; kopf's lifetime is 60 s):

* kopf renews the record ``lifetime - 5..10`` s after its previous renewal began,
  only 5 s ahead of ``D`` at worst; so the labeler of the acting replica renews
  it too (the same record kopf writes, ``lastseen`` now), from
  :data:`RENEW_AHEAD` before ``D``: a healthy leader's lease is renewed some
  15 s before it could be fenced, whatever kopf's jitter, with room for slow
  requests;
* the labeler reads the peering every :data:`POLL_INTERVAL` and, while it leads,
  :data:`LAST_READ_LEAD` before ``D - FENCE_MARGIN`` and at that instant, each
  read given at most :data:`FENCE_READ_TIMEOUT` once that close; still no
  renewal seen then, it stands down: by ``D - FENCE_MARGIN + FENCE_READ_TIMEOUT``
  = ``D - 4.5 s`` at the latest;
* the standby resumes only once it sees the record dead, at ``D`` at the earliest
  (kopf wakes at the deadline, touches its own record, and re-decides on the
  event), and labels its pod only then.

So self-demotion precedes takeover by at least 4.5 s, less the clock skew
between the two replicas' nodes (kopf compares one replica's ``lastseen`` with
another's clock, so its peering assumes synchronised clocks too).  A record
renewed late but before ``D`` only delays the takeover; a renewal the partition
delivers after the leader left (TCP retransmits what was sent into it) makes the
standby pause until the restarted replica rewrites that record with its own,
lower priority: a gap, never two leaders.  What the fence cannot recall is a
write already on the wire when the partition began: it may still land when the
partition heals (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
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

FENCE_MARGIN = 5.0
"""Seconds before its own record lapses at which a leader that has not seen it renewed stands down.

What the leader's self-demotion precedes the standby's takeover by (less
:data:`FENCE_READ_TIMEOUT`): the clock skew between replicas it tolerates.
"""

RENEW_AHEAD = 20.0
"""Seconds before its own record lapses from which the acting replica renews it itself."""

LAST_READ_LEAD = 1.0
"""Seconds before the fence at which a leader reads the peering once more."""

FENCE_READ_TIMEOUT = 0.5
"""The longest a leader waits for a read of the peering at (or past) the fence."""

READ_TIMEOUT = 5.0
"""The longest any read of the peering may take (a partition must not pile up threads)."""

EXIT_LEASE_LOST = 75
"""The exit status of a replica that stood down (EX_TEMPFAIL: the kubelet restarts it)."""

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
    lifetime: datetime.timedelta = DEFAULT_LIFETIME


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
        found.append(
            Peer(
                identity=str(identity),
                priority=priority,
                deadline=lastseen + lifetime,
                lifetime=lifetime,
            )
        )
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

    def cluster_peering(
        self, name: str, *, timeout: float | None = None
    ) -> Mapping[str, Any] | None: ...

    def patch_pod_labels(
        self, namespace: str, name: str, labels: Mapping[str, str | None]
    ) -> None: ...

    def renew_peering(
        self, name: str, identity: str, record: Mapping[str, Any], *, timeout: float | None = None
    ) -> None: ...


def stand_down(reason: str) -> None:
    """Leave at once: the process exits with :data:`EXIT_LEASE_LOST` (see the fence above).

    Nothing is cleaned up on the way: kopf's cleanup would wait on the API server
    this replica cannot reach, while the standby is about to take over.  Exiting
    closes the distributor's listener and every agent's connection, and stops
    every handler, before the lease lapses.
    """
    logger.error(
        "lease lost: standing down (%s); exiting with status %d, to rejoin as a standby",
        reason,
        EXIT_LEASE_LOST,
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_LEASE_LOST)


class LeaderLabeler:
    """Keep ``logicbundle.io/leader=true`` on this replica's pod exactly while it acts.

    :meth:`start` clears the label (a previous run in the same pod may have left
    it) and follows the peering object in a task; :meth:`stop` ends the task and
    clears the label, so a replica that shuts down leaves the Service at once.
    Only this replica's own pod is ever written.

    It also holds the fence (see the module): a replica acts only while its own
    peering record is live, and one that acted and cannot see that record renewed
    ``FENCE_MARGIN`` before it lapses calls ``on_lease_lost`` (:func:`stand_down`).
    """

    def __init__(
        self,
        *,
        api: LeaderApi,
        settings: LeaderSettings,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], datetime.datetime] = utcnow,
        on_lease_lost: Callable[[str], None] = stand_down,
    ) -> None:
        self._api = api
        self._settings = settings
        self._poll_interval = poll_interval
        self._clock = clock
        self._on_lease_lost = on_lease_lost
        self._labelled: bool | None = None
        """What the pod's label says, as far as we know (None: unknown, a write failed)."""
        self._leading = False
        """Whether the last decision was to act (whether or not the label write landed)."""
        self._lease: datetime.datetime | None = None
        """Our own record's deadline, as last read (None: no record of ours seen)."""
        self.lease_lost = False
        """Set once this replica stood down; it decides nothing more."""
        self._decided = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def labelled(self) -> bool | None:
        """Whether our pod carries the label, as last written (None: not known yet)."""
        return self._labelled

    @property
    def leading(self) -> bool:
        """Whether this replica acts, by its last decision."""
        return self._leading

    def _fence_at(self) -> datetime.datetime | None:
        if self._lease is None:
            return None
        return self._lease - datetime.timedelta(seconds=FENCE_MARGIN)

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
        if self.lease_lost:
            return self._poll_interval
        peering = self._settings.peering_name
        if peering is None:
            decision = Leadership(leader=True, reason="standalone: this replica acts alone")
            return await self._apply(decision, now=self._clock())
        try:
            obj = await asyncio.wait_for(
                self._api.run(self._api.cluster_peering, peering, timeout=READ_TIMEOUT),
                timeout=self._read_timeout(self._clock()),
            )
        except Exception as exc:  # fail closed: any failed read is no renewal seen
            # The label stays as it is: the API server may be what is unreachable.
            why = str(exc) if isinstance(exc, KubeError) else f"{type(exc).__name__} reading it"
            logger.warning("leader label: %s; trying again", why)
            now = self._clock()
            if self._leading and self._past_fence(now):
                self._lose_lease(f"the peering could not be read ({why})")
                return self._poll_interval
            return self._next_wait(now, recheck_at=None)
        now = self._clock()
        if obj is None:
            self._lease = None
            decision = Leadership(
                leader=False, reason=f"ClusterKopfPeering {peering} does not exist"
            )
        else:
            status = obj.get("status")
            own = [p for p in peers(status, now=now) if p.identity == self._settings.identity]
            self._lease = own[0].deadline if own else None
            decision = decide(
                status, identity=self._settings.identity, priority=self._settings.priority, now=now
            )
            if decision.leader and self._past_fence(now):
                decision = Leadership(
                    leader=False,
                    reason="its own peering record is not renewed"
                    if own
                    else "no peering record of its own yet",
                )
            elif decision.leader and own:
                await self._renew(own[0], now=now)
                now = self._clock()
        if self._leading and not decision.leader and self._past_fence(now):
            # kopf would go on acting on a record nobody renews: the fence decides.
            self._lose_lease(decision.reason)
            return self._poll_interval
        return await self._apply(decision, now=now)

    async def _renew(self, own: Peer, *, now: datetime.datetime) -> None:
        """Renew our own record as kopf does, once it has less than :data:`RENEW_AHEAD` left."""
        peering = self._settings.peering_name
        if peering is None or (own.deadline - now).total_seconds() >= RENEW_AHEAD:
            return
        record = {
            "priority": self._settings.priority,
            "lifetime": int(own.lifetime.total_seconds()),
            "lastseen": now.isoformat(),
        }
        try:
            await asyncio.wait_for(
                self._api.run(
                    self._api.renew_peering,
                    peering,
                    self._settings.identity,
                    record,
                    timeout=READ_TIMEOUT,
                ),
                timeout=self._read_timeout(now),
            )
        except Exception as exc:  # the fence decides, at its time
            why = str(exc) if isinstance(exc, KubeError) else f"{type(exc).__name__} writing it"
            logger.warning("leader lease: not renewed: %s", why)
            return
        self._lease = max(self._lease or now, now + own.lifetime)

    def _past_fence(self, now: datetime.datetime) -> bool:
        fence = self._fence_at()
        return fence is None or now >= fence

    def _read_timeout(self, now: datetime.datetime) -> float:
        fence = self._fence_at()
        if not self._leading or fence is None:
            return READ_TIMEOUT
        # A read must not carry the leader past the fence while it waits.
        return min(READ_TIMEOUT, max((fence - now).total_seconds(), FENCE_READ_TIMEOUT))

    def _next_wait(self, now: datetime.datetime, *, recheck_at: datetime.datetime | None) -> float:
        wait = self._poll_interval
        if recheck_at is not None:
            until = (recheck_at - now).total_seconds() + _WAKE_MARGIN
            wait = min(wait, max(until, 0.0))
        fence = self._fence_at()
        if self._leading and fence is not None:
            until_fence = (fence - now).total_seconds()
            if until_fence > LAST_READ_LEAD:
                wait = min(wait, until_fence - LAST_READ_LEAD)
            else:
                wait = min(wait, max(until_fence, 0.0))
        return wait

    def _lose_lease(self, reason: str) -> None:
        self.lease_lost = True
        self._leading = False
        deadline = self._lease.isoformat() if self._lease else "unknown"
        self._on_lease_lost(f"{reason}; own record lapses at {deadline}")

    async def _apply(self, decision: Leadership, *, now: datetime.datetime) -> float:
        self._leading = decision.leader
        if decision.leader != self._labelled:
            await self._write(leader=decision.leader, reason=decision.reason)
        elif not self._decided:
            logger.info(
                "%s (%s)", "leader" if decision.leader else "not the leader", decision.reason
            )
        self._decided = True
        return self._next_wait(now, recheck_at=decision.recheck_at)

    async def _follow(self) -> None:
        while not self._stopping.is_set() and not self.lease_lost:
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
