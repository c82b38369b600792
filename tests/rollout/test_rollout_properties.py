"""Properties of the state machine over random histories (hypothesis).

A history is a random sequence of what can happen to a bundle: new digests
resolve (signed or not), agents apply their targets or flip back, pods join,
measurements pass, fail or lack data, people press buttons, time passes.
After every step the invariants the rest of the system relies on must hold.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle.api import LogicBundleSpec, LogicBundleStatus, RequestedAction, conditions
from logicbundle.api.conditions import find_condition
from logicbundle.rollout import (
    PodIdentity,
    PodReport,
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
    ok,
    pod,
    run,
)

SIGNED = (D1, D2, D3)
UNSIGNED = (D4, "sha256:" + "e" * 64)

ops = st.one_of(
    st.tuples(st.just("resolve"), st.sampled_from(SIGNED + UNSIGNED)),
    st.tuples(st.just("converge"), st.none()),
    st.tuples(st.just("converge"), st.none()),
    st.tuples(st.just("converge"), st.none()),
    st.tuples(st.just("flip"), st.integers(0, 40)),
    st.tuples(st.just("join"), st.integers(1, 5)),
    st.tuples(st.just("verdict"), st.sampled_from(["pass", "pass", "pass", "fail", "nodata"])),
    st.tuples(st.just("verdict"), st.just("pass")),
    st.tuples(st.just("action"), st.sampled_from(["promote", "abort", "retry", "rollback"])),
    st.tuples(st.just("wait"), st.integers(1, 900)),
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
]


def check_invariants(
    spec: LogicBundleSpec,
    status: LogicBundleStatus,
    assignments: dict[PodIdentity, Any],
    reports: list[PodReport],
) -> None:
    flags = {c.type: c.status for c in status.conditions}
    assert conditions.READY in flags
    assert not (
        flags.get(conditions.RECONCILING) == "True" and flags.get(conditions.STALLED) == "True"
    )
    assigned = {d for target in assignments.values() for d in target.digests}
    # No pod is ever assigned a digest that failed verification.
    assert not assigned & set(UNSIGNED)
    if spec.suspend:
        return
    # Nothing is stranded on an abandoned digest: only stable and the live candidate.
    live = {status.stable_digest}
    if status.stage_index is not None:
        live.add(status.candidate_digest)
    assert assigned <= live
    stage = current_stage(spec=spec, status=status)
    if stage is not None and stage.percent is not None:
        on = sum(1 for t in assignments.values() if t.digest == status.candidate_digest)
        had = sum(
            1
            for r in reports
            if r.has_agent
            and r.assigned is not None
            and r.assigned.digest == status.candidate_digest
        )
        assert on <= max(share(percent=stage.percent, pods=len(reports)), had)
        # No pod on the candidate is moved out by a stage: only a rollback or an abort.
        for r in reports:
            if r.assigned is not None and r.assigned.digest == status.candidate_digest:
                assert assignments[r.pod].digest == status.candidate_digest, r.pod
    stall = find_condition(status.conditions, conditions.STALLED)
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
        assert {t.digest for t in assignments.values()} <= {status.stable_digest}
        assert all(t.candidate is None for t in assignments.values())


@settings(max_examples=200, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    initial=st.integers(0, 12),
    history=st.lists(ops, max_size=30),
)
def test_random_histories_keep_every_invariant(
    spec_index: int, initial: int, history: list[tuple[str, Any]]
) -> None:
    base = SPECS[spec_index]
    spec = make_spec(**base)
    reports = [pod(f"p{i}", internal=i % 4 == 0) for i in range(initial)]
    # Installed first: D1 is stable and active, so every history exercises rollouts.
    installed = run(spec=spec, status=None, reports=reports, now=T0, verified=ok(D1))
    reports = converge(installed, reports)
    status: LogicBundleStatus | None = installed.status
    now = T0
    token = 0
    for kind, arg in history:
        now += timedelta(seconds=5)
        kwargs: dict[str, Any] = {}
        if kind == "resolve":
            kwargs["verified"] = ok(arg) if arg in SIGNED else bad(arg)
        elif kind == "converge":
            pass
        elif kind == "flip" and reports:
            victim = reports[arg % len(reports)]
            if status is not None and status.candidate_digest and status.stable_digest:
                reports[arg % len(reports)] = flip_back(
                    victim, failed=status.candidate_digest, to=status.stable_digest, at=now
                )
        elif kind == "join":
            reports += [pod(f"n{len(reports)}-{i}") for i in range(arg)]
        elif kind == "verdict":
            kwargs["verdict"] = {"pass": PASS, "fail": FAIL, "nodata": NODATA}[arg]
        elif kind == "action":
            token += 1
            argument = None
            if arg == "rollback":
                history_digests = [h.digest for h in status.history] if status else []
                argument = history_digests[-1] if history_digests else D1
            kwargs["action"] = RequestedAction(action=arg, token=f"t{token}", argument=argument)
        elif kind == "wait":
            now += timedelta(seconds=arg)
        elif kind == "suspend":
            spec = make_spec(**base, suspend=arg)
        decision = run(spec=spec, status=status, reports=reports, now=now, **kwargs)
        check_invariants(spec, decision.status, dict(decision.assignments), reports)
        # Determinism: the same inputs give the same outputs.
        again = run(spec=spec, status=status, reports=reports, now=now, **kwargs)
        assert again.assignments == decision.assignments and again.events == decision.events
        status = decision.status
        reports = (
            converge(decision, reports)
            if kind == "converge"
            else [
                dataclasses.replace(r, assigned=decision.assignments.get(r.pod, r.assigned))
                for r in reports
            ]
        )


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
    assert {t.digest for t in rolled.assignments.values()} == {D1}
    reports = converge(rolled, reports)
    settled = run(spec=spec, status=rolled.status, reports=reports, now=now + timedelta(seconds=1))
    assert settled.status.pods is not None and settled.status.pods.active == n
    assert all(r.active is not None and r.active.digest == D1 for r in reports)


def test_a_pod_join_mid_rollout_lands_where_the_webhook_put_it() -> None:
    spec = make_spec(stages=[{"name": "canary", "percent": 50}, {"name": "all", "all": True}])
    reports = [pod(f"p{i}") for i in range(4)]
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
    from logicbundle.rollout import desired_target

    newcomer = PodReport(
        pod=PodIdentity(namespace=NS, name="", cohort_key="uid/xyz"), labels={"app": "shop"}
    )
    target = desired_target(
        bundle_name="rules", spec=spec, status=started.status, pod=newcomer, pods=reports
    )
    admitted = dataclasses.replace(newcomer, assigned=target)
    later = run(
        spec=spec,
        status=started.status,
        reports=[*reports, admitted],
        now=T0 + timedelta(seconds=2),
    )
    assert later.assignments[newcomer.pod] == target
    for r in reports:
        assert later.assignments[r.pod] == r.assigned
