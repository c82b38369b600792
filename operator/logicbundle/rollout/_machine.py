"""The rollout state machine: one pure step from what is observed to what to do.

Every reconcile calls :func:`step` with the resource's spec and status, the
selected pods, at most one new analysis verdict, at most one manual action
and at most one verification outcome.  It returns every pod's target, the
next status and the events to post.  The whole state lives in the status it
is given and in the pods' annotations, so an operator killed at any instant
resumes exactly where it stopped: there is nothing else to remember.

States (``status.candidateDigest`` / ``status.stageIndex``)::

    no stable ──first verified digest──▶ stable, every pod on it (nothing to compare with)
    steady (candidate unset) ──new verified digest──▶ in flight, stage 0
    in flight (candidate, stage i)
        ── pods ready + analysis passed + pause elapsed / gate promoted ──▶ stage i+1
        ── last stage passes ──▶ steady: candidate becomes stable, history grows
        ── failed analysis beyond failureLimit, or an agent flipped back ──▶ held (RolledBack)
           (with ``onFailure: freeze``: ──▶ frozen)
        ── abort ──▶ held (Aborted)
        ── newer verified digest ──▶ in flight, stage 0 of the newer one (Superseded)
        ── spec back on the stable digest, or the new digest fails verification ──▶ steady
    held (candidate, stage unset; every pod on stable)
        ── retry ──▶ in flight, stage 0;   ── newer verified digest ──▶ in flight, stage 0
    frozen (candidate, stage i kept, Stalled Frozen; the published state kept as it is)
        ── retry ──▶ in flight, stage i measured afresh;   ── abort ──▶ held (Aborted)
        ── newer verified digest ──▶ in flight, stage 0 of the newer one (Superseded)
    any ── rollback=<history digest> ──▶ that digest stable, the spec's digest held (not stalled)

Decisions that are not obvious:

* ``promote`` ends whatever the current stage waits for (pods, pause, gate,
  data); it is a human override, and a failed analysis has already rolled
  back, so it never overrides a failure.
* Failures count at any time in a stage; passes count only when measured
  after every pod of the stage runs the candidate.  ``failureLimit`` counts
  consecutive failures: a pass resets the count, too few samples does not.
* A digest that fails verification abandons a rollout in flight (the spec no
  longer names its candidate) and is never assigned.  When the *stable*
  digest itself fails re-verification, no pod is assigned anything: pods keep
  what they run and the resource is stalled.
* While ``spec.suspend`` is true nothing changes and actions wait.
* A frozen rollout keeps the state it published: no stage advances, nothing
  rolls back, new pods get what that state gives them.  ``retry`` resumes
  the frozen stage (not stage 0: that would take the candidate away from
  pods of later stages and give it back); ``promote`` is refused, as for a
  rolled-back candidate.
* Measurements without a verdict never pass a stage; with ``onNoData: fail``
  they count as failed once the stage has gone ``noDataDeadline`` without
  data (``status.analysis.noDataSince``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from logicbundle.api import (
    AnalysisStatus,
    DigestCount,
    HistoryEntry,
    LogicBundleSpec,
    LogicBundleStatus,
    Phase,
    PodCounts,
    RequestedAction,
    Stage,
    actions,
    conditions,
    find_condition,
    parse_duration,
    short_digest,
    with_condition,
)
from logicbundle.api.v1alpha1 import HISTORY_LIMIT, StageVerdict, TargetState
from logicbundle.contract import RolloutState, state_to_json
from logicbundle.rollout import _history as history
from logicbundle.rollout._analysis import AnalysisVerdict, summarize
from logicbundle.rollout._cohort import (
    assignments as targets_under,
)
from logicbundle.rollout._cohort import (
    candidate_cohort,
    current_stage,
    publish,
    published_state,
)
from logicbundle.rollout._model import (
    Decision,
    Event,
    EventType,
    Observed,
    PodFailure,
    PodIdentity,
    PodReport,
    PodTarget,
    SourceFailure,
    VerifiedDigest,
    observe,
)

# --- event reasons --------------------------------------------------------------
# Events are for humans reading ``kubectl describe``; conditions are the API.

EVENT_DIGEST_VERIFIED: Final = "DigestVerified"
EVENT_VERIFICATION_FAILED: Final = "VerificationFailed"
EVENT_INSTALLED: Final = "Installed"
EVENT_ROLLOUT_STARTED: Final = "RolloutStarted"
EVENT_STAGE_ADVANCED: Final = "StageAdvanced"
EVENT_ROLLOUT_SUCCEEDED: Final = "RolloutSucceeded"
EVENT_ANALYSIS_FAILED: Final = "AnalysisFailed"
EVENT_ROLLED_BACK: Final = "RolledBack"
EVENT_HEALTH_CHECK_FAILED: Final = "HealthCheckFailed"
EVENT_ABORTED: Final = "Aborted"
EVENT_SUPERSEDED: Final = "Superseded"
EVENT_RETRIED: Final = "Retried"
EVENT_ROLLBACK_REQUESTED: Final = "RollbackRequested"
EVENT_ACTION_IGNORED: Final = "ActionIgnored"
EVENT_SUSPENDED: Final = "Suspended"
EVENT_RESUMED: Final = "Resumed"
EVENT_FROZEN: Final = "Frozen"

EVENT_REASONS: Final = (
    EVENT_DIGEST_VERIFIED,
    EVENT_VERIFICATION_FAILED,
    EVENT_INSTALLED,
    EVENT_ROLLOUT_STARTED,
    EVENT_STAGE_ADVANCED,
    EVENT_ROLLOUT_SUCCEEDED,
    EVENT_ANALYSIS_FAILED,
    EVENT_ROLLED_BACK,
    EVENT_HEALTH_CHECK_FAILED,
    EVENT_ABORTED,
    EVENT_SUPERSEDED,
    EVENT_RETRIED,
    EVENT_ROLLBACK_REQUESTED,
    EVENT_ACTION_IGNORED,
    EVENT_SUSPENDED,
    EVENT_RESUMED,
    EVENT_FROZEN,
)

_HOLD_REASONS: Final = (conditions.ROLLED_BACK, conditions.HEALTH_CHECK_FAILED, conditions.ABORTED)
_VERIFICATION_STALL_REASONS: Final = (conditions.VERIFICATION_FAILED, conditions.AUDIT_REJECTED)


def _short(digest: str | None) -> str:
    return short_digest(digest) if digest else "none"


@dataclass
class _Draft:
    """The status being built: mutable while one step runs, frozen into the status at the end."""

    stable: str | None
    candidate: str | None
    stage_index: int | None
    stage_started_at: datetime | None
    stage_active_at: datetime | None
    history: list[HistoryEntry]
    analysis: AnalysisStatus | None
    last_handled_action: str | None
    observed_ref: str | None
    resolved_digest: str | None
    resolved_at: datetime | None
    hold: tuple[str, str] | None
    """Why a held candidate is held (Stalled reason, message); None: held by request."""
    now: datetime
    """The time of the step (the history's clock)."""
    frozen: str | None = None
    """Why the rollout in its current stage is frozen (``onFailure: freeze``); None: it is not."""
    events: list[Event] = field(default_factory=list)
    wait: tuple[str, str] | None = None
    """The current stage's wait (Reconciling reason, message), set by the progression."""
    requeue: timedelta | None = None
    judged: AnalysisStatus | None = None
    """The analysis as this step's verdict left it (before any stage change)."""

    @property
    def in_flight(self) -> bool:
        return self.candidate is not None and self.stage_index is not None and self.frozen is None

    @property
    def is_frozen(self) -> bool:
        return (
            self.candidate is not None and self.stage_index is not None and self.frozen is not None
        )

    @property
    def held(self) -> bool:
        return self.candidate is not None and self.stage_index is None

    def emit(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type=type_, reason=reason, message=message))

    def requeue_within(self, delay: timedelta) -> None:
        delay = max(delay, timedelta(seconds=1))
        self.requeue = delay if self.requeue is None else min(self.requeue, delay)


_PODS_BACK = re.compile(r" \(\d+/\d+ pods back\)$")


def _draft(status: LogicBundleStatus, now: datetime) -> _Draft:
    hold: tuple[str, str] | None = None
    stalled = find_condition(status.conditions, conditions.STALLED)
    if (
        status.candidate_digest is not None
        and status.stage_index is None
        and stalled is not None
        and stalled.status == conditions.TRUE
        and stalled.reason in _HOLD_REASONS
    ):
        # The stored message ends with the "(N/M pods back)" count _stall appends each
        # step; keep only the reason's own text so it is not repeated.
        hold = (stalled.reason, _PODS_BACK.sub("", stalled.message))
    # Frozen: the Stalled condition carries why (kept as it is: nothing is appended to it).
    why_frozen = stalled.message if stalled is not None and frozen(status) else None
    return _Draft(
        stable=status.stable_digest,
        candidate=status.candidate_digest,
        stage_index=status.stage_index if status.candidate_digest is not None else None,
        stage_started_at=status.stage_started_at,
        stage_active_at=status.stage_active_at,
        history=list(status.history),
        analysis=status.analysis,
        last_handled_action=status.last_handled_action,
        observed_ref=status.observed_ref,
        resolved_digest=status.resolved_digest,
        resolved_at=status.resolved_at,
        hold=hold,
        now=now,
        frozen=why_frozen,
    )


# --- transitions ----------------------------------------------------------------


def _stages(spec: LogicBundleSpec) -> tuple[Stage, ...]:
    return spec.rollout.effective_stages()


def _enter_stage(d: _Draft, spec: LogicBundleSpec, index: int, now: datetime) -> None:
    stage = _stages(spec)[index]
    d.stage_index = index
    d.stage_started_at = now
    d.stage_active_at = None
    d.analysis = AnalysisStatus(stage=stage.name)
    if d.candidate is not None:
        d.history = history.stage_started(d.history, digest=d.candidate, name=stage.name, now=now)


def _start(
    d: _Draft,
    spec: LogicBundleSpec,
    digest: str,
    now: datetime,
    *,
    retry: bool,
    verified: VerifiedDigest | None = None,
) -> None:
    d.candidate = digest
    d.hold = None
    d.frozen = None
    signer, issuer = (
        (verified.signer, verified.issuer)
        if verified is not None
        else history.signer_of(d.history, digest)
    )
    d.history = history.opened(
        d.history, digest=digest, ref=d.observed_ref, signer=signer, issuer=issuer, now=now
    )
    _enter_stage(d, spec, 0, now)
    first = _stages(spec)[0].name
    if retry:
        d.emit("Normal", EVENT_RETRIED, f"retrying {_short(digest)} from stage {first}")
    else:
        d.emit(
            "Normal",
            EVENT_ROLLOUT_STARTED,
            f"rolling out {_short(digest)} (stable {_short(d.stable)}), stage {first}",
        )


def _abandon(d: _Draft, message: str) -> None:
    """Drop the candidate (in flight or held): every pod goes back to stable."""
    if d.candidate is None:
        return
    d.emit("Normal", EVENT_SUPERSEDED, message)
    if d.in_flight or d.is_frozen:
        d.history = history.ended(
            d.history, digest=d.candidate, outcome="Superseded", message=message, now=d.now
        )
    d.candidate = None
    d.stage_index = None
    d.stage_active_at = None
    d.hold = None
    d.frozen = None


def _roll_back(d: _Draft, reason: str, message: str) -> None:
    """Send every pod back to stable and hold the candidate (Stalled)."""
    if d.candidate is not None and (d.in_flight or d.is_frozen):
        aborted = reason == conditions.ABORTED
        d.history = history.ended(
            d.history,
            digest=d.candidate,
            outcome="Aborted" if aborted else "RolledBack",
            message=message,
            now=d.now,
            stage_verdict="Interrupted" if aborted else "Failed",
        )
    d.stage_index = None
    d.stage_active_at = None
    d.hold = (reason, message)
    d.frozen = None
    event = {
        conditions.ROLLED_BACK: EVENT_ROLLED_BACK,
        conditions.HEALTH_CHECK_FAILED: EVENT_HEALTH_CHECK_FAILED,
        conditions.ABORTED: EVENT_ABORTED,
    }[reason]
    d.emit("Warning", event, message)


def _fail(d: _Draft, spec: LogicBundleSpec, reason: str, message: str) -> None:
    """A failure: roll back (``onFailure: rollback``) or freeze where it is (``freeze``).

    ``message`` says what failed; the action taken is appended here.
    """
    if spec.rollout.on_failure == "freeze" and d.stage_index is not None:
        stage = _stages(spec)[d.stage_index].name
        d.frozen = (
            f"{message}; frozen at stage {stage} (onFailure: freeze): every pod keeps what it "
            "runs until retry, abort, rollback or a new digest"
        )
        d.wait = None
        d.emit("Warning", EVENT_FROZEN, d.frozen)
        if d.candidate is not None:
            d.history = history.stage_ended(
                d.history,
                digest=d.candidate,
                verdict="Failed",
                message=message,
                now=d.now,
                outcome="Frozen",
            )
        return
    _roll_back(d, reason, f"{message}; every pod back on {_short(d.stable)}")


def _advance(
    d: _Draft, spec: LogicBundleSpec, now: datetime, why: str, verdict: StageVerdict = "Passed"
) -> None:
    assert d.candidate is not None and d.stage_index is not None  # noqa: S101 - caller checks
    stages = _stages(spec)
    passed = stages[d.stage_index].name
    d.history = history.stage_ended(
        d.history, digest=d.candidate, verdict=verdict, message=why, now=now
    )
    if d.stage_index + 1 < len(stages):
        _enter_stage(d, spec, d.stage_index + 1, now)
        d.emit(
            "Normal",
            EVENT_STAGE_ADVANCED,
            f"stage {passed} of {_short(d.candidate)} passed ({why}); "
            f"entering {stages[d.stage_index].name}",
        )
        return
    promoted = d.candidate
    d.history = history.ended(
        d.history, digest=promoted, outcome="Promoted", message="", now=now, ref=d.observed_ref
    )
    d.stable = promoted
    d.candidate = None
    d.stage_index = None
    d.stage_active_at = None
    d.emit(
        "Normal",
        EVENT_ROLLOUT_SUCCEEDED,
        f"stage {passed} passed ({why}); {_short(promoted)} is now stable",
    )


# --- inputs: verification, actions ----------------------------------------------


def _apply_verification(
    d: _Draft, spec: LogicBundleSpec, verified: VerifiedDigest, was: bool | None, now: datetime
) -> None:
    if verified.ref is not None:
        d.observed_ref = verified.ref
    changed = verified.digest != d.resolved_digest
    if changed:
        d.resolved_digest = verified.digest
        d.resolved_at = now
    if not verified.ok:
        if changed or was is not False:
            d.emit(
                "Warning",
                EVENT_VERIFICATION_FAILED,
                f"{_short(verified.digest)} failed verification and is never assigned: "
                f"{verified.message or verified.condition_reason}",
            )
        if verified.digest != d.stable:
            _abandon(
                d,
                f"abandoned {_short(d.candidate)}: the source now resolves to "
                f"{_short(verified.digest)}, which failed verification",
            )
        return
    if changed or was is not True:
        d.emit(
            "Normal",
            EVENT_DIGEST_VERIFIED,
            f"{_short(verified.digest)} verified: {verified.message or 'signature accepted'}",
        )
    if d.stable is None:
        d.history = history.became_stable(
            d.history,
            digest=verified.digest,
            outcome="Installed",
            ref=d.observed_ref,
            message="the first digest, straight to every pod",
            now=now,
            signer=verified.signer,
            issuer=verified.issuer,
        )
        d.stable = verified.digest
        d.emit(
            "Normal",
            EVENT_INSTALLED,
            f"first digest {_short(verified.digest)} goes to every pod directly "
            "(there is no stable version to compare it with)",
        )
    elif verified.digest == d.stable:
        _abandon(
            d,
            f"abandoned {_short(d.candidate)}: the source resolves to the stable "
            f"{_short(d.stable)} again",
        )
    elif verified.digest != d.candidate:
        if d.candidate is not None:
            _abandon(
                d,
                f"{_short(d.candidate)} superseded by {_short(verified.digest)}; its pods go "
                "to stable or straight to the new candidate",
            )
        _start(d, spec, verified.digest, now, retry=False, verified=verified)


def _apply_action(
    d: _Draft, spec: LogicBundleSpec, action: RequestedAction, revoked: bool, now: datetime
) -> None:
    d.last_handled_action = str(action)
    name = action.action
    if name == actions.PROMOTE:
        if d.is_frozen:
            d.emit(
                "Warning",
                EVENT_ACTION_IGNORED,
                "promote ignored: the rollout is frozen after a failure; retry measures the "
                "frozen stage again, abort rolls every pod back",
            )
            return
        if not d.in_flight:
            d.emit("Warning", EVENT_ACTION_IGNORED, "promote ignored: no rollout in flight")
            return
        _advance(d, spec, now, "promoted by request", verdict="Promoted")
    elif name == actions.ABORT:
        if not (d.in_flight or d.is_frozen):
            d.emit("Warning", EVENT_ACTION_IGNORED, "abort ignored: no rollout in flight")
            return
        _roll_back(
            d,
            conditions.ABORTED,
            f"{_short(d.candidate)} aborted by request; every pod back on {_short(d.stable)}",
        )
    elif name == actions.RETRY:
        if d.candidate is None:
            d.emit("Warning", EVENT_ACTION_IGNORED, "retry ignored: no candidate to retry")
            return
        if d.is_frozen and d.stage_index is not None:
            # Resume where it froze: stage 0 would take the candidate from pods that run it.
            d.frozen = None
            _enter_stage(d, spec, d.stage_index, now)
            d.emit(
                "Normal",
                EVENT_RETRIED,
                f"retrying {_short(d.candidate)} from the frozen stage "
                f"{_stages(spec)[d.stage_index].name}, measured afresh",
            )
            return
        _start(d, spec, d.candidate, now, retry=True)
    elif name == actions.ROLLBACK:
        _rollback_to(d, action.argument or "", revoked, now)


def _rollback_to(d: _Draft, digest: str, revoked: bool, now: datetime) -> None:
    known = history.stable_digests(d.history)
    if d.stable is not None:
        known.add(d.stable)
    if digest not in known or (revoked and digest == d.stable):
        d.emit(
            "Warning",
            EVENT_ACTION_IGNORED,
            f"rollback to {_short(digest)} refused: only a previous stable digest from "
            "status.history (verified when it was rolled out) can be rolled back to",
        )
        return
    # The spec's digest (candidate, or the current stable) is held so that the
    # next resolution does not roll it straight out again; retry resumes it.
    spec_digest = d.candidate or d.stable
    was = d.stable
    if d.candidate is not None and (d.in_flight or d.is_frozen):
        d.history = history.ended(
            d.history,
            digest=d.candidate,
            outcome="RolledBack",
            message=f"rollback to {_short(digest)} requested",
            now=now,
        )
    signer, issuer = history.signer_of(d.history, digest)
    d.history = history.became_stable(
        d.history,
        digest=digest,
        outcome="Restored",
        ref=None,
        message=f"rollback requested (stable was {_short(was)})",
        now=now,
        signer=signer,
        issuer=issuer,
    )
    d.stable = digest
    d.candidate = spec_digest if spec_digest != digest else None
    d.stage_index = None
    d.stage_active_at = None
    d.hold = None
    d.frozen = None
    d.emit(
        "Normal",
        EVENT_ROLLBACK_REQUESTED,
        f"every pod goes back to {_short(digest)} by request"
        + (f"; {_short(d.candidate)} held until retry or a new digest" if d.candidate else ""),
    )


# --- the stage in flight --------------------------------------------------------


def _fresh_failure(d: _Draft, observed: Observed) -> PodFailure | None:
    """The candidate's failure reported since its stage started, if any."""
    if d.candidate is None:
        return None
    failure = observed.failures.get(d.candidate)
    if failure is None:
        return None
    if d.stage_started_at is None or failure.at >= d.stage_started_at:
        return failure
    return None


def _apply_verdict(
    d: _Draft, spec: LogicBundleSpec, verdict: AnalysisVerdict, now: datetime
) -> None:
    analysis = spec.rollout.analysis
    previous = d.analysis or AnalysisStatus()
    no_data_since = None
    overdue = False
    if verdict.inconclusive:
        no_data_since = previous.no_data_since or now
        deadline = parse_duration(analysis.effective_no_data_deadline())
        overdue = analysis.effective_on_no_data() == "fail" and now - no_data_since >= deadline
    counts_as_failure = verdict.failed or overdue
    failures = previous.failures
    if counts_as_failure:
        failures += 1
    elif verdict.passed:
        failures = 0
    d.analysis = previous.model_copy(
        update={
            "verdict": verdict.verdict,
            "last_measured_at": now,
            "measurements": previous.measurements + 1,
            "failures": failures,
            "metrics": verdict.metrics,
            "no_data_since": no_data_since,
        }
    )
    if not counts_as_failure:
        return
    what = (
        verdict.reason
        if verdict.failed
        else f"no data since {no_data_since:%H:%M:%S} (onNoData: fail, noDataDeadline "
        f"{analysis.effective_no_data_deadline()}): {verdict.reason}"
    )
    if failures > analysis.failure_limit:
        _fail(
            d,
            spec,
            conditions.ROLLED_BACK,
            f"analysis of {_short(d.candidate)} failed at stage {previous.stage}: {what}",
        )
    else:
        d.emit(
            "Warning",
            EVENT_ANALYSIS_FAILED,
            f"analysis failed ({failures} of {analysis.failure_limit} tolerated): {what}",
        )


def _progress(
    d: _Draft,
    *,
    bundle_name: str,
    spec: LogicBundleSpec,
    pods: Sequence[PodReport],
    observed: Observed,
    verdict: AnalysisVerdict | None,
    previous: RolloutState | None,
    now: datetime,
) -> RolloutState | None:
    """Run the stage in flight as far as it can go in this instant.

    Returns the state published for the stage it stopped in (None when the
    rollout ended or rolled back: the caller publishes "every pod on stable").
    """
    if verdict is not None and not spec.rollout.skip_analysis:
        _apply_verdict(d, spec, verdict, now)
        d.judged = d.analysis
        if not d.in_flight:
            return previous if d.is_frozen else None
    stages = _stages(spec)
    state = previous
    for _ in range(len(stages) + 1):
        if not d.in_flight:
            return None
        assert d.candidate is not None and d.stage_index is not None  # noqa: S101
        failed = _fresh_failure(d, observed)
        if failed is not None:
            who = f"pod {failed.pod}" if failed.pod else "a pod"
            if failed.pods > 1:
                who += f" (and {failed.pods - 1} more)"
            _fail(
                d,
                spec,
                conditions.HEALTH_CHECK_FAILED,
                f"{who} flipped back from "
                f"{_short(d.candidate)}: {failed.message or 'health check failed'}",
            )
            return state if d.is_frozen else None
        stage = stages[d.stage_index]
        state = publish(
            bundle_name=bundle_name,
            stage=stage,
            stable=d.stable,
            candidate=d.candidate,
            previous=state,
            pods=pods,
            now=now,
        )
        plan = targets_under(state, pods)
        cohort = candidate_cohort(plan, candidate=d.candidate)
        if not cohort:
            _advance(d, spec, now, "it selects no pods, nothing to judge", verdict="Skipped")
            continue
        # The cohort is the only set of pods told the candidate (it never shrinks within a
        # rollout), so the pods reporting it active are the cohort's; a split's pods
        # report their primary digest.
        primary = d.stable if stage.request_percent is not None else d.candidate
        ready = min(len(cohort), observed.active.get(primary or "", 0))
        label = f"stage {stage.name} ({d.stage_index + 1}/{len(stages)})"
        if ready < len(cohort) or not observed.complete:
            d.wait = (
                conditions.WAITING_FOR_PODS,
                f"{label}: {ready}/{len(cohort)} pods run {_short(d.candidate)}",
            )
            return state
        if d.stage_active_at is None:
            d.stage_active_at = now
        active_at = d.stage_active_at
        _decide_stage(
            d, spec=spec, stage=stage, label=label, pods=len(cohort), active_at=active_at, now=now
        )
        if d.wait is not None:
            return state
    return state if d.in_flight else None


def _decide_stage(
    d: _Draft,
    *,
    spec: LogicBundleSpec,
    stage: Stage,
    label: str,
    pods: int,
    active_at: datetime,
    now: datetime,
) -> None:
    rollout = spec.rollout
    analysis = d.analysis or AnalysisStatus()
    interval = parse_duration(rollout.analysis.interval)
    if not rollout.skip_analysis:
        # The analysis goes on measuring while the stage holds (a pause, a manual
        # gate): the next measurement is due one interval from now, and a failure it
        # finds must not wait for a longer requeue (the controller's in-flight tick).
        d.requeue_within(interval)
        measured_after = (
            analysis.last_measured_at is not None and analysis.last_measured_at > active_at
        )
        if not (measured_after and analysis.verdict == "Passed"):
            if measured_after and analysis.verdict == "NoData":
                figures = "; ".join(
                    f"{m.name}: {m.message}" for m in analysis.metrics if m.verdict == "NoData"
                )
                d.wait = (
                    conditions.INSUFFICIENT_DATA,
                    f"{label}: waiting for data ({figures}); {_no_data_policy(spec, analysis)}",
                )
            else:
                d.wait = (
                    conditions.WAITING_FOR_ANALYSIS,
                    f"{label}: {pods} pod(s) run {_short(d.candidate)}; waiting for a passing "
                    "analysis",
                )
            return
    if stage.pause is not None:
        remaining = active_at + parse_duration(stage.pause) - now
        if remaining > timedelta(0):
            d.requeue_within(remaining)
            d.wait = (
                conditions.WAITING_FOR_PAUSE,
                f"{label}: pause {stage.pause}, {int(remaining.total_seconds())}s left",
            )
            return
    if stage.manual_gate:
        d.wait = (
            conditions.WAITING_FOR_PROMOTION,
            f"{label}: healthy; waiting for a promote action",
        )
        return
    why = "pods healthy"
    if not rollout.skip_analysis:
        figures = summarize(analysis.metrics, rollout.analysis)
        why += ", analysis passed" + (f": {figures}" if figures else "")
    _advance(d, spec, now, why)


def _no_data_policy(spec: LogicBundleSpec, analysis: AnalysisStatus) -> str:
    """What happens if the data does not come, for the ``InsufficientData`` message."""
    settings = spec.rollout.analysis
    if settings.effective_on_no_data() == "hold":
        return "onNoData: hold, the stage waits for data"
    action = "freezes" if spec.rollout.on_failure == "freeze" else "rolls back"
    since = analysis.no_data_since
    when = f" (no data since {since:%H:%M:%S})" if since is not None else ""
    return (
        f"onNoData: fail, measurements without data count as failed after "
        f"{settings.effective_no_data_deadline()} without data{when}; past failureLimit "
        f"{settings.failure_limit} the rollout {action}"
    )


# --- the step -------------------------------------------------------------------


def step(
    *,
    bundle_name: str,
    generation: int,
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    pods: Sequence[PodReport],
    verdict: AnalysisVerdict | None,
    action: RequestedAction | None,
    verified: VerifiedDigest | None,
    now: datetime,
    source_error: SourceFailure | None = None,
    observed: Observed | None = None,
) -> Decision:
    """Decide the next assignments, status and events.

    ``pods``: every pod the bundle's selector matches, with the agent or not:
    their facts (identity, labels, admission time).  ``observed``: what their
    agents report, summed (the distributor replicas' summaries); None sums
    the per-pod reports in ``pods`` (:func:`observe`).
    ``verdict``: the analysis of the candidate measured since the last step,
    or None when nothing was measured (see :func:`analysis_due`).
    ``action``: the parsed ``logicbundle.io/requested-action`` annotation, or
    None; a value equal to ``status.lastHandledAction`` was handled already
    and is ignored.  ``verified``: the verification of the digest the source
    resolved to, or None when nothing was resolved this time.  ``now``: the
    time of this step (the only clock the core ever sees).  ``source_error``:
    why the last check of the source failed, until a check succeeds (see
    :class:`SourceFailure`): while nothing is in flight and nothing else stalled,
    ``Ready=False`` with its reason and the last verified digest still serving;
    retryable (``ResolveFailed``) keeps ``Reconciling=True``, unrecoverable
    (``InvalidSource``) is ``Stalled=True``.  A rollout in flight goes on with
    its candidate, verified before the failure.
    """
    old = status or LogicBundleStatus()
    seen = observed if observed is not None else observe(pods)
    was_verified = _condition_bool(old, conditions.VERIFIED)
    if spec.suspend:
        return _suspended(generation=generation, old=old, pods=pods, observed=seen, now=now)
    d = _draft(old, now)
    running = current_stage(spec=spec, status=old)
    if running is not None:
        # Found by name: the spec's stages may have been edited mid-rollout.
        d.stage_index = _stages(spec).index(running)
    if old.phase == "Suspended":
        d.emit("Normal", EVENT_RESUMED, "spec.suspend is false again; resuming")

    verification = _verification_state(old)
    if verified is not None:
        _apply_verification(d, spec, verified, was_verified, now)
        verification = (verified.ok, verified.condition_reason, verified.message)
    revoked = verification is not None and not verification[0] and d.resolved_digest == d.stable

    if action is not None and str(action) != old.last_handled_action:
        _apply_action(d, spec, action, revoked, now)

    previous = published_state(old)
    state: RolloutState | None = None
    if d.in_flight:
        applies = old.candidate_digest == d.candidate and old.stage_index == d.stage_index
        state = _progress(
            d,
            bundle_name=bundle_name,
            spec=spec,
            pods=pods,
            observed=seen,
            verdict=verdict if applies else None,
            previous=previous,
            now=now,
        )

    stage = (
        _stages(spec)[d.stage_index]
        if (d.in_flight or d.is_frozen) and d.stage_index is not None
        else None
    )
    if revoked:
        # The stable digest itself no longer verifies: no pod is told anything.
        state = RolloutState(bundle=bundle_name, stable=None)
    elif d.is_frozen and previous is not None:
        # Frozen: the published state stays as it is, every pod keeps what it runs.
        state = previous
    elif state is None or not d.in_flight:
        state = publish(
            bundle_name=bundle_name,
            stage=stage,
            stable=d.stable,
            candidate=d.candidate,
            previous=previous,
            pods=pods,
            now=now,
        )
    state = _stamped(state, previous, now)
    assignments = targets_under(state, pods)
    return _finish(
        d,
        stage_name=stage.name if stage is not None else None,
        generation=generation,
        old=old,
        pods=pods,
        state=state,
        assignments=assignments,
        observed=seen,
        verification=verification,
        now=now,
        source_error=source_error,
    )


def _stamped(state: RolloutState, previous: RolloutState | None, now: datetime) -> RolloutState:
    """``state`` with its revision: the previous one when nothing changed, else a newer one.

    The publish time in milliseconds, and always above the previous revision
    (a clock stepping back, or another replica's clock, never reorders them).
    """
    if previous is not None and replace(previous, revision=0) == replace(state, revision=0):
        return replace(state, revision=previous.revision)
    after = previous.revision + 1 if previous is not None else 1
    return replace(state, revision=max(int(now.timestamp() * 1000), after))


def _condition_bool(status: LogicBundleStatus, type_: str) -> bool | None:
    condition = find_condition(status.conditions, type_)
    if condition is None or condition.status == conditions.UNKNOWN:
        return None
    return condition.status == conditions.TRUE


def _verification_state(status: LogicBundleStatus) -> tuple[bool, str, str] | None:
    condition = find_condition(status.conditions, conditions.VERIFIED)
    if condition is None or condition.status == conditions.UNKNOWN:
        return None
    return condition.status == conditions.TRUE, condition.reason, condition.message


def _set(
    current: tuple[conditions.Condition, ...],
    type_: str,
    value: bool,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> tuple[conditions.Condition, ...]:
    return with_condition(
        current,
        conditions.Condition(
            type=type_,
            status=conditions.TRUE if value else conditions.FALSE,
            observed_generation=generation,
            last_transition_time=now,
            reason=reason,
            message=message[:32768],
        ),
    )


def _counts(
    pods: Sequence[PodReport],
    assignments: Mapping[PodIdentity, PodTarget],
    observed: Observed,
    *,
    stable: str | None,
    candidate: str | None,
) -> tuple[PodCounts, bool]:
    """The pod counts, and whether every pod with a target reports running it.

    From sums: pods are grouped by what they are told; a group runs its target
    as far as pods report its primary digest active (the rule tells each pod
    one group, so the sums split exactly when every pod reports).
    """
    without_agent = sum(1 for report in pods if not report.has_agent)
    agent_pods = len(pods) - without_agent
    groups: dict[PodTarget, int] = {}
    for target in assignments.values():
        groups[target] = groups.get(target, 0) + 1
    per_digest: dict[str, list[int]] = {}
    running = 0
    for target, told in groups.items():
        runs = min(told, observed.active.get(target.digest, 0))
        running += runs
        for digest in target.digests:
            entry = per_digest.setdefault(digest, [0, 0])
            entry[0] += told
            entry[1] += runs
    behind = len(assignments) - running
    failing = sum(
        failure.pods
        for digest, failure in observed.failures.items()
        if digest == candidate or digest in per_digest
    )
    failed = min(behind, failing)
    first = [digest for digest in (stable, candidate) if digest in per_digest]
    rest = sorted(digest for digest in per_digest if digest not in first)
    by_digest = tuple(
        DigestCount(digest=digest, assigned=per_digest[digest][0], active=per_digest[digest][1])
        for digest in [*first, *rest][: HISTORY_LIMIT + 2]
    )
    counts = PodCounts(
        total=len(pods),
        active=running,
        pending=agent_pods - running - failed,
        failed=failed,
        without_agent=without_agent,
        by_digest=by_digest,
    )
    converged = (bool(assignments) or not agent_pods) and behind == 0 and observed.complete
    return counts, converged


def _finish(
    d: _Draft,
    *,
    stage_name: str | None,
    generation: int,
    old: LogicBundleStatus,
    pods: Sequence[PodReport],
    state: RolloutState,
    assignments: Mapping[PodIdentity, PodTarget],
    observed: Observed,
    verification: tuple[bool, str, str] | None,
    now: datetime,
    source_error: SourceFailure | None = None,
) -> Decision:
    counts, converged = _counts(pods, assignments, observed, stable=d.stable, candidate=d.candidate)
    agent_pods = [report for report in pods if report.has_agent]
    cur = old.conditions

    def put(type_: str, value: bool, reason: str, message: str) -> None:
        nonlocal cur
        cur = _set(cur, type_, value, reason, message, generation=generation, now=now)

    if verification is not None:
        ok, reason, message = verification
        text = message or (
            f"{_short(d.resolved_digest)} " + ("verified" if ok else "failed verification")
        )
        put(conditions.VERIFIED, ok, reason, text)

    stall = _stall(d, verification, agent_pods, observed)
    wanted, phase = _state_conditions(
        d, stall=stall, active=counts.active, agent_pods=len(agent_pods), converged=converged
    )
    if source_error is not None and stall is None and not d.in_flight:
        keeps = f"; pods keep {_short(d.stable)}" if d.stable else "; nothing verified to run yet"
        wanted = _failure_conditions(source_error, keeps=keeps)
        if source_error.stalled:
            phase = "Failed"
    for type_, value, reason, message in wanted:
        put(type_, value, reason, message)

    status = old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": cur,
            "phase": phase,
            "observed_ref": d.observed_ref,
            "resolved_digest": d.resolved_digest,
            "resolved_at": d.resolved_at,
            "stable_digest": d.stable,
            "candidate_digest": d.candidate,
            "stage": stage_name,
            "stage_index": d.stage_index,
            "stage_started_at": d.stage_started_at if d.in_flight or d.is_frozen else None,
            "stage_active_at": d.stage_active_at if d.in_flight or d.is_frozen else None,
            "pods": counts,
            "history": tuple(d.history),
            "last_handled_action": d.last_handled_action,
            "analysis": d.analysis,
            "target_state": TargetState.model_validate(state_to_json(state)),
        }
    ).with_summary()
    return Decision(
        state=state,
        assignments=dict(assignments),
        status=status,
        events=tuple(d.events),
        requeue_after=d.requeue if d.in_flight else None,
        judged=d.judged,
    )


_Wanted = tuple[str, bool, str, str]


def _stall(
    d: _Draft,
    verification: tuple[bool, str, str] | None,
    agent_pods: Sequence[PodReport],
    observed: Observed,
) -> tuple[str, str] | None:
    """Why progress stopped (Stalled reason, message), or None."""
    if (
        verification is not None
        and not verification[0]
        and verification[1] in (_VERIFICATION_STALL_REASONS)
    ):
        return (
            verification[1],
            f"{_short(d.resolved_digest)} failed verification and is never assigned"
            + (f"; pods stay on {_short(d.stable)}" if d.stable else "")
            + (f": {verification[2]}" if verification[2] else ""),
        )
    if d.is_frozen and d.frozen is not None:
        return conditions.FROZEN, d.frozen
    if d.held and d.hold is not None:
        back = min(len(agent_pods), observed.active.get(d.stable or "", 0))
        return d.hold[0], f"{d.hold[1]} ({back}/{len(agent_pods)} pods back)"
    return None


def _failure_conditions(failure: SourceFailure, *, keeps: str) -> list[_Wanted]:
    """Stalled, Reconciling and Ready for ``failure``: the one mapping of errors to conditions.

    Retryable (reason ``ResolveFailed``): Flux's convention for an error a retry
    may fix (its ``ProgressingWithRetry``): not Stalled (a registry back up, a
    tag pushed or a Secret created fixes it without a change of spec), still
    Reconciling, so kstatus says InProgress and ``kubectl wait
    --for=condition=Ready`` keeps waiting.  Unrecoverable (``InvalidSource``,
    ``InvalidSpec``): Stalled, as Flux's ``serror.Stalling``, so kstatus says
    Failed and GitOps fails fast.  The Argo CD health check shows both Degraded,
    with the message.
    """
    message = f"{failure.message}{keeps}"
    if failure.stalled:
        return _stalled_conditions(failure.reason, message)
    return [
        (conditions.STALLED, False, failure.reason, "not stalled: retried"),
        (conditions.RECONCILING, True, failure.reason, f"retrying: {failure.message}"),
        (conditions.READY, False, failure.reason, message),
    ]


def _stalled_conditions(reason: str, message: str) -> list[_Wanted]:
    """Stalled=True, Reconciling=False and Ready=False, all with ``reason``."""
    return [
        (conditions.STALLED, True, reason, message),
        (conditions.RECONCILING, False, reason, "stalled: " + message),
        (conditions.READY, False, reason, message),
    ]


def _state_conditions(
    d: _Draft, *, stall: tuple[str, str] | None, active: int, agent_pods: int, converged: bool
) -> tuple[list[_Wanted], Phase]:
    """Stalled, Reconciling and Ready, and the phase: never Reconciling and Stalled together."""
    if stall is not None:
        reason, message = stall
        phase: Phase = "RolledBack"
        if reason in _VERIFICATION_STALL_REASONS:
            phase = "Failed"
        elif reason == conditions.ABORTED:
            phase = "Aborted"
        elif reason == conditions.FROZEN:
            phase = "Frozen"
        return _stalled_conditions(reason, message), phase
    if d.in_flight:
        reason, message = d.wait or (conditions.PROGRESSING, "in flight")
        waiting = reason == conditions.WAITING_FOR_PROMOTION
        return [
            (conditions.STALLED, False, conditions.PROGRESSING, "not stalled"),
            (conditions.RECONCILING, True, reason, message),
            (
                conditions.READY,
                False,
                conditions.PROGRESSING,
                f"rolling out {_short(d.candidate)}: {message}",
            ),
        ], "WaitingForPromotion" if waiting else "Progressing"
    if d.stable is None:
        message = "waiting for the first verified digest"
        return [
            (conditions.STALLED, False, conditions.RESOLVING, "not stalled"),
            (conditions.RECONCILING, True, conditions.RESOLVING, message),
            (conditions.READY, False, conditions.RESOLVING, message),
        ], "Pending"
    if converged:
        message = f"{_short(d.stable)} active on {active}/{agent_pods} pods"
        if d.candidate is not None:
            message += f"; {_short(d.candidate)} held until retry or a new digest"
        return [
            (conditions.STALLED, False, conditions.SUCCEEDED, "not stalled"),
            (conditions.RECONCILING, False, conditions.SUCCEEDED, "nothing in flight"),
            (conditions.READY, True, conditions.SUCCEEDED, message),
        ], "Succeeded"
    reason = conditions.ROLLING_BACK if d.candidate is not None else conditions.WAITING_FOR_PODS
    message = f"{active}/{agent_pods} pods run {_short(d.stable)}"
    return [
        (conditions.STALLED, False, reason, "not stalled"),
        (conditions.RECONCILING, True, reason, message),
        (conditions.READY, False, reason, message),
    ], "RollingBack" if d.candidate is not None else "Progressing"


def _suspended(
    *,
    generation: int,
    old: LogicBundleStatus,
    pods: Sequence[PodReport],
    observed: Observed,
    now: datetime,
) -> Decision:
    events: tuple[Event, ...] = ()
    if old.phase != "Suspended":
        events = (
            Event(
                type="Normal",
                reason=EVENT_SUSPENDED,
                message="spec.suspend is true: nothing changes until it is false",
            ),
        )
    # The published state stays as it is: pods keep what they run.
    state = published_state(old)
    assignments = targets_under(state, pods) if state is not None else {}
    message = "spec.suspend is true: pods keep what they run and actions wait"
    cur = old.conditions
    for type_ in (conditions.READY, conditions.RECONCILING):
        cur = _set(cur, type_, False, conditions.SUSPENDED, message, generation=generation, now=now)
    if find_condition(cur, conditions.STALLED) is None:
        cur = _set(
            cur,
            conditions.STALLED,
            False,
            conditions.SUSPENDED,
            message,
            generation=generation,
            now=now,
        )
    counts, _ = _counts(
        pods, assignments, observed, stable=old.stable_digest, candidate=old.candidate_digest
    )
    status = old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": cur,
            "phase": "Suspended",
            "pods": counts,
        }
    ).with_summary()
    return Decision(state=state, assignments=assignments, status=status, events=events)


def refused(
    *,
    generation: int,
    status: LogicBundleStatus | None,
    failure: SourceFailure,
    now: datetime,
) -> Decision:
    """A spec that cannot be acted on: the conditions say why, and nothing else changes.

    The controller's path for a spec the CRD schema admitted but the models
    refuse (``failure``: ``InvalidSpec``, stalled): the conditions come from the
    same mapping as :func:`step`'s, for generation ``generation``; the rest of
    the status (stable digest, history, the published state) is kept as it is,
    so every pod keeps what it runs, and no assignment is computed.
    """
    old = status or LogicBundleStatus()
    cur = old.conditions
    for type_, value, reason, message in _failure_conditions(
        failure, keeps="; pods keep what they run"
    ):
        cur = _set(cur, type_, value, reason, message, generation=generation, now=now)
    new = old.model_copy(
        update={
            "observed_generation": generation,
            "conditions": cur,
            "phase": "Failed" if failure.stalled else old.phase,
        }
    )
    return Decision(state=published_state(old), assignments={}, status=new)


def frozen(status: LogicBundleStatus | None) -> bool:
    """Whether ``status`` is a rollout frozen by a failure (``onFailure: freeze``)."""
    if status is None or status.candidate_digest is None or status.stage_index is None:
        return False
    stalled = find_condition(status.conditions, conditions.STALLED)
    return (
        stalled is not None
        and stalled.status == conditions.TRUE
        and stalled.reason == conditions.FROZEN
    )


def analysis_due(*, spec: LogicBundleSpec, status: LogicBundleStatus | None, now: datetime) -> bool:
    """Whether the controller should measure the candidate before the next :func:`step`.

    True while a rollout is in flight (not suspended, analysis not skipped)
    and the last measurement of the stage is at least ``analysis.interval``
    old.  The window to measure is from ``status.analysis.lastMeasuredAt``
    (or ``stageStartedAt``) to ``now``.
    """
    if status is None or spec.suspend or spec.rollout.skip_analysis:
        return False
    if current_stage(spec=spec, status=status) is None or frozen(status):
        return False
    last = status.analysis.last_measured_at if status.analysis else None
    if last is None:
        return True
    return now - last >= parse_duration(spec.rollout.analysis.interval)
