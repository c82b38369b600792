"""``status.history``: every rollout's digest, signer, stages and outcome, bounded in size."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from logicbundle.api import (
    HISTORY_LIMIT,
    HISTORY_MAX_BYTES,
    AnalysisStatus,
    Condition,
    HistoryEntry,
    HistoryStage,
    LogicBundleSpec,
    LogicBundleStatus,
    MetricResult,
    PodCounts,
    RequestedAction,
    conditions,
)
from logicbundle.api.v1alpha1 import (
    HISTORY_MESSAGE_LIMIT,
    HISTORY_SIGNER_LIMIT,
    HISTORY_STAGE_LIMIT,
    DigestCount,
)
from logicbundle.rollout import EVENT_ACTION_IGNORED, Decision, PodReport, VerifiedDigest
from logicbundle.rollout._history import size, trimmed
from tests.rollout._fixtures import (
    D1,
    D2,
    D3,
    FAIL,
    INTERNAL,
    PASS,
    T0,
    converge,
    flip_back,
    make_spec,
    pods,
    reasons,
    run,
)

S = timedelta(seconds=1)
TWO_STAGES: list[dict[str, Any]] = [INTERNAL, {"name": "all", "all": True}]
SUBJECT = "https://github.com/shop/rules/.github/workflows/release.yml@refs/heads/main"
ISSUER = "https://token.actions.githubusercontent.com"


def signed(d: str) -> VerifiedDigest:
    return VerifiedDigest(
        digest=d,
        ok=True,
        ref="registry.example.com/team/rules:v1",
        signer=SUBJECT,
        issuer=ISSUER,
    )


def act(name: str, token: str = "t1", argument: str | None = None) -> RequestedAction:  # noqa: S107
    return RequestedAction(action=name, token=token, argument=argument)  # type: ignore[arg-type]


def stored(status: LogicBundleStatus) -> LogicBundleStatus:
    """``status`` as a restarted operator reads it back: nothing but the stored JSON."""
    return LogicBundleStatus.model_validate(
        status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )


def started(**spec_kw: Any) -> tuple[LogicBundleSpec, Decision, list[PodReport]]:
    """Stable D1 on ten pods (two internal), D2 started and run by the internal ones."""
    spec = make_spec(stages=TWO_STAGES, **spec_kw)
    reports = pods(10, internal=(0, 1))
    first = run(spec=spec, status=None, reports=reports, now=T0, verified=signed(D1))
    reports = converge(first, reports)
    status = run(spec=spec, status=first.status, reports=reports, now=T0 + S).status
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=signed(D2))
    return spec, decision, converge(decision, reports)


def stages(entry: HistoryEntry) -> list[tuple[str, str | None]]:
    return [(stage.name, stage.verdict) for stage in entry.stages]


def test_the_first_digest_is_recorded_installed_with_its_signer() -> None:
    spec = make_spec(stages=TWO_STAGES)
    decision = run(spec=spec, status=None, reports=pods(3), now=T0, verified=signed(D1))
    [entry] = decision.status.history
    assert (entry.digest, entry.outcome, entry.signer, entry.issuer) == (
        D1,
        "Installed",
        SUBJECT,
        ISSUER,
    )
    assert entry.started_at == entry.ended_at == entry.promoted_at == T0
    assert entry.stages == ()


def test_a_rollout_in_flight_is_the_first_entry_with_its_running_stage() -> None:
    _, decision, _ = started()
    entry = decision.status.history[0]
    assert (entry.digest, entry.outcome, entry.signer) == (D2, "Progressing", SUBJECT)
    assert entry.started_at == T0 + 10 * S and entry.ended_at is None
    assert stages(entry) == [("internal", None)]
    assert entry.stages[0].started_at == T0 + 10 * S
    assert [h.digest for h in decision.status.history] == [D2, D1]


def test_a_promoted_rollout_records_every_stage_with_its_times_and_verdict() -> None:
    spec, decision, reports = started()
    status = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S).status
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 60 * S, verdict=PASS)
    reports = converge(decision, reports)
    status = run(spec=spec, status=decision.status, reports=reports, now=T0 + 70 * S).status
    status = run(
        spec=spec, status=stored(status), reports=reports, now=T0 + 110 * S, verdict=PASS
    ).status
    assert status.stable_digest == D2
    entry = status.history[0]
    assert (entry.outcome, entry.promoted_at, entry.ended_at) == (
        "Promoted",
        T0 + 110 * S,
        T0 + 110 * S,
    )
    assert stages(entry) == [("internal", "Passed"), ("all", "Passed")]
    internal, last = entry.stages
    assert (internal.started_at, internal.ended_at) == (T0 + 10 * S, T0 + 60 * S)
    assert (last.started_at, last.ended_at) == (T0 + 60 * S, T0 + 110 * S)
    assert internal.message.startswith("pods healthy, analysis passed")
    assert entry.signer == SUBJECT
    assert [h.outcome for h in status.history] == ["Promoted", "Installed"]


def test_a_failed_analysis_is_recorded_rolled_back_with_its_figures() -> None:
    spec, decision, reports = started()
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL)
    entry = rolled.status.history[0]
    assert (entry.digest, entry.outcome, entry.ended_at) == (D2, "RolledBack", T0 + 20 * S)
    assert stages(entry) == [("internal", "Failed")]
    assert "failed at stage internal: error-rate: 0.2 > max 0.05" in entry.stages[0].message
    assert entry.message == ""  # written once, in the stage that failed
    assert entry.promoted_at is None


def test_a_pod_flipping_back_is_recorded_rolled_back_naming_the_pod() -> None:
    spec, decision, reports = started(skip_analysis=True)
    reports[0] = flip_back(reports[0], failed=D2, to=D1, at=T0 + 15 * S)
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S)
    entry = rolled.status.history[0]
    assert entry.outcome == "RolledBack"
    text = entry.stages[-1].message
    assert "shop/p000 flipped back" in text and "self-test raised" in text


def test_an_abort_is_recorded_aborted_and_its_stage_interrupted() -> None:
    spec, decision, reports = started()
    aborted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("abort")
    )
    entry = aborted.status.history[0]
    assert (entry.outcome, stages(entry)) == ("Aborted", [("internal", "Interrupted")])
    assert "aborted by request" in entry.message


def test_a_newer_digest_supersedes_the_rollout_in_flight() -> None:
    spec, decision, reports = started()
    newer = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verified=signed(D3)
    )
    first, second = newer.status.history[:2]
    assert (first.digest, first.outcome) == (D3, "Progressing")
    assert (second.digest, second.outcome, stages(second)) == (
        D2,
        "Superseded",
        [("internal", "Interrupted")],
    )
    assert "superseded by 333333333333" in second.message


def test_a_promote_action_is_recorded_as_the_stages_verdict() -> None:
    spec, decision, reports = started()
    promoted = run(
        spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, action=act("promote")
    )
    assert stages(promoted.status.history[0]) == [("internal", "Promoted"), ("all", None)]


def test_a_stage_that_selects_no_pods_is_recorded_skipped() -> None:
    spec = make_spec(stages=TWO_STAGES)
    reports = pods(4)  # no internal pod
    first = run(spec=spec, status=None, reports=reports, now=T0, verified=signed(D1))
    decision = run(
        spec=spec,
        status=first.status,
        reports=converge(first, reports),
        now=T0 + S,
        verified=signed(D2),
    )
    assert stages(decision.status.history[0]) == [("internal", "Skipped"), ("all", None)]


def test_a_frozen_rollout_stays_open_and_a_retry_runs_its_stage_again() -> None:
    spec, decision, reports = started(on_failure="freeze")
    frozen = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL)
    entry = frozen.status.history[0]
    assert (entry.outcome, stages(entry)) == ("Frozen", [("internal", "Failed")])
    retried = run(
        spec=spec, status=frozen.status, reports=reports, now=T0 + 30 * S, action=act("retry")
    )
    entry = retried.status.history[0]
    assert entry.outcome == "Progressing"
    assert stages(entry) == [("internal", "Failed"), ("internal", None)]
    aborted = run(
        spec=spec,
        status=retried.status,
        reports=reports,
        now=T0 + 40 * S,
        action=act("abort", "t2"),
    )
    assert aborted.status.history[0].outcome == "Aborted"


def test_a_retry_of_a_rolled_back_candidate_is_a_new_entry_with_the_same_signer() -> None:
    spec, decision, reports = started()
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL)
    retried = run(
        spec=spec, status=rolled.status, reports=reports, now=T0 + 30 * S, action=act("retry")
    )
    first, second = retried.status.history[:2]
    assert (first.digest, first.outcome, first.signer) == (D2, "Progressing", SUBJECT)
    assert (second.digest, second.outcome) == (D2, "RolledBack")


def test_a_rollback_action_records_the_candidate_rolled_back_and_the_target_restored() -> None:
    spec, decision, reports = started()
    back = run(
        spec=spec,
        status=decision.status,
        reports=reports,
        now=T0 + 20 * S,
        action=act("rollback", argument=D1),
    )
    restored, candidate = back.status.history[:2]
    assert (restored.digest, restored.outcome, restored.signer) == (D1, "Restored", SUBJECT)
    assert (candidate.digest, candidate.outcome) == (D2, "RolledBack")
    assert "rollback to 111111111111 requested" in candidate.message


def test_a_rollback_to_a_digest_that_was_only_rolled_back_is_refused() -> None:
    spec, decision, reports = started()
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=FAIL)
    newer = run(
        spec=spec, status=rolled.status, reports=reports, now=T0 + 30 * S, verified=signed(D3)
    )
    assert [h.digest for h in newer.status.history] == [D3, D2, D1]
    refused = run(
        spec=spec,
        status=newer.status,
        reports=reports,
        now=T0 + 40 * S,
        action=act("rollback", argument=D2),
    )
    assert reasons(refused) == [EVENT_ACTION_IGNORED]
    assert refused.status.stable_digest == D1


def test_entries_written_before_outcomes_read_as_promoted_rollback_targets() -> None:
    legacy = HistoryEntry.model_validate({"digest": D1, "promotedAt": "2025-05-01T12:00:00Z"})
    assert legacy.outcome == "Promoted" and legacy.was_stable


def test_the_history_of_a_restarted_operator_is_what_the_last_write_left() -> None:
    spec, decision, reports = started()
    status = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S).status
    fresh = run(spec=spec, status=status, reports=reports, now=T0 + 60 * S, verdict=PASS)
    restarted = run(
        spec=spec, status=stored(status), reports=reports, now=T0 + 60 * S, verdict=PASS
    )
    assert restarted.status.model_dump(mode="json") == fresh.status.model_dump(mode="json")


def test_the_history_keeps_the_newest_rollouts_only() -> None:
    spec = make_spec(stages=[{"name": "all", "all": True}], skip_analysis=True)
    reports = pods(2)
    decision: Decision = run(spec=spec, status=None, reports=reports, now=T0, verified=signed(D1))
    now = T0
    for i in range(HISTORY_LIMIT + 3):
        now += 10 * S
        reports = converge(decision, reports)
        decision = run(
            spec=spec,
            status=decision.status,
            reports=reports,
            now=now,
            verified=signed("sha256:" + f"{i + 16:064x}"),
        )
        reports = converge(decision, reports)
        decision = run(spec=spec, status=decision.status, reports=reports, now=now + S)
    history = decision.status.history
    assert len(history) == HISTORY_LIMIT
    assert [h.outcome for h in history] == ["Promoted"] * HISTORY_LIMIT
    assert history[0].digest == decision.status.stable_digest


# --- size ------------------------------------------------------------------------------

STATUS_BUDGET = 16 * 1024
"""Most bytes the JSON of a whole status may take with a full history.

Each status write sends the whole object and every watcher (the operator, each
distributor replica, Argo CD, Flux) receives it again; etcd refuses objects
above 1.5 MiB.  16 KiB is about 1% of that limit, and the status with a full
history of realistic rollouts takes about 10 KiB of it."""


def _long(text: str, length: int) -> str:
    return (text * (length // len(text) + 1))[:length]


def _realistic_entry(i: int) -> HistoryEntry:
    """A rollout of the default three stages, rolled back at the last one with real figures."""
    at = T0 + timedelta(hours=i)
    passed = (
        "pods healthy, analysis passed: error-rate 0.12% (max 5%, 1.1x stable, max 2x); "
        "latency-p95 12.3 ms (1.05x stable, max 2x)"
    )
    failed = (
        "analysis of 0123456789ab failed at stage all: error-rate 7.31% > max 5% "
        "(3.2x stable, max 2x; 1,204 samples); every pod back on 0123456789ab"
    )
    return HistoryEntry(
        digest="sha256:" + f"{i:064x}",
        ref="registry.example.com/platform/pricing-rules:v2026.12.06-1",
        outcome="RolledBack",
        signer=SUBJECT,
        issuer=ISSUER,
        started_at=at,
        ended_at=at + timedelta(minutes=20),
        stages=(
            HistoryStage(
                name="internal", started_at=at, ended_at=at, verdict="Passed", message=passed
            ),
            HistoryStage(
                name="canary", started_at=at, ended_at=at, verdict="Passed", message=passed
            ),
            HistoryStage(name="all", started_at=at, ended_at=at, verdict="Failed", message=failed),
        ),
    )


def _status_with(history: list[HistoryEntry]) -> LogicBundleStatus:
    """A busy status: every condition with a long message, pods per digest, an analysis."""
    message = _long("rolling out 0123456789ab: stage canary (2/3): 3/3 pods run it; ", 200)
    return LogicBundleStatus(
        observed_generation=7,
        conditions=tuple(
            Condition(
                type=type_,
                status=conditions.TRUE,
                observed_generation=7,
                last_transition_time=T0,
                reason=conditions.PROGRESSING,
                message=message,
            )
            for type_ in ("Ready", "Reconciling", "Stalled", "Verified")
        ),
        phase="Progressing",
        observed_ref="registry.example.com/platform/pricing-rules:v2026.12.06-1",
        resolved_digest=D2,
        resolved_at=T0,
        stable_digest=D1,
        candidate_digest=D2,
        stage="canary",
        stage_index=1,
        stage_started_at=T0,
        stage_active_at=T0,
        pods=PodCounts(
            total=200,
            active=190,
            pending=10,
            by_digest=(
                DigestCount(digest=D1, assigned=190, active=185),
                DigestCount(digest=D2, assigned=10, active=5),
            ),
        ),
        history=tuple(history),
        last_handled_action="promote@2026-12-06T22:00:00.000000Z",
        analysis=AnalysisStatus(
            stage="canary",
            verdict="Passed",
            last_measured_at=T0,
            measurements=12,
            metrics=tuple(
                MetricResult(
                    name=name,
                    verdict="Passed",
                    candidate=0.0012,
                    stable=0.0011,
                    ratio=1.09,
                    samples=1204,
                    stable_samples=20411,
                    min_samples=20,
                    maximum=0.05,
                    max_ratio_to_stable=2.0,
                    message="error-rate 0.12% (max 5%, 1.09x stable, max 2x)",
                )
                for name in ("error-rate", "latency-p95")
            ),
        ),
    ).with_summary()


def _json_size(status: LogicBundleStatus) -> int:
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return len(json.dumps(body, separators=(",", ":")))


def test_a_status_with_a_full_history_of_real_rollouts_stays_within_its_budget() -> None:
    history = trimmed([_realistic_entry(i) for i in range(HISTORY_LIMIT)])
    assert len(history) == HISTORY_LIMIT  # the byte limit does not bite on real rollouts
    measured = _json_size(_status_with(history))
    print(f"status with {HISTORY_LIMIT} entries: {measured} bytes; history {size(history)} bytes")
    assert measured <= STATUS_BUDGET


def test_the_worst_history_is_cut_to_its_byte_limit_and_keeps_the_newest_entry() -> None:
    at = T0
    stage = HistoryStage(
        name=_long("stage-", 62) + "x",
        started_at=at,
        ended_at=at,
        verdict="Interrupted",
        message=_long("w", HISTORY_MESSAGE_LIMIT),
    )
    worst = [
        HistoryEntry(
            digest="sha256:" + f"{i:064x}",
            ref=_long("registry.example.com/a/", 512),
            outcome="Superseded",
            message=_long("m", HISTORY_MESSAGE_LIMIT),
            signer=_long("s", HISTORY_SIGNER_LIMIT),
            issuer=_long("i", HISTORY_SIGNER_LIMIT),
            started_at=at,
            ended_at=at,
            promoted_at=at,
            stages=(stage,) * HISTORY_STAGE_LIMIT,
        )
        for i in range(HISTORY_LIMIT)
    ]
    assert size(worst[:1]) > HISTORY_MAX_BYTES // 2  # one entry alone is big...
    history = trimmed(worst)
    assert history and history[0] == worst[0]  # ...the newest always stays
    assert size(history) <= max(HISTORY_MAX_BYTES, size(worst[:1]))
    measured = _json_size(_status_with(history))
    print(f"worst status: {measured} bytes; history {size(history)} bytes, {len(history)} entries")
    assert measured <= 2 * STATUS_BUDGET
