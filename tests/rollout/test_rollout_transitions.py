"""Every transition of the rollout state machine, one table row or test each."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from logicbundle.api import LogicBundleStatus, RequestedAction, conditions, find_condition
from logicbundle.api.v1alpha1 import HISTORY_LIMIT
from logicbundle.rollout import (
    EVENT_ABORTED,
    EVENT_ACTION_IGNORED,
    EVENT_ANALYSIS_FAILED,
    EVENT_DIGEST_VERIFIED,
    EVENT_HEALTH_CHECK_FAILED,
    EVENT_INSTALLED,
    EVENT_RESUMED,
    EVENT_RETRIED,
    EVENT_ROLLBACK_REQUESTED,
    EVENT_ROLLED_BACK,
    EVENT_ROLLOUT_STARTED,
    EVENT_ROLLOUT_SUCCEEDED,
    EVENT_STAGE_ADVANCED,
    EVENT_SUPERSEDED,
    EVENT_SUSPENDED,
    EVENT_VERIFICATION_FAILED,
    PodTarget,
    analysis_due,
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
    bad,
    converge,
    digests_of,
    flip_back,
    installed,
    make_spec,
    ok,
    pods,
    ready,
    reasons,
    reconciling,
    run,
    stalled,
)

S = timedelta(seconds=1)
TRUE, FALSE = conditions.TRUE, conditions.FALSE
TWO_STAGES = [INTERNAL, {"name": "all", "all": True}]


def act(name: str, token: str = "t1", argument: str | None = None) -> RequestedAction:  # noqa: S107
    return RequestedAction(action=name, token=token, argument=argument)  # type: ignore[arg-type]


def started(spec_stages=TWO_STAGES, *, n=10, internal=(0, 1), **spec_kw):  # type: ignore[no-untyped-def]
    """Stable D1 everywhere, and D2 just started (its state published, no agent acted yet)."""
    spec = make_spec(stages=spec_stages, **spec_kw)
    status, reports = installed(spec, pods(n, internal=internal))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    return spec, decision, reports


# --- install ----------------------------------------------------------------------


def test_nothing_is_assigned_before_any_digest_is_verified() -> None:
    decision = run(spec=make_spec(), status=None, reports=pods(3), now=T0)
    assert decision.assignments == {}
    assert ready(decision.status) == (FALSE, conditions.RESOLVING)
    assert reconciling(decision.status) == (TRUE, conditions.RESOLVING)


def test_the_first_verified_digest_goes_to_every_pod_directly() -> None:
    decision = run(spec=make_spec(), status=None, reports=pods(3), now=T0, verified=ok(D1))
    assert digests_of(decision.assignments) == {D1: 3}
    assert decision.status.stable_digest == D1
    assert decision.status.candidate_digest is None
    assert [h.digest for h in decision.status.history] == [D1]
    assert reasons(decision) == [EVENT_DIGEST_VERIFIED, EVENT_INSTALLED]
    assert ready(decision.status) == (FALSE, conditions.WAITING_FOR_PODS)
    assert reconciling(decision.status) == (TRUE, conditions.WAITING_FOR_PODS)


def test_ready_is_true_once_every_pod_runs_the_stable_digest() -> None:
    status, _ = installed(make_spec(), pods(3))
    assert ready(status) == (TRUE, conditions.SUCCEEDED)
    assert reconciling(status) == (FALSE, conditions.SUCCEEDED)
    assert stalled(status) == (FALSE, conditions.SUCCEEDED)
    assert status.phase == "Succeeded"
    assert status.pods is not None and (status.pods.total, status.pods.active) == (3, 3)
    assert status.summary is not None and status.summary.pods == "3/3"


def test_pods_without_the_agent_are_counted_and_never_assigned() -> None:
    reports = [*pods(2), dataclasses.replace(pods(3)[2], has_agent=False)]
    decision = run(spec=make_spec(), status=None, reports=reports, now=T0, verified=ok(D1))
    assert len(decision.assignments) == 2
    assert decision.status.pods is not None and decision.status.pods.without_agent == 1


# --- starting and advancing -------------------------------------------------------


def test_a_new_verified_digest_starts_the_rollout_at_the_first_stage() -> None:
    _, decision, _ = started()
    status = decision.status
    assert (status.candidate_digest, status.stage, status.stage_index) == (D2, "internal", 0)
    assert digests_of(decision.assignments) == {D2: 2, D1: 8}
    assert reasons(decision) == [EVENT_DIGEST_VERIFIED, EVENT_ROLLOUT_STARTED]
    assert reconciling(status) == (TRUE, conditions.WAITING_FOR_PODS)
    assert ready(status) == (FALSE, conditions.PROGRESSING)
    assert stalled(status) == (FALSE, conditions.PROGRESSING)


def test_a_stage_waits_until_every_assigned_pod_runs_the_candidate() -> None:
    spec, decision, reports = started()
    one_active = [
        dataclasses.replace(reports[0], active=PodTarget(digest=D2), healthy=True),
        *reports[1:],
    ]
    later = run(
        spec=spec, status=decision.status, reports=one_active, now=T0 + 20 * S, verdict=PASS
    )
    assert reconciling(later.status) == (TRUE, conditions.WAITING_FOR_PODS)
    message = find_condition(later.status.conditions, conditions.RECONCILING)
    assert message is not None and "1/2 pods run" in message.message


def test_a_pass_measured_before_the_pods_were_ready_does_not_count() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    now = T0 + 20 * S
    became_ready = run(spec=spec, status=decision.status, reports=reports, now=now, verdict=PASS)
    assert became_ready.status.stage == "internal"
    assert became_ready.status.stage_active_at == now
    assert reconciling(became_ready.status) == (TRUE, conditions.WAITING_FOR_ANALYSIS)
    passed = run(
        spec=spec, status=became_ready.status, reports=reports, now=now + 30 * S, verdict=PASS
    )
    assert passed.status.stage == "all"
    assert reasons(passed) == [EVENT_STAGE_ADVANCED]


def test_insufficient_data_waits_and_the_reason_says_so() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    first = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    waiting = run(spec=spec, status=first.status, reports=reports, now=T0 + 60 * S, verdict=NODATA)
    assert reconciling(waiting.status) == (TRUE, conditions.INSUFFICIENT_DATA)
    assert ready(waiting.status) == (FALSE, conditions.PROGRESSING)
    assert waiting.status.stage == "internal"
    assert waiting.status.analysis is not None and waiting.status.analysis.failures == 0
    assert digests_of(waiting.assignments) == {D2: 2, D1: 8}


def test_no_data_counts_as_a_failure_when_the_spec_says_fail() -> None:
    spec, decision, reports = started(analysis={"noData": "fail"})
    reports = converge(decision, reports)
    rolled = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=NODATA
    )
    assert stalled(rolled.status) == (TRUE, conditions.ROLLED_BACK)
    assert digests_of(rolled.assignments) == {D1: 10}


def test_a_pause_holds_the_stage_after_the_analysis_passes() -> None:
    stages = [{**INTERNAL, "pause": "5m"}, {"name": "all", "all": True}]
    spec, decision, reports = started(stages)
    reports = converge(decision, reports)
    active = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    passed = run(spec=spec, status=active.status, reports=reports, now=T0 + 60 * S, verdict=PASS)
    assert reconciling(passed.status) == (TRUE, conditions.WAITING_FOR_PAUSE)
    assert passed.requeue_after is not None and passed.requeue_after <= timedelta(minutes=5)
    done = run(
        spec=spec, status=passed.status, reports=reports, now=T0 + 20 * S + timedelta(minutes=5)
    )
    assert done.status.stage == "all"


def test_a_stage_held_after_a_passing_analysis_is_measured_again_each_interval() -> None:
    # The analysis keeps measuring through a pause and a manual gate: the next
    # measurement is due one interval later, so a failure the agents report then is
    # judged at that measurement, not at the pause's end or a longer controller tick.
    for hold in ({"pause": "10m"}, {"manualGate": True}):
        stages = [{**INTERNAL, **hold}, {"name": "all", "all": True}]
        spec, decision, reports = started(stages, analysis={"interval": "1s"})
        reports = converge(decision, reports)
        active = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
        passed = run(
            spec=spec, status=active.status, reports=reports, now=T0 + 60 * S, verdict=PASS
        )
        assert passed.status.stage == "internal", hold
        assert passed.requeue_after == timedelta(seconds=1), hold


def test_a_manual_gate_waits_for_promote() -> None:
    stages = [{**INTERNAL, "manualGate": True}, {"name": "all", "all": True}]
    spec, decision, reports = started(stages, skip_analysis=True)
    reports = converge(decision, reports)
    gated = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    assert reconciling(gated.status) == (TRUE, conditions.WAITING_FOR_PROMOTION)
    assert gated.status.phase == "WaitingForPromotion"
    still = run(spec=spec, status=gated.status, reports=reports, now=T0 + timedelta(hours=5))
    assert still.status.stage == "internal"
    promoted = run(
        spec=spec,
        status=still.status,
        reports=reports,
        now=T0 + timedelta(hours=6),
        action=act("promote"),
    )
    assert promoted.status.stage == "all"
    assert promoted.status.last_handled_action == "promote@t1"


def test_promote_ends_a_pause_at_once() -> None:
    stages = [{**INTERNAL, "pause": "1h"}, {"name": "all", "all": True}]
    spec, decision, reports = started(stages)
    promoted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("promote")
    )
    assert promoted.status.stage == "all"
    assert digests_of(promoted.assignments) == {D2: 10}


def test_a_stage_that_selects_no_pods_passes_at_once() -> None:
    _, decision, _ = started(internal=())
    assert decision.status.stage == "all"
    assert EVENT_STAGE_ADVANCED in reasons(decision)
    assert digests_of(decision.assignments) == {D2: 10}


def test_skip_analysis_advances_on_healthy_pods_alone() -> None:
    spec, decision, reports = started(skip_analysis=True)
    reports = converge(decision, reports)
    advanced = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL
    )
    assert advanced.status.stage == "all"


def test_the_last_stage_passing_makes_the_candidate_stable() -> None:
    spec, decision, reports = started(skip_analysis=True)
    status = decision.status
    seen: list[str] = []
    for second in range(20, 25):
        reports = converge(decision, reports)
        decision = run(spec=spec, status=status, reports=reports, now=T0 + second * S)
        status = decision.status
        seen += reasons(decision)
    assert seen == [EVENT_STAGE_ADVANCED, EVENT_ROLLOUT_SUCCEEDED]
    assert status.stable_digest == D2 and status.candidate_digest is None
    assert status.stage is None and status.stage_index is None
    assert [h.digest for h in status.history] == [D2, D1]
    assert ready(status) == (TRUE, conditions.SUCCEEDED)
    assert status.phase == "Succeeded"


def test_history_keeps_only_the_newest_entries() -> None:
    spec = make_spec(stages=[{"name": "all", "all": True}], skip_analysis=True)
    status, reports = installed(spec, pods(2))
    now = T0
    for i in range(HISTORY_LIMIT + 3):
        now += 10 * S
        d = "sha256:" + f"{i:064x}"
        decision = run(spec=spec, status=status, reports=reports, now=now, verified=ok(d))
        reports = converge(decision, reports)
        decision = run(spec=spec, status=decision.status, reports=reports, now=now + S)
        status = decision.status
        assert status.stable_digest == d
    assert len(status.history) == HISTORY_LIMIT
    assert status.history[0].digest == status.stable_digest


def test_a_request_percent_stage_gives_every_pod_both_digests_and_a_weight() -> None:
    stages = [{"name": "split", "requestPercent": 10}, {"name": "all", "all": True}]
    _, decision, _ = started(stages)
    assert set(decision.assignments.values()) == {PodTarget(digest=D1, candidate=D2, weight=10)}


# --- failures -----------------------------------------------------------------------


def test_a_failed_analysis_rolls_every_pod_back_and_stalls() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL)
    assert digests_of(rolled.assignments) == {D1: 10}
    assert stalled(rolled.status) == (TRUE, conditions.ROLLED_BACK)
    assert ready(rolled.status) == (FALSE, conditions.ROLLED_BACK)
    assert reconciling(rolled.status) == (FALSE, conditions.ROLLED_BACK)
    assert rolled.status.phase == "RolledBack"
    assert rolled.status.candidate_digest == D2 and rolled.status.stage is None
    assert reasons(rolled) == [EVENT_ROLLED_BACK]
    # The next resolution of the same digest does not start it again.
    reports = converge(rolled, reports)
    again = run(spec=spec, status=rolled.status, reports=reports, now=T0 + 60 * S, verified=ok(D2))
    assert digests_of(again.assignments) == {D1: 10}
    assert stalled(again.status) == (TRUE, conditions.ROLLED_BACK)
    assert reasons(again) == []


def test_the_stalled_message_of_a_held_candidate_does_not_grow_step_after_step() -> None:
    """Regression: the pods-back count was appended again on every reconcile."""
    spec, decision, reports = started()
    reports = converge(decision, reports)
    status = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL
    ).status
    messages = []
    for second in (30, 40, 50):
        status = run(spec=spec, status=status, reports=reports, now=T0 + second * S).status
        messages.append(next(c.message for c in status.conditions if c.type == "Stalled"))
    assert len(set(messages)) == 1
    assert messages[0].count("pods back") == 1


def test_failure_limit_counts_consecutive_failures() -> None:
    spec, decision, reports = started(analysis={"failureLimit": 1})
    reports = converge(decision, reports)
    status = decision.status
    for second, verdict in ((20, FAIL), (50, PASS), (80, FAIL)):
        decision = run(
            spec=spec, status=status, reports=reports, now=T0 + second * S, verdict=verdict
        )
        status = decision.status
        assert stalled(status) == (FALSE, conditions.PROGRESSING)
    assert reasons(decision) == [EVENT_ANALYSIS_FAILED]
    rolled = run(spec=spec, status=status, reports=reports, now=T0 + 110 * S, verdict=FAIL)
    assert stalled(rolled.status) == (TRUE, conditions.ROLLED_BACK)


def test_a_pod_that_flips_back_from_the_candidate_rolls_every_pod_back() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    reports[0] = flip_back(reports[0], failed=D2, to=D1, at=T0 + 15 * S)
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    assert stalled(rolled.status) == (TRUE, conditions.HEALTH_CHECK_FAILED)
    assert ready(rolled.status) == (FALSE, conditions.HEALTH_CHECK_FAILED)
    assert digests_of(rolled.assignments) == {D1: 10}
    assert reasons(rolled) == [EVENT_HEALTH_CHECK_FAILED]


def test_abort_rolls_back_and_holds() -> None:
    spec, decision, reports = started()
    aborted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("abort")
    )
    assert stalled(aborted.status) == (TRUE, conditions.ABORTED)
    assert aborted.status.phase == "Aborted"
    assert digests_of(aborted.assignments) == {D1: 10}
    assert reasons(aborted) == [EVENT_ABORTED]


def test_retry_starts_the_held_candidate_again_from_the_first_stage() -> None:
    spec, decision, reports = started()
    aborted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("abort")
    )
    reports = converge(aborted, reports)
    retried = run(
        spec=spec,
        status=aborted.status,
        reports=reports,
        now=T0 + 30 * S,
        action=act("retry", "t2"),
    )
    assert (retried.status.candidate_digest, retried.status.stage) == (D2, "internal")
    assert stalled(retried.status) == (FALSE, conditions.PROGRESSING)
    assert reasons(retried) == [EVENT_RETRIED]
    assert digests_of(retried.assignments) == {D2: 2, D1: 8}


def test_a_stale_flip_back_report_does_not_fail_a_retry() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    reports[0] = flip_back(reports[0], failed=D2, to=D1, at=T0 + 15 * S)
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    retried = run(
        spec=spec, status=rolled.status, reports=reports, now=T0 + 30 * S, action=act("retry")
    )
    assert retried.status.stage == "internal"
    assert stalled(retried.status) == (FALSE, conditions.PROGRESSING)


@pytest.mark.parametrize(
    ("name", "argument"),
    [("promote", None), ("abort", None), ("retry", None)],
)
def test_an_action_with_nothing_to_act_on_is_ignored_with_a_warning(
    name: str, argument: str | None
) -> None:
    spec = make_spec()
    status, reports = installed(spec, pods(3))
    decision = run(
        spec=spec,
        status=status,
        reports=reports,
        now=T0 + 10 * S,
        action=act(name, argument=argument),
    )
    assert reasons(decision) == [EVENT_ACTION_IGNORED]
    assert decision.events[0].type == "Warning"
    assert decision.status.last_handled_action == f"{name}@t1"
    assert ready(decision.status) == (TRUE, conditions.SUCCEEDED)


def test_an_action_is_handled_once() -> None:
    spec, decision, reports = started()
    aborted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("abort")
    )
    retried = run(
        spec=spec,
        status=aborted.status,
        reports=reports,
        now=T0 + 30 * S,
        action=act("retry", "t2"),
    )
    again = run(
        spec=spec,
        status=retried.status,
        reports=reports,
        now=T0 + 40 * S,
        action=act("retry", "t2"),
    )
    assert reasons(again) == []
    assert again.status.stage_started_at == retried.status.stage_started_at


# --- superseding, verification ------------------------------------------------------


def test_a_newer_digest_supersedes_the_rollout_in_flight() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    newer = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verified=ok(D3)
    )
    assert (newer.status.candidate_digest, newer.status.stage) == (D3, "internal")
    assert reasons(newer) == [EVENT_DIGEST_VERIFIED, EVENT_SUPERSEDED, EVENT_ROLLOUT_STARTED]
    assert D2 not in {d for t in newer.assignments.values() for d in t.digests}
    assert digests_of(newer.assignments) == {D3: 2, D1: 8}


def test_the_source_resolving_back_to_stable_abandons_the_candidate() -> None:
    spec, decision, reports = started()
    back = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verified=ok(D1))
    assert back.status.candidate_digest is None
    assert digests_of(back.assignments) == {D1: 10}
    assert EVENT_SUPERSEDED in reasons(back)


def test_an_unverified_first_digest_is_never_assigned_and_stalls() -> None:
    decision = run(spec=make_spec(), status=None, reports=pods(3), now=T0, verified=bad(D1))
    assert decision.assignments == {}
    assert stalled(decision.status) == (TRUE, conditions.VERIFICATION_FAILED)
    assert ready(decision.status) == (FALSE, conditions.VERIFICATION_FAILED)
    assert (
        decision.status.conditions[0].type,
        decision.status.conditions[0].status,
    ) == (conditions.VERIFIED, FALSE)
    assert reasons(decision) == [EVENT_VERIFICATION_FAILED]


def test_an_unverified_digest_abandons_the_rollout_in_flight() -> None:
    spec, decision, reports = started()
    refused = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verified=bad(D3)
    )
    assert digests_of(refused.assignments) == {D1: 10}
    assert refused.status.candidate_digest is None
    assert stalled(refused.status) == (TRUE, conditions.VERIFICATION_FAILED)
    assert refused.status.phase == "Failed"
    # A signed digest afterwards clears the stall and starts a rollout.
    fixed = run(spec=spec, status=refused.status, reports=reports, now=T0 + 30 * S, verified=ok(D3))
    assert stalled(fixed.status) == (FALSE, conditions.PROGRESSING)
    assert fixed.status.candidate_digest == D3


def test_a_stable_digest_that_fails_reverification_is_not_assigned_to_anyone() -> None:
    spec = make_spec()
    status, reports = installed(spec, pods(3))
    revoked = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=bad(D1))
    assert revoked.assignments == {}
    assert stalled(revoked.status) == (TRUE, conditions.VERIFICATION_FAILED)


# --- manual rollback --------------------------------------------------------------------


def test_rollback_returns_every_pod_to_a_previous_digest_and_holds_the_newer_one() -> None:
    spec = make_spec(stages=[{"name": "all", "all": True}], skip_analysis=True)
    status, reports = installed(spec, pods(4))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    reports = converge(decision, reports)
    decision = run(spec=spec, status=decision.status, reports=reports, now=T0 + 11 * S)
    assert decision.status.stable_digest == D2
    back = run(
        spec=spec,
        status=decision.status,
        reports=reports,
        now=T0 + 20 * S,
        action=act("rollback", argument=D1),
    )
    assert digests_of(back.assignments) == {D1: 4}
    assert (back.status.stable_digest, back.status.candidate_digest) == (D1, D2)
    assert reasons(back) == [EVENT_ROLLBACK_REQUESTED]
    assert reconciling(back.status) == (TRUE, conditions.ROLLING_BACK)
    assert stalled(back.status) == (FALSE, conditions.ROLLING_BACK)
    reports = converge(back, reports)
    done = run(spec=spec, status=back.status, reports=reports, now=T0 + 21 * S, verified=ok(D2))
    assert ready(done.status) == (TRUE, conditions.SUCCEEDED)
    assert digests_of(done.assignments) == {D1: 4}
    retried = run(
        spec=spec, status=done.status, reports=reports, now=T0 + 30 * S, action=act("retry", "t2")
    )
    assert retried.status.candidate_digest == D2 and retried.status.stage == "all"


def test_rollback_to_a_digest_that_was_never_stable_is_refused() -> None:
    spec = make_spec()
    status, reports = installed(spec, pods(2))
    refused = run(
        spec=spec,
        status=status,
        reports=reports,
        now=T0 + 10 * S,
        action=act("rollback", argument=D3),
    )
    assert reasons(refused) == [EVENT_ACTION_IGNORED]
    assert digests_of(refused.assignments) == {D1: 2}
    assert refused.status.stable_digest == D1


# --- suspend, restarts, counts ----------------------------------------------------------


def test_suspend_changes_nothing_and_says_so() -> None:
    spec, decision, reports = started()
    suspended_spec = make_spec(stages=TWO_STAGES, suspend=True)
    held = run(
        spec=suspended_spec,
        status=decision.status,
        reports=reports,
        now=T0 + 20 * S,
        verdict=FAIL,
        action=act("abort"),
        verified=ok(D3),
    )
    # The published state stays as it was: every pod keeps its target.
    assert held.state == decision.state
    assert held.status.target_state == decision.status.target_state
    assert held.assignments == decision.assignments
    assert digests_of(held.assignments) == {D2: 2, D1: 8}
    assert ready(held.status) == (FALSE, conditions.SUSPENDED)
    assert reconciling(held.status) == (FALSE, conditions.SUSPENDED)
    assert held.status.phase == "Suspended"
    assert held.status.candidate_digest == D2 and held.status.last_handled_action is None
    assert reasons(held) == [EVENT_SUSPENDED]
    resumed = run(
        spec=spec, status=held.status, reports=reports, now=T0 + 30 * S, action=act("abort")
    )
    assert reasons(resumed) == [EVENT_RESUMED, EVENT_ABORTED]


def test_a_restarted_operator_decides_the_same_from_the_stored_status() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    stored = LogicBundleStatus.model_validate(
        decision.status.model_dump(mode="json", by_alias=True)
    )
    a = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=PASS)
    b = run(spec=spec, status=stored, reports=reports, now=T0 + 20 * S, verdict=PASS)
    assert a.state == b.state
    assert a.assignments == b.assignments and a.events == b.events
    assert a.status.model_dump(mode="json") == b.status.model_dump(mode="json")


def test_status_counts_pods_per_digest_and_per_state() -> None:
    spec, decision, reports = started()
    reports = converge(decision, reports)
    reports[9] = dataclasses.replace(reports[9], active=None, healthy=False)
    counted = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    counts = counted.status.pods
    assert counts is not None
    assert (counts.total, counts.active, counts.pending, counts.failed) == (10, 9, 1, 0)
    assert [(c.digest, c.assigned, c.active) for c in counts.by_digest] == [(D1, 8, 7), (D2, 2, 2)]
    assert counted.status.summary is not None
    assert counted.status.summary.candidate == "2" * 12


def test_analysis_is_due_each_interval_while_a_stage_is_in_flight() -> None:
    spec, decision, reports = started()
    assert analysis_due(spec=spec, status=decision.status, now=T0 + 10 * S)
    reports = converge(decision, reports)
    measured = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=NODATA
    )
    assert not analysis_due(spec=spec, status=measured.status, now=T0 + 30 * S)
    assert analysis_due(spec=spec, status=measured.status, now=T0 + 50 * S)
    status, _ = installed(spec, pods(2))
    assert not analysis_due(spec=spec, status=status, now=T0)


def test_a_published_state_gets_a_newer_revision_only_when_it_changes() -> None:
    from tests.rollout._fixtures import D2, ok, published

    spec = make_spec(stages=[{"name": "everyone", "all": True}], skip_analysis=True)
    reports = pods(3)
    status, reports = installed(spec, reports)
    first = published(status)
    assert first is not None and first.revision > 0
    again = run(spec=spec, status=status, reports=reports, now=T0 + timedelta(seconds=30))
    assert again.state is not None and again.state.revision == first.revision, "unchanged"
    # A clock that stepped back still gives a newer revision to a changed state.
    moved = run(
        spec=spec, status=status, reports=reports, now=T0 - timedelta(days=1), verified=ok(D2)
    )
    assert moved.state is not None and moved.state.revision == first.revision + 1
