"""What a stage does without data, after a failure, and when a new revision lands.

Issue 11, "analysis semantics": ``onNoData`` (hold, or fail after
``noDataDeadline``), ``onFailure`` (rollback, or freeze where it is), a new
digest mid-rollout superseding the old one, and verdicts that carry their
figures, thresholds and sample counts in numbers a person can read.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from logicbundle.api import LogicBundleStatus, RequestedAction, conditions, find_condition
from logicbundle.api.v1alpha1 import Analysis, Metric
from logicbundle.rollout import (
    EVENT_ACTION_IGNORED,
    EVENT_DIGEST_VERIFIED,
    EVENT_FROZEN,
    EVENT_RETRIED,
    EVENT_ROLLOUT_STARTED,
    EVENT_STAGE_ADVANCED,
    EVENT_SUPERSEDED,
    AnalysisVerdict,
    Decision,
    MetricValue,
    MetricValues,
    PodReport,
    analysis_due,
    frozen,
    judge,
)
from tests.rollout._fixtures import (
    D1,
    D2,
    D3,
    FAIL,
    INTERNAL,
    NODATA,
    PASS,
    T0,
    converge,
    digests_of,
    flip_back,
    installed,
    make_spec,
    ok,
    pod,
    pods,
    published,
    reasons,
    reconciling,
    run,
    stalled,
)

S = timedelta(seconds=1)
M = timedelta(minutes=1)
TRUE, FALSE = conditions.TRUE, conditions.FALSE
THREE_STAGES = [INTERNAL, {"name": "half", "percent": 50}, {"name": "all", "all": True}]


QUIET = judge(
    analysis=Analysis(),
    values={"error-rate": MetricValues(candidate=MetricValue(value=0.0, samples=3))},
)
"""A real verdict without data: error-rate has 3 samples of 20, latency-p95 none."""


def act(name: str, token: str) -> RequestedAction:
    return RequestedAction(action=name, token=token)  # type: ignore[arg-type]


def message(status: LogicBundleStatus, type_: str) -> str:
    found = find_condition(status.conditions, type_)
    assert found is not None
    return found.message


def in_stage(**spec_kw: Any) -> tuple[Any, Decision, list[PodReport]]:
    """Stable D1, candidate D2 at stage internal with both internal pods running it."""
    spec = make_spec(stages=spec_kw.pop("stages", THREE_STAGES), **spec_kw)
    status, reports = installed(spec, pods(10, internal=(0, 1)))
    started = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    reports = converge(started, reports)
    active = run(spec=spec, status=started.status, reports=reports, now=T0 + 20 * S)
    assert active.status.stage_active_at == T0 + 20 * S
    return spec, active, reports


def measure(
    spec: Any,
    decision: Decision,
    reports: list[PodReport],
    verdicts: list[tuple[timedelta, AnalysisVerdict]],
) -> Decision:
    for at, verdict in verdicts:
        decision = run(
            spec=spec, status=decision.status, reports=reports, now=T0 + at, verdict=verdict
        )
    return decision


# --- onNoData ------------------------------------------------------------------------


def test_on_no_data_hold_waits_however_long_the_data_lacks_and_says_why() -> None:
    spec, decision, reports = in_stage()
    waited = measure(spec, decision, reports, [(k * M, QUIET) for k in range(1, 120)])
    assert waited.status.stage == "internal" and waited.status.candidate_digest == D2
    assert reconciling(waited.status) == (TRUE, conditions.INSUFFICIENT_DATA)
    text = message(waited.status, conditions.RECONCILING)
    assert "error-rate: too few samples: 3 < 20; latency-p95: too few samples: 0 < 20" in text
    assert "onNoData: hold" in text
    assert waited.status.analysis is not None and waited.status.analysis.failures == 0


def test_on_no_data_fail_rolls_back_once_the_deadline_passes_without_data() -> None:
    spec, decision, reports = in_stage(analysis={"onNoData": "fail", "noDataDeadline": "5m"})
    early = measure(spec, decision, reports, [(1 * M, NODATA), (3 * M, NODATA)])
    assert early.status.stage == "internal"
    assert reconciling(early.status) == (TRUE, conditions.INSUFFICIENT_DATA)
    assert early.status.analysis is not None
    assert early.status.analysis.no_data_since == T0 + 1 * M
    assert early.status.analysis.failures == 0
    assert "count as failed after 5m without data" in message(early.status, conditions.RECONCILING)
    rolled = measure(spec, early, reports, [(6 * M, NODATA)])
    assert stalled(rolled.status) == (TRUE, conditions.ROLLED_BACK)
    assert digests_of(rolled.assignments) == {D1: 10}
    assert "onNoData: fail, noDataDeadline 5m" in message(rolled.status, conditions.STALLED)


def test_a_measurement_with_data_restarts_the_no_data_deadline() -> None:
    spec, decision, reports = in_stage(
        analysis={"onNoData": "fail", "noDataDeadline": "5m", "failureLimit": 3}
    )
    first = measure(spec, decision, reports, [(1 * M, NODATA), (3 * M, NODATA)])
    # A failed measurement is data: it counts (1 of 3 tolerated) and ends the run of no data.
    failed = measure(spec, first, reports, [(4 * M, FAIL)])
    assert failed.status.analysis is not None and failed.status.analysis.no_data_since is None
    again = measure(spec, failed, reports, [(5 * M, NODATA), (9 * M, NODATA)])
    assert again.status.analysis is not None
    assert again.status.analysis.no_data_since == T0 + 5 * M
    assert again.status.analysis.failures == 1
    assert stalled(again.status) == (FALSE, conditions.PROGRESSING)


def test_on_no_data_wins_over_the_deprecated_no_data_field() -> None:
    spec, decision, reports = in_stage(analysis={"noData": "fail", "onNoData": "hold"})
    waited = measure(spec, decision, reports, [(k * M, NODATA) for k in range(1, 30)])
    assert stalled(waited.status) == (FALSE, conditions.PROGRESSING)


def test_the_deprecated_no_data_fail_still_fails_the_first_measurement_without_data() -> None:
    analysis = Analysis.model_validate({"noData": "fail"})
    assert (analysis.effective_on_no_data(), analysis.effective_no_data_deadline()) == (
        "fail",
        "0s",
    )
    defaults = Analysis()
    assert (defaults.effective_on_no_data(), defaults.effective_no_data_deadline()) == (
        "hold",
        "10m",
    )


@pytest.mark.parametrize("policy", ["hold", "fail"])
def test_no_data_never_promotes(policy: str) -> None:
    spec, decision, reports = in_stage(analysis={"onNoData": policy, "failureLimit": 1000})
    after = measure(spec, decision, reports, [(k * M, NODATA) for k in range(1, 40)])
    assert after.status.candidate_digest == D2 and after.status.stage == "internal"
    assert after.status.stable_digest == D1
    assert EVENT_STAGE_ADVANCED not in reasons(after)


# --- onFailure: freeze ---------------------------------------------------------------


def frozen_at_half() -> tuple[Any, Decision, list[PodReport]]:
    """D2 passed internal, runs on half the pods, and a failed analysis froze it there."""
    spec, decision, reports = in_stage(on_failure="freeze")
    advanced = measure(spec, decision, reports, [(1 * M, PASS)])
    assert advanced.status.stage == "half"
    reports = converge(advanced, reports)
    active = run(spec=spec, status=advanced.status, reports=reports, now=T0 + 2 * M)
    froze = run(spec=spec, status=active.status, reports=reports, now=T0 + 3 * M, verdict=FAIL)
    return spec, froze, reports


def test_freeze_keeps_every_pod_on_what_it_runs_and_stalls_with_a_reason() -> None:
    spec, froze, _ = frozen_at_half()
    assert froze.state is not None and froze.status.target_state is not None
    assert digests_of(froze.assignments) == {D2: 5, D1: 5}
    assert stalled(froze.status) == (TRUE, conditions.FROZEN)
    assert reconciling(froze.status) == (FALSE, conditions.FROZEN)
    assert froze.status.phase == "Frozen"
    assert (froze.status.candidate_digest, froze.status.stage) == (D2, "half")
    assert reasons(froze) == [EVENT_FROZEN]
    text = message(froze.status, conditions.STALLED)
    assert "error-rate: 0.2 > max 0.05" in text and "frozen at stage half" in text
    assert frozen(froze.status)
    assert not analysis_due(spec=spec, status=froze.status, now=T0 + 1_000 * M)
    assert froze.requeue_after is None


def test_a_frozen_rollout_stays_frozen_step_after_step_and_across_a_restart() -> None:
    spec, froze, reports = frozen_at_half()
    before = published(froze.status)
    status = froze.status
    for minute in range(4, 30):
        later = run(spec=spec, status=status, reports=reports, now=T0 + minute * M, verdict=PASS)
        assert later.state == froze.state
        assert reasons(later) == []
        status = later.status
    assert published(status) == before
    assert stalled(status) == (TRUE, conditions.FROZEN)
    # A pod admitted now gets what the frozen state gives it: stable (it was sealed out).
    newcomer = pod("late", admitted=int((T0 + 30 * M).timestamp() * 1000))
    joined = run(spec=spec, status=status, reports=[*reports, newcomer], now=T0 + 40 * M)
    assert joined.assignments[newcomer.pod].digest == D1
    assert joined.state == froze.state


def test_a_health_check_failure_freezes_too() -> None:
    spec, decision, reports = in_stage(on_failure="freeze")
    reports[0] = flip_back(reports[0], failed=D2, to=D1, at=T0 + 25 * S)
    froze = run(spec=spec, status=decision.status, reports=reports, now=T0 + 30 * S)
    assert stalled(froze.status) == (TRUE, conditions.FROZEN)
    assert froze.state == decision.state
    assert digests_of(froze.assignments) == {D2: 2, D1: 8}


def test_retry_resumes_the_frozen_stage_measured_afresh() -> None:
    spec, froze, reports = frozen_at_half()
    retried = run(
        spec=spec, status=froze.status, reports=reports, now=T0 + 10 * M, action=act("retry", "r")
    )
    assert retried.status.stage == "half"
    assert reasons(retried) == [EVENT_RETRIED]
    assert stalled(retried.status) == (FALSE, conditions.PROGRESSING)
    assert retried.status.analysis is not None and retried.status.analysis.measurements == 0
    # No pod of the frozen stage loses the candidate.
    assert digests_of(retried.assignments) == {D2: 5, D1: 5}
    assert analysis_due(spec=spec, status=retried.status, now=T0 + 10 * M)


def test_abort_rolls_a_frozen_rollout_back_and_promote_is_refused() -> None:
    spec, froze, reports = frozen_at_half()
    promoted = run(
        spec=spec, status=froze.status, reports=reports, now=T0 + 5 * M, action=act("promote", "p")
    )
    assert reasons(promoted) == [EVENT_ACTION_IGNORED]
    assert stalled(promoted.status) == (TRUE, conditions.FROZEN)
    aborted = run(
        spec=spec, status=promoted.status, reports=reports, now=T0 + 6 * M, action=act("abort", "a")
    )
    assert stalled(aborted.status) == (TRUE, conditions.ABORTED)
    assert digests_of(aborted.assignments) == {D1: 10}


def test_rollback_is_still_the_default_on_failure() -> None:
    spec, decision, reports = in_stage()
    rolled = measure(spec, decision, reports, [(1 * M, FAIL)])
    assert stalled(rolled.status) == (TRUE, conditions.ROLLED_BACK)
    assert digests_of(rolled.assignments) == {D1: 10}


# --- a new revision supersedes the rollout in flight ---------------------------------


def test_a_new_digest_mid_stage_supersedes_and_its_analysis_starts_over() -> None:
    spec, decision, reports = in_stage(analysis={"failureLimit": 2})
    advanced = measure(spec, decision, reports, [(1 * M, PASS)])
    reports = converge(advanced, reports)
    counted = measure(spec, advanced, reports, [(2 * M, FAIL)])
    assert counted.status.stage == "half"
    assert counted.status.analysis is not None and counted.status.analysis.failures == 1
    newer = run(spec=spec, status=counted.status, reports=reports, now=T0 + 3 * M, verified=ok(D3))
    assert reasons(newer) == [EVENT_DIGEST_VERIFIED, EVENT_SUPERSEDED, EVENT_ROLLOUT_STARTED]
    superseded = next(e for e in newer.events if e.reason == EVENT_SUPERSEDED)
    assert "superseded by" in superseded.message
    assert (newer.status.candidate_digest, newer.status.stage) == (D3, "internal")
    analysis = newer.status.analysis
    assert analysis is not None
    assert (analysis.stage, analysis.failures, analysis.measurements, analysis.verdict) == (
        "internal",
        0,
        0,
        None,
    )
    assert analysis.metrics == ()
    # The old candidate leaves every pod it was on.
    assert D2 not in {d for t in newer.assignments.values() for d in t.digests}
    assert digests_of(newer.assignments) == {D3: 2, D1: 8}
    # A verdict measured on the old candidate is not applied to the new one.
    late = run(spec=spec, status=counted.status, reports=reports, now=T0 + 3 * M,
               verified=ok(D3), verdict=FAIL)  # fmt: skip
    assert late.status.analysis is not None and late.status.analysis.failures == 0


def test_a_new_digest_supersedes_a_frozen_rollout() -> None:
    spec, froze, reports = frozen_at_half()
    newer = run(spec=spec, status=froze.status, reports=reports, now=T0 + 5 * M, verified=ok(D3))
    assert EVENT_SUPERSEDED in reasons(newer)
    assert (newer.status.candidate_digest, newer.status.stage) == (D3, "internal")
    assert stalled(newer.status) == (FALSE, conditions.PROGRESSING)
    assert D2 not in {d for t in newer.assignments.values() for d in t.digests}


# --- verdicts carry their figures -----------------------------------------------------


def test_a_verdict_carries_values_thresholds_ratio_and_samples_rounded_for_people() -> None:
    errors = Metric(name="error-rate", builtin="errorRate", maximum=0.05, max_ratio_to_stable=2.0)
    latency = Metric(name="latency-p95", builtin="latencyP95", maximum=0.2)
    analysis = Analysis(metrics=(errors, latency))
    verdict = judge(
        analysis=analysis,
        values={
            "error-rate": MetricValues(
                candidate=MetricValue(value=7 / 37, samples=37),
                stable=MetricValue(value=1 / 21, samples=21),
            ),
            "latency-p95": MetricValues(candidate=MetricValue(value=0.0123456, samples=37)),
        },
    )
    assert verdict.failed
    first, second = verdict.metrics
    assert (first.candidate, first.stable, first.ratio) == (0.1892, 0.04762, 3.973)
    assert (first.samples, first.stable_samples, first.min_samples) == (37, 21, 20)
    assert (first.maximum, first.minimum, first.max_ratio_to_stable) == (0.05, None, 2.0)
    assert first.message == "18.9% > max 5%; 18.9% is 3.97x stable 4.76% > maxRatioToStable 2x"
    assert "0.1891891" not in verdict.reason
    assert (second.verdict, second.candidate, second.maximum) == ("Passed", 0.01235, 0.2)
    body = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert {"max", "maxRatioToStable", "ratio", "minSamples", "stableSamples"} <= set(body)


def test_a_passing_verdict_names_its_figures() -> None:
    analysis = Analysis(
        metrics=(Metric(name="latency-p95", builtin="latencyP95", max_ratio_to_stable=2.0),)
    )
    verdict = judge(
        analysis=analysis,
        values={
            "latency-p95": MetricValues(
                candidate=MetricValue(value=0.0123, samples=400),
                stable=MetricValue(value=0.011, samples=900),
            )
        },
    )
    assert verdict.passed
    assert verdict.reason == (
        "1 metric(s) within thresholds: latency-p95 12.3 ms (n=400, 1.12x stable)"
    )


def test_a_skipped_ratio_is_said_with_its_policy() -> None:
    metric = Metric(name="error-rate", builtin="errorRate", max_ratio_to_stable=2.0)
    verdict = judge(
        analysis=Analysis(metrics=(metric,)),
        values={"error-rate": MetricValues(candidate=MetricValue(value=0.01, samples=100))},
    )
    assert verdict.passed
    assert "ratio to stable skipped: stable has no data (stableNoData: skip)" in verdict.reason
    assert verdict.metrics[0].ratio is None


# --- the verdict a stage ended on ----------------------------------------------------------


def test_a_verdict_that_ends_its_stage_is_kept_in_the_decision_for_that_stage() -> None:
    """The status's analysis is the next stage's already; ``judged`` keeps the verdict that
    let the stage end (the trace notes it on the stage span it ends)."""
    spec, decision, reports = in_stage()
    advanced = measure(spec, decision, reports, [(1 * M, PASS)])
    assert advanced.status.stage == "half"
    assert advanced.status.analysis is not None
    assert (advanced.status.analysis.stage, advanced.status.analysis.verdict) == ("half", None)
    judged = advanced.judged
    assert judged is not None
    assert (judged.stage, judged.verdict, judged.measurements) == ("internal", "Passed", 1)
    assert judged.last_measured_at == T0 + 1 * M
    # A step without a verdict judged nothing.
    later = run(spec=spec, status=advanced.status, reports=reports, now=T0 + 2 * M)
    assert later.judged is None
