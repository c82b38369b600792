"""Leadership is kopf's peering rule, and only the acting replica's pod carries the leader label.

The rule is checked on kopf-shaped peering status (what ``kopf._core.engines.peering.touch``
writes: ``{identity: {priority, lifetime, lastseen}}``), and against kopf's own
``process_peering_event`` on generated statuses, so a kopf upgrade that changes
who acts fails here rather than leaving the distributor Service on the wrong pod.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kopf
import pytest
import urllib3
from hypothesis import given, settings
from hypothesis import strategies as st
from kopf._cogs.aiokits import aiotoggles
from kopf._core.engines import peering as kopf_peering

from logicbundle.api import names
from logicbundle.controller._kube import Kube, KubeError
from logicbundle.controller._leader import (
    FENCE_MARGIN,
    FENCE_READ_TIMEOUT,
    LAST_READ_LEAD,
    POLL_INTERVAL,
    READ_TIMEOUT,
    RENEW_AHEAD,
    LeaderLabeler,
    LeaderSettings,
    OwnPod,
    decide,
    peers,
)

T = TypeVar("T")

NOW = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
ME = "ops/operator-a"
PRIORITY = -1_700_000_000_000_000


def record(
    *, priority: int, lifetime: int = 60, seen: float = 0.0, now: datetime.datetime = NOW
) -> dict[str, Any]:
    """A record as kopf writes it, last seen ``seen`` seconds before ``now``."""
    lastseen = now - datetime.timedelta(seconds=seen)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


# --- the rule --------------------------------------------------------------------------


def test_a_replica_alone_in_the_peering_is_the_leader() -> None:
    assert decide({}, identity=ME, priority=PRIORITY, now=NOW).leader
    assert decide(None, identity=ME, priority=PRIORITY, now=NOW).leader


def test_its_own_record_never_blocks_a_replica() -> None:
    status = {ME: record(priority=PRIORITY + 10)}
    assert decide(status, identity=ME, priority=PRIORITY, now=NOW).leader


def test_a_live_peer_with_a_higher_priority_makes_it_stand_by_until_that_peer_lapses() -> None:
    status = {
        ME: record(priority=PRIORITY),
        "ops/operator-b": record(priority=PRIORITY + 1, seen=20),
    }
    decision = decide(status, identity=ME, priority=PRIORITY, now=NOW)
    assert not decision.leader
    assert "ops/operator-b" in decision.reason
    assert decision.recheck_at == NOW + datetime.timedelta(seconds=40)


def test_a_live_peer_with_a_lower_priority_does_not_block_it() -> None:
    status = {"ops/operator-b": record(priority=PRIORITY - 1)}
    decision = decide(status, identity=ME, priority=PRIORITY, now=NOW)
    assert decision.leader
    assert decision.recheck_at is None


def test_a_live_peer_with_the_same_priority_pauses_both_as_kopf_does() -> None:
    status = {"ops/operator-b": record(priority=PRIORITY)}
    decision = decide(status, identity=ME, priority=PRIORITY, now=NOW)
    assert not decision.leader
    assert "same priority" in decision.reason


def test_a_dead_peer_blocks_nothing_however_high_its_priority() -> None:
    status = {"ops/operator-b": record(priority=PRIORITY + 1, lifetime=60, seen=61)}
    assert decide(status, identity=ME, priority=PRIORITY, now=NOW).leader


def test_a_record_is_dead_at_the_very_instant_of_its_deadline() -> None:
    status = {"ops/operator-b": record(priority=PRIORITY + 1, lifetime=60, seen=60)}
    assert decide(status, identity=ME, priority=PRIORITY, now=NOW).leader


def test_a_record_that_left_cleanly_with_lifetime_zero_is_dead() -> None:
    status = {"ops/operator-b": record(priority=PRIORITY + 1, lifetime=0, seen=0)}
    assert decide(status, identity=ME, priority=PRIORITY, now=NOW).leader


def test_missing_fields_take_kopfs_defaults() -> None:
    # No lifetime: 60 s. No lastseen: now (alive). No priority: 0.
    status: dict[str, Any] = {
        "b": {"priority": 5, "lastseen": (NOW - datetime.timedelta(seconds=59)).isoformat()},
        "c": {"priority": 5, "lifetime": 1},
        "d": {},
    }
    found = {p.identity: p for p in peers(status, now=NOW)}
    assert found["b"].deadline == NOW + datetime.timedelta(seconds=1)
    assert found["c"].deadline == NOW + datetime.timedelta(seconds=1)
    assert (found["d"].priority, found["d"].deadline) == (0, NOW + datetime.timedelta(seconds=60))
    assert not decide(status, identity=ME, priority=4, now=NOW).leader
    assert not decide({"d": {}}, identity=ME, priority=0, now=NOW).leader
    assert decide({"d": {}}, identity=ME, priority=1, now=NOW).leader


def test_times_with_a_z_suffix_or_no_zone_are_read_as_utc() -> None:
    naive = (NOW - datetime.timedelta(seconds=30)).replace(tzinfo=None).isoformat()
    status = {
        "b": {"priority": 1, "lifetime": 60, "lastseen": naive},
        "c": {"priority": 1, "lifetime": 60, "lastseen": "2025-06-01T11:59:30Z"},
    }
    deadlines = {p.deadline for p in peers(status, now=NOW)}
    assert deadlines == {NOW + datetime.timedelta(seconds=30)}


def test_unreadable_records_are_skipped() -> None:
    status: dict[str, Any] = {
        "not-a-mapping": "yes",
        "bad-priority": {"priority": "high", "lifetime": 60},
        "bad-lifetime": {"priority": 9, "lifetime": None},
        "bad-time": {"priority": 9, "lifetime": 60, "lastseen": "yesterday"},
    }
    assert peers(status, now=NOW) == []
    assert decide(status, identity=ME, priority=0, now=NOW).leader


def test_the_recheck_is_at_the_earliest_blocking_deadline_and_ignores_lower_peers() -> None:
    status = {
        "higher-late": record(priority=PRIORITY + 2, seen=5),
        "same-soon": record(priority=PRIORITY, seen=50),
        "lower-sooner": record(priority=PRIORITY - 1, seen=59),
    }
    decision = decide(status, identity=ME, priority=PRIORITY, now=NOW)
    assert not decision.leader
    assert "higher-late" in decision.reason
    assert decision.recheck_at == NOW + datetime.timedelta(seconds=10)


def _kopf_pauses(status: Mapping[str, Any], *, identity: str, priority: int) -> bool:
    """Whether kopf's own peering code, given this status, pauses the operator."""

    async def scenario() -> bool:
        config = kopf.OperatorSettings()
        config.peering.name = "logicbundle"
        config.peering.priority = priority
        paused = aiotoggles.Toggle(True)  # mandatory peering starts paused
        pressure = asyncio.Event()
        pressure.set()  # return at once instead of sleeping until a peer lapses
        await kopf_peering.process_peering_event(
            raw_event={
                "type": "MODIFIED",
                "object": {"metadata": {"name": "logicbundle"}, "status": dict(status)},
            },
            namespace=None,
            resource=None,  # type: ignore[arg-type]  # used only for clean-up and touches
            identity=kopf_peering.Identity(identity),
            settings=config,
            autoclean=False,
            stream_pressure=pressure,
            conflicts_found=paused,
        )
        return paused.is_on()

    return asyncio.run(scenario())


# Ages and lifetimes differ by whole seconds of at least 5, so the real clock that
# kopf reads cannot move a record across its deadline during one example.
_records = st.builds(
    lambda priority, lifetime, age: {"priority": priority, "lifetime": lifetime, "seen": age},
    priority=st.integers(-2, 2),
    lifetime=st.sampled_from([0, 30, 60]),
    age=st.sampled_from([5, 40, 90]),
)


@settings(max_examples=60, deadline=None)
@given(
    others=st.dictionaries(st.sampled_from(["b", "c", "d"]), _records, max_size=3),
    own=st.one_of(st.none(), _records),
    priority=st.integers(-2, 2),
)
def test_the_rule_agrees_with_kopfs_own_peering_code(
    others: dict[str, dict[str, int]], own: dict[str, int] | None, priority: int
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    entries = {**others, **({ME: own} if own is not None else {})}
    status = {
        name: record(priority=r["priority"], lifetime=r["lifetime"], seen=r["seen"], now=now)
        for name, r in entries.items()
    }
    ours = decide(status, identity=ME, priority=priority, now=now)
    assert ours.leader is not _kopf_pauses(status, identity=ME, priority=priority)


# --- the labeler --------------------------------------------------------------------------

POD = OwnPod(namespace="ops", name="operator-a")


class FakeApi:
    """The peering object as the test sets it, and every label patch, in order."""

    def __init__(self) -> None:
        self.peering: Mapping[str, Any] | None = {
            "metadata": {"name": "logicbundle"},
            "status": {POD.identity: record(priority=PRIORITY)},
        }
        self.patches: list[tuple[str, str, dict[str, str | None]]] = []
        self.read_error: KubeError | None = None
        self.patch_error: KubeError | None = None
        self.patched = asyncio.Event()
        self.gate: asyncio.Event | None = None
        """When set, a write of the label waits for it (a slow API server)."""
        self.read_gate: asyncio.Event | None = None
        """When set, a read of the peering waits for it (a silent API server)."""
        self.renewals: list[tuple[str, dict[str, Any]]] = []
        self.renew_error: KubeError | None = None
        self.blocked = asyncio.Event()

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        if self.read_gate is not None and fn == self.cluster_peering:
            await self.read_gate.wait()
        if self.gate is not None and fn == self.patch_pod_labels:
            self.blocked.set()
            await self.gate.wait()
        return fn(*args, **kwargs)

    def cluster_peering(
        self, name: str, *, timeout: float | None = None
    ) -> Mapping[str, Any] | None:
        assert timeout is not None  # a read through a partition must end
        if self.read_error is not None:
            raise self.read_error
        assert name == "logicbundle"
        return self.peering

    def patch_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        if self.patch_error is not None:
            raise self.patch_error
        self.patches.append((namespace, name, dict(labels)))
        self.patched.set()

    def renew_peering(
        self, name: str, identity: str, record: Mapping[str, Any], *, timeout: float | None = None
    ) -> None:
        assert timeout is not None
        if self.renew_error is not None:
            raise self.renew_error
        assert name == "logicbundle"
        self.renewals.append((identity, dict(record)))
        assert self.peering is not None
        self.set_status({**(self.peering.get("status") or {}), identity: dict(record)})

    def set_status(self, status: Mapping[str, Any]) -> None:
        self.peering = {"metadata": {"name": "logicbundle"}, "status": dict(status)}

    @property
    def values(self) -> list[str | None]:
        assert all((ns, name) == (POD.namespace, POD.name) for ns, name, _ in self.patches)
        return [labels[names.LABEL_LEADER] for _, _, labels in self.patches]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def _labeler(
    api: FakeApi,
    clock: Clock,
    *,
    peering: str | None = "logicbundle",
    poll: float = 2.0,
    lost: list[tuple[datetime.datetime, str]] | None = None,
) -> LeaderLabeler:
    leader = LeaderSettings(pod=POD, peering_name=peering, priority=PRIORITY)

    def on_lease_lost(reason: str) -> None:
        assert lost is not None, f"stood down unexpectedly: {reason}"
        lost.append((clock(), reason))

    return LeaderLabeler(
        api=api, settings=leader, poll_interval=poll, clock=clock, on_lease_lost=on_lease_lost
    )


def test_the_leader_labels_its_own_pod_once_and_unlabels_it_when_a_higher_peer_appears() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock)

    async def scenario() -> None:
        api.set_status({POD.identity: record(priority=PRIORITY)})
        await labeler.evaluate()
        await labeler.evaluate()
        assert api.values == ["true"]
        api.set_status(
            {POD.identity: record(priority=PRIORITY), "ops/b": record(priority=PRIORITY + 1)}
        )
        await labeler.evaluate()
        assert api.values == ["true", None]
        assert labeler.labelled is False

    asyncio.run(scenario())


def test_a_standby_takes_the_label_when_the_leaders_record_lapses() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock, poll=30.0)

    async def scenario() -> None:
        api.set_status(
            {
                POD.identity: record(priority=PRIORITY),
                "ops/b": record(priority=PRIORITY + 1, lifetime=60, seen=50),
            }
        )
        wait = await labeler.evaluate()
        # It wakes when the blocking record lapses, sooner than its next poll.
        assert wait == pytest.approx(10.05)
        assert api.values == [None]
        clock.advance(wait)
        await labeler.evaluate()
        assert api.values == [None, "true"]

    asyncio.run(scenario())


def test_no_peering_object_means_no_label() -> None:
    api, clock = FakeApi(), Clock()
    api.peering = None
    labeler = _labeler(api, clock)

    async def scenario() -> None:
        await labeler.evaluate()
        assert api.values == [None]
        assert labeler.labelled is False

    asyncio.run(scenario())


def test_a_standalone_replica_always_labels_its_pod() -> None:
    api, clock = FakeApi(), Clock()
    api.read_error = KubeError("the peering must not be read when standalone")
    labeler = _labeler(api, clock, peering=None)

    async def scenario() -> None:
        await labeler.evaluate()
        assert api.values == ["true"]

    asyncio.run(scenario())


def test_an_unreadable_peering_keeps_the_label_as_it_is() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock)

    async def scenario() -> None:
        await labeler.evaluate()
        api.read_error = KubeError("HTTP 503 Service Unavailable")
        assert await labeler.evaluate() == 2.0
        assert api.values == ["true"]
        assert labeler.labelled is True

    asyncio.run(scenario())


def test_a_failed_label_write_is_retried_at_the_next_decision() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock)

    async def scenario() -> None:
        api.patch_error = KubeError("HTTP 500 Internal Server Error")
        await labeler.evaluate()
        assert labeler.labelled is None
        api.patch_error = None
        await labeler.evaluate()
        assert api.values == ["true"]

    asyncio.run(scenario())


def test_start_clears_a_stale_label_then_follows_and_stop_unlabels_the_pod() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock, poll=0.01)

    async def scenario() -> None:
        before = asyncio.all_tasks()
        await labeler.start()
        assert api.values == [None]  # a previous run in this pod may have left "true"
        api.patched.clear()
        await asyncio.wait_for(api.patched.wait(), timeout=10)
        assert api.values == [None, "true"]
        await labeler.stop()
        assert api.values == [None, "true", None]
        assert asyncio.all_tasks() == before

    asyncio.run(scenario())


def test_the_follow_loop_survives_an_unexpected_error() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock, poll=0.01)
    api.peering = {"metadata": {"name": "logicbundle"}, "status": ["not", "a", "mapping"]}

    async def scenario() -> None:
        await labeler.start()
        api.patched.clear()
        api.set_status({POD.identity: record(priority=PRIORITY)})
        await asyncio.wait_for(api.patched.wait(), timeout=10)
        assert api.values == [None, "true"]
        await labeler.stop()

    asyncio.run(scenario())


def test_stop_lets_a_label_write_in_flight_land_before_the_final_unlabelling() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock, poll=0.01)

    async def scenario() -> None:
        await labeler.start()
        gate = api.gate = asyncio.Event()
        api.blocked.clear()
        await asyncio.wait_for(api.blocked.wait(), timeout=10)  # "true" is on its way
        stopping = asyncio.create_task(labeler.stop())
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait_for(stopping, timeout=10)
        assert api.values == [None, "true", None]

    asyncio.run(scenario())


# --- the fence ----------------------------------------------------------------------------


def _lost() -> list[tuple[datetime.datetime, str]]:
    return []


FENCE = NOW + datetime.timedelta(seconds=60 - FENCE_MARGIN)
"""When a leader whose record was last renewed at NOW stands down unless it sees a renewal."""


def _leading(api: FakeApi, clock: Clock, lost: list[tuple[datetime.datetime, str]]) -> Any:
    """A labeler that has just decided to lead on a record renewed at NOW."""
    labeler = _labeler(api, clock, poll=100.0, lost=lost)
    api.set_status({POD.identity: record(priority=PRIORITY)})
    return labeler


def test_a_leader_cut_off_from_the_api_server_stands_down_before_its_record_lapses() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        assert await labeler.evaluate() == pytest.approx(60 - FENCE_MARGIN - LAST_READ_LEAD)
        assert labeler.leading
        api.read_error = KubeError("cannot read ClusterKopfPeering logicbundle: ReadTimeoutError")
        clock.now = FENCE - datetime.timedelta(seconds=LAST_READ_LEAD)
        # One more read a second before the fence; failed, it wakes at the fence itself.
        assert await labeler.evaluate() == pytest.approx(LAST_READ_LEAD)
        assert lost == []
        clock.now = FENCE
        await labeler.evaluate()
        ((when, reason),) = lost
        assert when == FENCE < NOW + datetime.timedelta(seconds=60)
        assert "ReadTimeoutError" in reason
        assert "lapses at 2025-06-01T12:01:00+00:00" in reason
        assert not labeler.leading
        assert labeler.lease_lost
        # Once stood down it decides nothing more, whatever it reads.
        api.read_error = None
        await labeler.evaluate()
        assert len(lost) == 1
        assert api.values == ["true"]

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_its_record_stands_down_though_reads_succeed() -> None:
    # Reads pass, writes do not (kopf's keepalive and the labeler's renewals alike).
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        api.renew_error = KubeError("cannot renew in ClusterKopfPeering logicbundle: HTTP 403")
        clock.now = FENCE - datetime.timedelta(seconds=0.001)
        await labeler.evaluate()
        assert lost == []
        clock.now = FENCE
        await labeler.evaluate()
        ((when, reason),) = lost
        assert when == FENCE
        assert "not renewed" in reason

    asyncio.run(scenario())


def test_the_leader_renews_its_own_record_from_renew_ahead_before_it_lapses() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        clock.now = NOW + datetime.timedelta(seconds=60 - RENEW_AHEAD - 0.001)
        await labeler.evaluate()
        assert api.renewals == []  # kopf's own keepalive may well come first
        clock.now = NOW + datetime.timedelta(seconds=60 - RENEW_AHEAD + 1)
        wait = await labeler.evaluate()
        ((identity, renewed),) = api.renewals
        # Exactly what kopf's keepalive writes, so kopf reads it as it reads its own.
        assert identity == POD.identity
        assert renewed == {"priority": PRIORITY, "lifetime": 60, "lastseen": clock.now.isoformat()}
        peer = kopf_peering.Peer(identity=kopf_peering.Identity(identity), **renewed)
        assert peer.deadline == clock.now + datetime.timedelta(seconds=60)
        # The next wake is a fence away from the renewed deadline, not the old one.
        assert wait == pytest.approx(60 - FENCE_MARGIN - LAST_READ_LEAD)
        clock.now = FENCE + datetime.timedelta(seconds=10)
        await labeler.evaluate()
        assert lost == []
        assert labeler.leading
        # A standby never writes the record: kopf keeps it.
        api.set_status(
            {POD.identity: record(priority=PRIORITY), "ops/b": record(priority=PRIORITY + 1)}
        )
        clock.now = NOW + datetime.timedelta(seconds=50)
        await labeler.evaluate()
        assert len(api.renewals) == 1

    asyncio.run(scenario())


def test_a_renewal_seen_before_the_fence_keeps_the_leader_acting() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        # kopf renews 5 to 10 s ahead of the deadline: at the latest 55 s after NOW.
        clock.now = NOW + datetime.timedelta(seconds=57)
        api.set_status({POD.identity: record(priority=PRIORITY, now=NOW, seen=-55)})
        assert await labeler.evaluate() == pytest.approx(115 - FENCE_MARGIN - LAST_READ_LEAD - 57)
        clock.now = FENCE + datetime.timedelta(seconds=1)
        await labeler.evaluate()
        assert lost == []
        assert labeler.leading
        assert api.values == ["true"]

    asyncio.run(scenario())


def test_a_read_that_hangs_at_the_fence_does_not_hold_the_leader_past_it() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        api.read_gate = asyncio.Event()  # the API server answers nothing
        clock.now = FENCE
        await asyncio.wait_for(labeler.evaluate(), timeout=FENCE_READ_TIMEOUT + 5)
        ((when, reason),) = lost
        assert when == FENCE
        assert "TimeoutError" in reason

    asyncio.run(scenario())


def test_a_replica_that_leads_on_a_lower_priority_peer_is_not_fenced_by_it() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        # A higher peer appears: an ordinary hand-over (kopf pauses us), not a lost lease.
        api.set_status(
            {POD.identity: record(priority=PRIORITY), "ops/b": record(priority=PRIORITY + 1)}
        )
        await labeler.evaluate()
        assert lost == []
        assert not labeler.leading
        assert api.values == ["true", None]

    asyncio.run(scenario())


def test_a_standby_cut_off_never_stands_down() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _labeler(api, clock, poll=2.0, lost=lost)
        api.set_status(
            {POD.identity: record(priority=PRIORITY), "ops/b": record(priority=PRIORITY + 1)}
        )
        await labeler.evaluate()
        api.read_error = KubeError("HTTP 503 Service Unavailable")
        clock.advance(600)
        assert await labeler.evaluate() == 2.0
        assert lost == []
        assert api.values == [None]

    asyncio.run(scenario())


def test_no_record_of_its_own_means_it_does_not_act() -> None:
    api, clock = FakeApi(), Clock()
    labeler = _labeler(api, clock)

    async def scenario() -> None:
        api.set_status({})
        await labeler.evaluate()
        assert api.values == [None]
        api.set_status({POD.identity: record(priority=PRIORITY, seen=60 - FENCE_MARGIN)})
        await labeler.evaluate()
        assert api.values == [None]  # about to lapse: not a lease to act on
        assert not labeler.leading

    asyncio.run(scenario())


def test_a_leader_whose_peering_object_is_deleted_stands_down() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()

    async def scenario() -> None:
        labeler = _leading(api, clock, lost)
        await labeler.evaluate()
        api.peering = None
        await labeler.evaluate()
        ((_, reason),) = lost
        assert "does not exist" in reason

    asyncio.run(scenario())


def test_the_follow_loop_ends_once_the_replica_stood_down() -> None:
    api, clock, lost = FakeApi(), Clock(), _lost()
    labeler = _labeler(api, clock, poll=0.01, lost=lost)

    async def scenario() -> None:
        await labeler.start()
        api.patched.clear()
        await asyncio.wait_for(api.patched.wait(), timeout=10)
        api.read_error = KubeError("HTTP 503 Service Unavailable")
        clock.now = FENCE
        task = labeler._task
        assert task is not None
        await asyncio.wait_for(task, timeout=10)
        assert len(lost) == 1
        await labeler.stop()

    asyncio.run(scenario())


def test_the_fence_precedes_kopfs_takeover_and_leaves_room_for_kopfs_renewals() -> None:
    """The timing argument of the module, against kopf's own code.

    kopf renews ``lifetime - randint(5, 10)`` s after a renewal began; the leader
    stands down by ``deadline - FENCE_MARGIN + FENCE_READ_TIMEOUT`` at the latest;
    kopf's standby resumes when the record ``is_dead``: at the deadline at the earliest.
    """
    source = inspect.getsource(kopf_peering.keepalive)
    assert "lifetime - random.randint(5, 10)" in source
    kopf_lead = 5.0  # the least time by which kopf's renewal precedes the deadline
    latest_stand_down = FENCE_MARGIN - FENCE_READ_TIMEOUT  # seconds before the deadline
    assert latest_stand_down >= 4.5
    # kopf alone would leave a healthy leader too little room before the fence: the
    # labeler renews from RENEW_AHEAD, with several polls' room for slow requests.
    assert kopf_lead <= FENCE_MARGIN
    assert RENEW_AHEAD - FENCE_MARGIN >= 5 * POLL_INTERVAL
    assert LAST_READ_LEAD + FENCE_READ_TIMEOUT <= FENCE_MARGIN
    # At the latest instant the leader may still be acting, kopf sees its record alive.
    now = datetime.datetime.now(datetime.UTC)
    lastseen = now - datetime.timedelta(seconds=60 - latest_stand_down)
    peer = kopf_peering.Peer(
        identity=kopf_peering.Identity(ME), priority=PRIORITY, lastseen=lastseen.isoformat()
    )
    assert not peer.is_dead


def test_an_unreachable_api_server_is_a_kube_error_and_the_read_is_bounded() -> None:
    calls: list[dict[str, Any]] = []

    class Custom:
        def list_cluster_custom_object(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(kwargs)
            raise urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out.")  # type: ignore[arg-type]

        def patch_cluster_custom_object(self, *args: Any, **kwargs: Any) -> Any:
            calls.append({"body": args[-1], **kwargs})
            raise urllib3.exceptions.MaxRetryError(None, "/apis")  # type: ignore[arg-type]

    kube = Kube.__new__(Kube)
    kube.custom = Custom()  # type: ignore[assignment]
    with pytest.raises(KubeError, match="ReadTimeoutError"):
        kube.cluster_peering("logicbundle", timeout=READ_TIMEOUT)
    assert calls[0]["_request_timeout"] == READ_TIMEOUT
    with pytest.raises(KubeError, match="MaxRetryError"):
        kube.renew_peering("logicbundle", ME, {"priority": 1}, timeout=READ_TIMEOUT)
    assert calls[1] == {"body": {"status": {ME: {"priority": 1}}}, "_request_timeout": READ_TIMEOUT}
