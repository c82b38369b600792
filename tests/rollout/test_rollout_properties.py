"""Properties of the state machine over random histories (hypothesis).

A history is a random sequence of what can happen to a bundle: new digests
resolve (signed or not), agents apply their targets or flip back, pods join
(admitted later than every pod before them) or go away, measurements pass,
fail or lack data, people press buttons, time passes.  After every step the
invariants the rest of the system relies on must hold, over the published
state (``decision.state``) from which every pod's target follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle import contract
from logicbundle.api import LogicBundleSpec, LogicBundleStatus, RequestedAction, conditions
from logicbundle.api.conditions import find_condition
from logicbundle.rollout import (
    ADMISSION_LAG_MS,
    EVENT_RETRIED,
    EVENT_ROLLOUT_STARTED,
    Decision,
    PodIdentity,
    PodReport,
    PodTarget,
    current_stage,
    share,
)
from tests.rollout._fixtures import (
    D1,
    D2,
    D3,
    D4,
    FAIL,
    INTERNAL,
    NODATA,
    NS,
    PASS,
    T0,
    bad,
    converge,
    flip_back,
    make_spec,
    ms,
    ok,
    pod,
    pods,
    published,
    run,
)

SIGNED = (D1, D2, D3)
UNSIGNED = (D4, "sha256:" + "e" * 64)

# Weighted towards what moves a rollout on (agents converging, passing verdicts, pods
# coming and going), so that most steps happen with a candidate in flight.
ops = st.one_of(
    st.tuples(st.just("resolve"), st.sampled_from(SIGNED + UNSIGNED)),
    *[st.tuples(st.just("converge"), st.none())] * 4,
    st.tuples(st.just("flip"), st.integers(0, 40)),
    *[st.tuples(st.just("join"), st.integers(1, 5))] * 2,
    st.tuples(st.just("leave"), st.integers(0, 40)),
    st.tuples(st.just("verdict"), st.sampled_from(["pass", "pass", "pass", "fail", "nodata"])),
    *[st.tuples(st.just("verdict"), st.just("pass"))] * 2,
    st.tuples(st.just("action"), st.sampled_from(["promote", "abort", "retry", "rollback"])),
    st.tuples(st.just("wait"), st.integers(1, 90)),
    st.tuples(st.just("suspend"), st.sampled_from([False, False, False, True])),
)

SPECS: list[dict[str, Any]] = [
    {},
    {
        "stages": [
            INTERNAL,
            {"name": "canary", "percent": 5, "pause": "1m"},
            {"name": "all", "all": True},
        ]
    },
    {
        "stages": [
            {"name": "a", "percent": 30},
            {"name": "b", "requestPercent": 50},
            {"name": "c", "percent": 70, "manualGate": True},
        ]
    },
    {"stages": [{"name": "all", "all": True}], "skip_analysis": True},
    {"analysis": {"failureLimit": 1, "noData": "fail"}},
    {"stages": [INTERNAL, {"name": "half", "percent": 50}], "on_failure": "freeze"},
    {"analysis": {"onNoData": "fail", "noDataDeadline": "1m"}, "on_failure": "freeze"},
    {
        "stages": [
            INTERNAL,
            {"name": "few", "percent": 10},
            {"name": "more", "percent": 40},
            {"name": "all", "all": True},
        ],
        "skip_analysis": True,
    },
]


def facts_of(report: PodReport) -> contract.PodFacts:
    """The pod's facts as a distributor replica and the agent read them off the pod itself."""
    identity = report.pod
    key = identity.cohort_key or f"{identity.namespace}/{identity.name}"
    return contract.PodFacts(key=key, labels=dict(report.labels), admitted=report.admitted)


def as_pod_target(target: contract.Target | None) -> PodTarget | None:
    if target is None:
        return None
    return PodTarget(digest=target.digest, candidate=target.candidate, weight=target.weight)


def on_candidate(state: contract.RolloutState | None, reports: Sequence[PodReport]) -> set[str]:
    """The keys of the pods whose whole target is the candidate under ``state``."""
    if state is None or state.candidate is None:
        return set()
    found = set()
    for report in reports:
        target = contract.target_of(state, facts_of(report))
        if report.has_agent and target is not None and target.digest == state.candidate:
            found.add(facts_of(report).key)
    return found


@dataclass
class Moves:
    """Which pods went candidate -> stable within the rollout in flight; none may come back.

    A rollout here is a run of published pod-level stages (internal, percent,
    all) of one candidate.  It ends when the state has no stage (a rollback,
    an abort, a promotion, a revoked stable digest), when another candidate
    starts, when a retry starts it over from its first stage, and at a
    ``requestPercent`` stage: that one gives every pod both digests, so it says
    nothing about which pods carry the candidate, and the percent stage after
    it draws afresh.
    """

    candidate: str | None = None
    on: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)

    def observe(
        self,
        state: contract.RolloutState | None,
        reports: Sequence[PodReport],
        *,
        restart: bool = False,
    ) -> None:
        stage = None if state is None else state.stage
        if state is None or stage is None or isinstance(stage, contract.Split):
            self.candidate, self.on, self.left = None, set(), set()
            return
        if restart or state.candidate != self.candidate:
            self.candidate, self.on, self.left = state.candidate, set(), set()
        now_on = on_candidate(state, reports)
        back = now_on & self.left
        assert not back, f"candidate -> stable -> candidate: {sorted(back)}"
        present = {facts_of(r).key for r in reports}
        self.left |= (self.on - now_on) & present
        self.on |= now_on


def check_invariants(
    spec: LogicBundleSpec,
    decision: Decision,
    reports: Sequence[PodReport],
    before: contract.RolloutState | None,
) -> None:
    """``before``: the state published before this step."""
    status, assignments, state = decision.status, dict(decision.assignments), decision.state
    flags = {c.type: c.status for c in status.conditions}
    assert conditions.READY in flags
    assert not (
        flags.get(conditions.RECONCILING) == "True" and flags.get(conditions.STALLED) == "True"
    )
    assigned = {d for target in assignments.values() for d in target.digests}
    # No pod is ever assigned a digest that failed verification.
    assert not assigned & set(UNSIGNED)
    if state is None:
        assert spec.suspend and assignments == {}
        return
    if state.stable is None:
        # The stable digest itself no longer verifies: nobody is told anything.
        assert assignments == {}
    else:
        # Every pod's target is what a distributor replica and the agent compute from
        # the published form and the pod's own facts.
        served = published(status)
        assert served == state
        for report in reports:
            told = contract.target_of(served, facts_of(report)) if report.has_agent else None
            assert as_pod_target(told) == assignments.get(report.pod), report.pod
    if spec.suspend:
        return
    # Nothing is stranded on an abandoned digest: only stable and the live candidate.
    live = {status.stable_digest}
    if status.stage_index is not None:
        live.add(status.candidate_digest)
    assert assigned <= live
    stage = current_stage(spec=spec, status=status)
    stall = find_condition(status.conditions, conditions.STALLED)
    frozen = stall is not None and stall.status == "True" and stall.reason == conditions.FROZEN
    if stage is not None and stage.percent is not None:
        check_percent(stage.percent, state, reports, before, frozen=frozen)
    if (
        stall is not None
        and stall.status == "True"
        and stall.reason
        in (
            conditions.ROLLED_BACK,
            conditions.HEALTH_CHECK_FAILED,
            conditions.ABORTED,
        )
    ):
        assert state.stage is None
        assert {t.digest for t in assignments.values()} <= {status.stable_digest}
        assert all(t.candidate is None for t in assignments.values())


def check_percent(
    percent: int,
    state: contract.RolloutState,
    reports: Sequence[PodReport],
    before: contract.RolloutState | None,
    *,
    frozen: bool,
) -> None:
    assert isinstance(state.stage, contract.Percent)
    agents = [r for r in reports if r.has_agent]
    on = on_candidate(state, agents)
    had = set()
    if before is not None and before.candidate == state.candidate:
        had = on_candidate(before, agents)
    # No pod on the candidate is moved out by a step: only a rollback or an abort.
    assert had <= on
    # A stage grows only to its share, past it only by the pods already on the candidate.
    assert len(on) <= max(share(percent=percent, pods=len(agents)), len(had))
    if frozen:
        # Frozen: every pod keeps what it runs, so the stage is not redrawn when the
        # pods on the candidate go away, and no pod is newly moved onto it.
        assert on <= had or before is None or before.candidate != state.candidate
    elif percent > 0 and agents:
        assert on


def stored(status: LogicBundleStatus | None) -> LogicBundleStatus | None:
    """``status`` as a restarted operator reads it back from the API server."""
    if status is None:
        return None
    return LogicBundleStatus.model_validate(
        status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


@dataclass
class History:
    """The world a random history acts on, between two steps."""

    base: dict[str, Any]
    spec: LogicBundleSpec
    reports: list[PodReport]
    status: LogicBundleStatus
    now: datetime = T0
    token: int = 0
    joined: int = 0

    def happen(self, kind: str, arg: Any) -> dict[str, Any]:
        """Apply what happens before the next step; the step's extra inputs."""
        if kind == "resolve":
            return {"verified": ok(arg) if arg in SIGNED else bad(arg)}
        if kind == "verdict":
            return {"verdict": {"pass": PASS, "fail": FAIL, "nodata": NODATA}[arg]}
        if kind == "action":
            return {"action": self.action(arg)}
        if kind == "flip" and self.reports:
            victim = arg % len(self.reports)
            status = self.status
            if status.candidate_digest and status.stable_digest:
                self.reports[victim] = flip_back(
                    self.reports[victim],
                    failed=status.candidate_digest,
                    to=status.stable_digest,
                    at=self.now,
                )
        elif kind == "join":
            # Admitted a moment ago, after every pod before them; some are internal.
            for i in range(arg):
                self.joined += 1
                admitted = ms(self.now) - 500 + i
                internal = self.joined % 2 == 1
                self.reports.append(pod(f"n{self.joined}", internal=internal, admitted=admitted))
        elif kind == "leave" and self.reports:
            del self.reports[arg % len(self.reports)]
        elif kind == "wait":
            self.now += timedelta(seconds=arg)
        elif kind == "suspend":
            self.spec = make_spec(**self.base, suspend=arg)
        return {}

    def action(self, name: str) -> RequestedAction:
        self.token += 1
        argument = None
        if name == "rollback":
            history_digests = [h.digest for h in self.status.history]
            argument = history_digests[-1] if history_digests else D1
        return RequestedAction(action=name, token=f"t{self.token}", argument=argument)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    initial=st.integers(0, 12),
    history=st.lists(ops, max_size=40),
)
def test_random_histories_keep_every_invariant(
    spec_index: int, initial: int, history: list[tuple[str, Any]]
) -> None:
    base = SPECS[spec_index]
    spec = make_spec(**base)
    reports = [pod(f"p{i}", internal=i % 4 == 0) for i in range(initial)]
    # D1 installed and active, D2 just started: every history begins mid-rollout.
    installed = run(spec=spec, status=None, reports=reports, now=T0, verified=ok(D1))
    reports = converge(installed, reports)
    started = run(spec=spec, status=installed.status, reports=reports, now=T0, verified=ok(D2))
    world = History(base=base, spec=spec, reports=reports, status=started.status)
    state = started.state
    moves = Moves()
    for kind, arg in history:
        # Steps come faster than the admission lag: pods are seen before they are sealed.
        world.now += timedelta(seconds=1)
        kwargs = world.happen(kind, arg)
        spec, reports, status, now = world.spec, world.reports, world.status, world.now
        # A new pod gets its target from the state published before the controller saw it.
        moves.observe(state, reports)
        decision = run(spec=spec, status=status, reports=reports, now=now, **kwargs)
        restarted = {EVENT_RETRIED, EVENT_ROLLOUT_STARTED} & {e.reason for e in decision.events}
        moves.observe(decision.state, reports, restart=bool(restarted))
        check_invariants(spec, decision, reports, state)
        # A restarted operator, reading the stored status alone, decides the same.
        again = run(spec=spec, status=stored(status), reports=reports, now=now, **kwargs)
        assert again.state == decision.state
        assert again.assignments == decision.assignments and again.events == decision.events
        assert again.status.model_dump(mode="json") == decision.status.model_dump(mode="json")
        world.status, state = decision.status, decision.state
        if kind == "converge":
            world.reports = converge(decision, reports)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 40),
    internal=st.sets(st.integers(0, 39)),
    reason=st.sampled_from(["fail", "flip", "abort"]),
)
def test_a_rollback_always_reaches_stable_on_every_pod(
    n: int, internal: set[int], reason: str
) -> None:
    spec = make_spec(
        stages=[INTERNAL, {"name": "canary", "percent": 20}, {"name": "all", "all": True}],
        skip_analysis=reason != "fail",
    )
    reports = [pod(f"p{i}", internal=i in internal) for i in range(n)]
    first = run(spec=spec, status=None, reports=reports, now=T0, verified=ok(D1))
    reports = converge(first, reports)
    decision = run(
        spec=spec,
        status=first.status,
        reports=reports,
        now=T0 + timedelta(seconds=1),
        verified=ok(D2),
    )
    reports = converge(decision, reports)
    now = T0 + timedelta(seconds=2)
    kwargs: dict[str, Any] = {}
    if reason == "fail":
        kwargs["verdict"] = FAIL
    elif reason == "abort":
        kwargs["action"] = RequestedAction(action="abort", token="t")
    else:
        reports[0] = flip_back(reports[0], failed=D2, to=D1, at=now)
    status = decision.status
    if status.candidate_digest is None:  # nothing to roll back: it already finished
        return
    rolled = run(spec=spec, status=status, reports=reports, now=now, **kwargs)
    assert rolled.state is not None and rolled.state.stage is None
    assert rolled.state.stable == D1
    assert {t.digest for t in rolled.assignments.values()} == {D1}
    assert len(rolled.assignments) == n
    reports = converge(rolled, reports)
    settled = run(spec=spec, status=rolled.status, reports=reports, now=now + timedelta(seconds=1))
    assert settled.status.pods is not None and settled.status.pods.active == n
    assert all(r.active is not None and r.active.digest == D1 for r in reports)


STAGES: list[dict[str, Any]] = [
    {**INTERNAL, "pause": "1h"},
    {"name": "canary", "percent": 5, "pause": "1h"},
    {"name": "canary", "percent": 50, "pause": "1h"},
    {"name": "split", "requestPercent": 20, "pause": "1h"},
    {"name": "all", "all": True, "pause": "1h"},
]


@settings(max_examples=100, deadline=None)
@given(
    stage=st.sampled_from(STAGES),
    n=st.integers(1, 30),
    internal=st.booleans(),
    named=st.booleans(),
    delay_ms=st.integers(0, 20_000),
)
def test_a_pod_joining_mid_rollout_is_told_what_the_controller_counts(
    stage: dict[str, Any], n: int, internal: bool, named: bool, delay_ms: int
) -> None:
    """A distributor replica and the agent's slow path compute the pod's target from the
    published state and the pod's own facts, before the controller has seen the pod and
    after; the controller counts the same, and no pod leaves the candidate."""
    spec = make_spec(stages=[stage, {"name": "last", "all": True}], skip_analysis=True)
    reports = pods(n, internal=range(0, n, 4))
    first = run(spec=spec, status=None, reports=reports, now=T0, verified=ok(D1))
    reports = converge(first, reports)
    started = run(
        spec=spec,
        status=first.status,
        reports=reports,
        now=T0 + timedelta(seconds=1),
        verified=ok(D2),
    )
    reports = converge(started, reports)
    going = run(spec=spec, status=started.status, reports=reports, now=T0 + timedelta(seconds=2))
    assert going.status.stage == stage["name"]
    # A pod of a Deployment: its cohort key from the admission request's uid, named or not yet.
    labels = {"app": "shop", **({"logicbundle.io/cohort": "internal"} if internal else {})}
    name = "shop-7f9c-xyz" if named else ""
    newcomer = PodReport(
        pod=PodIdentity(namespace=NS, name=name, cohort_key="uid/xyz"),
        labels=labels,
        admitted=ms(T0 + timedelta(seconds=3)),
    )
    told = contract.target_of(published(going.status), facts_of(newcomer))
    later = run(
        spec=spec,
        status=going.status,
        reports=[*reports, newcomer],
        now=T0 + timedelta(seconds=3, milliseconds=delay_ms),
    )
    assert later.status.stage == stage["name"]
    assert later.state is not None
    counted = later.assignments[newcomer.pod]
    assert as_pod_target(contract.target_of(later.state, facts_of(newcomer))) == counted
    republished = published(later.status)
    assert as_pod_target(contract.target_of(republished, facts_of(newcomer))) == counted
    # What it was told before the controller saw it stands, unless it was told stable
    # and the stage took it since (only once older than the admission lag).
    assert told is not None
    if as_pod_target(told) != counted:
        assert (told.digest, counted.digest) == (D1, D2)
        assert delay_ms >= ADMISSION_LAG_MS
    assert on_candidate(going.state, reports) <= on_candidate(later.state, [*reports, newcomer])
