"""The operator's half of a rollout's trace: the traceparent it publishes, the spans it ends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from logicbundle import contract
from logicbundle.api.v1alpha1 import AnalysisStatus, LogicBundleStatus
from logicbundle.controller._tracing import RolloutTraces, SourceSpan
from logicbundle.telemetry import SpanRecord, Tracing

V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64
KEY = ("ns", "pricing")
STEADY = contract.RolloutState(bundle="pricing", stable=V1, revision=1)
"""V1 everywhere, no rollout."""
INTERNAL = contract.RolloutState(
    bundle="pricing",
    stable=V1,
    candidate=V2,
    stage=contract.Internal(contract.Selector()),
    revision=2,
)
"""V2 at its internal stage."""


class Recording(Tracing):
    enabled = True

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []

    def export(self, spans: Sequence[SpanRecord]) -> None:
        self.spans.extend(spans)


def _step(
    traces: RolloutTraces,
    before: contract.RolloutState | None,
    after: contract.RolloutState,
    *,
    stage: str | None = None,
    index: int | None = None,
    analysis: AnalysisStatus | None = None,
) -> contract.RolloutState:
    status = LogicBundleStatus(stage=stage, stage_index=index, analysis=analysis)
    state, written = traces.stamp(uid="uid-1", before=before, after=after, status=status)
    assert state is not None
    assert written.target_state is None or written.target_state.traceparent == state.traceparent
    traces.observe(KEY, before=before, after=state, status=written, spec_ref="r/p:v2")
    return state


def test_tracing_off_publishes_no_traceparent_and_keeps_nothing() -> None:
    traces = RolloutTraces()
    after = contract.RolloutState(
        bundle="pricing", stable=V1, candidate=V2, stage=contract.Everyone()
    )
    state, status = traces.stamp(uid="u", before=None, after=after, status=LogicBundleStatus())
    assert state is after and state.traceparent is None
    assert status.target_state is None


def test_a_rollout_is_one_trace_whose_phases_parent_the_pods_and_whose_root_ends_it() -> None:
    recording = Recording()
    traces = RolloutTraces(recording)
    traces.source_checked(
        KEY,
        SourceSpan(
            start_ns=1,
            end_ns=2,
            ref="r/p:v2",
            digest=V2,
            identity="ci@example.com",
            issuer="https://issuer",
            method="keyless",
            error=None,
        ),
    )
    first = _step(traces, STEADY, INTERNAL, stage="internal", index=0)
    parent = contract.parse_traceparent(first.traceparent)
    assert parent is not None
    trace = parent.trace_id
    assert trace == contract.rollout_trace_id(uid="uid-1", digest=V2, revision=2)
    assert parent.span_id == contract.phase_span_id(trace, "stage/0")

    measured = AnalysisStatus(
        stage="canary",
        verdict="Passed",
        last_measured_at=datetime(2026, 1, 1, tzinfo=UTC),
        measurements=3,
    )
    canary = replace(INTERNAL, stage=contract.Everyone(), revision=3)
    second = _step(traces, first, canary, stage="canary", index=1, analysis=measured)
    assert contract.parse_traceparent(second.traceparent) == contract.TraceParent(
        trace_id=trace, span_id=contract.phase_span_id(trace, "stage/1")
    )
    promoted = contract.RolloutState(bundle="pricing", stable=V2, revision=4)
    third = _step(traces, second, promoted)
    assert third.traceparent == str(
        contract.TraceParent(trace_id=trace, span_id=contract.phase_span_id(trace, "promotion"))
    )

    by_name = {s.name: s for s in recording.spans}
    root_id = contract.phase_span_id(trace, "rollout")
    assert set(by_name) == {
        "resolve, verify and cache",
        "stage internal",
        "stage canary",
        "promotion",
        "rollout ns/pricing",
    }
    assert {s.trace_id for s in recording.spans} == {trace}
    root = by_name["rollout ns/pricing"]
    assert root.parent_id is None and root.span_id == root_id
    assert root.attributes["logicbundle.outcome"] == "Promoted"
    assert root.start_ns == 1  # the rollout began with the source check that found V2
    source = by_name["resolve, verify and cache"]
    assert source.attributes["logicbundle.signer.identity"] == "ci@example.com"
    assert source.attributes["logicbundle.signer.issuer"] == "https://issuer"
    stage = by_name["stage canary"]
    assert stage.parent_id == root_id
    assert stage.span_id == contract.phase_span_id(trace, "stage/1")
    assert [e.attributes["logicbundle.verdict"] for e in stage.events] == ["Passed"]

    # Steady afterwards: the last rollout's traceparent stays, nothing more is exported.
    count = len(recording.spans)
    fourth = _step(traces, third, replace(promoted, revision=4))
    assert fourth.traceparent == third.traceparent
    assert len(recording.spans) == count


def test_a_verdict_that_ends_its_stage_in_the_same_reconcile_is_an_event_of_that_stage() -> None:
    """The status already holds the next stage's (empty) analysis: the verdict comes from
    the decision's ``judged`` (an e2e rollout lost it when a measurement and the end of
    the stage's pause fell in one reconcile)."""
    recording = Recording()
    traces = RolloutTraces(recording)
    first = _step(traces, STEADY, INTERNAL, stage="internal", index=0)
    canary = replace(INTERNAL, stage=contract.Everyone(), revision=3)
    judged = AnalysisStatus(
        stage="internal",
        verdict="Passed",
        last_measured_at=datetime(2026, 1, 1, tzinfo=UTC),
        measurements=1,
    )
    status = LogicBundleStatus(
        stage="canary", stage_index=1, analysis=AnalysisStatus(stage="canary")
    )
    state, written = traces.stamp(uid="uid-1", before=first, after=canary, status=status)
    assert state is not None
    traces.observe(KEY, before=first, after=state, status=written, spec_ref="r/p:v2", judged=judged)
    (stage,) = [s for s in recording.spans if s.name == "stage internal"]
    assert [e.attributes["logicbundle.verdict"] for e in stage.events] == ["Passed"]
    assert stage.events[0].attributes["logicbundle.stage"] == "internal"
    # Noted once: the canary stage starts with no event of the internal one.
    promoted = contract.RolloutState(bundle="pricing", stable=V2, revision=4)
    _step(traces, state, promoted)
    (after,) = [s for s in recording.spans if s.name == "stage canary"]
    assert after.events == ()


def test_a_rolled_back_candidate_ends_its_trace_as_rolled_back_under_a_rollback_phase() -> None:
    recording = Recording()
    traces = RolloutTraces(recording)
    everyone = contract.RolloutState(
        bundle="pricing", stable=V1, candidate=V2, stage=contract.Everyone(), revision=2
    )
    first = _step(traces, STEADY, everyone, stage="everyone", index=0)
    back = _step(traces, first, contract.RolloutState(bundle="pricing", stable=V1, revision=3))
    parent = contract.parse_traceparent(back.traceparent)
    assert parent is not None
    assert parent.span_id == contract.phase_span_id(parent.trace_id, "rollback")
    root = next(s for s in recording.spans if s.parent_id is None)
    assert root.attributes["logicbundle.outcome"] == "RolledBack"
    assert root.error == "rolled back"


def test_an_operator_restarted_mid_rollout_continues_the_same_trace() -> None:
    canary = contract.RolloutState(
        bundle="pricing", stable=V1, candidate=V2, stage=contract.Everyone(), revision=2
    )
    first = _step(RolloutTraces(Recording()), STEADY, canary, stage="canary", index=0)
    restarted = Recording()
    traces = RolloutTraces(restarted)  # a new process: nothing in memory
    promoted = _step(traces, first, contract.RolloutState(bundle="pricing", stable=V2, revision=3))
    old = contract.parse_traceparent(first.traceparent)
    new = contract.parse_traceparent(promoted.traceparent)
    assert old is not None and new is not None
    assert new.trace_id == old.trace_id
    root = next(s for s in restarted.spans if s.parent_id is None)
    assert root.trace_id == old.trace_id
    assert root.attributes["logicbundle.outcome"] == "Promoted"
