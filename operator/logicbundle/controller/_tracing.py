"""One trace per rollout of a digest: the operator's half (see ``docs/tracing.md``).

:meth:`RolloutTraces.stamp` writes the rollout's trace context into the state
about to be published (``traceparent``, its parent id the current phase's
span), so every pod reports its swap under the phase that moved it; the
distributor exports those swap spans.  :meth:`RolloutTraces.observe` exports
the operator's spans as each one ends: the source check that found the digest
(resolve, verify with the signer as attributes, cache), each stage with its
analysis verdicts as span events, and the promotion or the rollback, which
ends the trace's root span.

Ids are derived (:mod:`logicbundle.contract._trace`), so a restarted operator
continues the same trace; what it forgets is only the start of the phase in
flight (it then starts at the restart) and the verdicts seen before.  With
tracing off, :meth:`stamp` publishes no ``traceparent`` and nothing is kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from logicbundle import contract
from logicbundle.api.v1alpha1 import (
    AnalysisStatus,
    LogicBundleSpec,
    LogicBundleStatus,
    TargetState,
)
from logicbundle.controller._source import SourceOutcome
from logicbundle.telemetry import NO_TRACING, SpanEvent, SpanRecord, Tracing

BundleKey = tuple[str, str]

ROLLOUT_PHASE = "rollout"
PROMOTION_PHASE = "promotion"
ROLLBACK_PHASE = "rollback"


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000_000)


@dataclass(frozen=True, kw_only=True)
class SourceSpan:
    """The last check of a bundle's source, as a span: when, and who signed."""

    start_ns: int
    end_ns: int
    ref: str
    digest: str
    identity: str | None
    issuer: str | None
    method: str | None
    error: str | None


def source_span(spec: LogicBundleSpec, outcome: SourceOutcome, started_ns: int) -> SourceSpan:
    """The span of a source check that just ended (``outcome``), begun at ``started_ns``."""
    verified = outcome.verified
    return SourceSpan(
        start_ns=started_ns,
        end_ns=time.time_ns(),
        ref=spec.source.ref,
        digest=outcome.digest,
        identity=verified.identity if verified is not None else None,
        issuer=verified.issuer if verified is not None else None,
        method=str(verified.method) if verified is not None else None,
        error=outcome.error.message if outcome.error is not None else None,
    )


@dataclass(kw_only=True)
class _Trace:
    trace_id: str
    digest: str
    start_ns: int
    phase: str
    phase_start_ns: int
    phase_name: str
    events: list[SpanEvent] = field(default_factory=list)
    measured: str | None = None
    closed: bool = False


def phase_of(
    *, before: contract.RolloutState | None, after: contract.RolloutState, stage_index: int | None
) -> tuple[str, str | None]:
    """The phase ``after`` is in, and the digest whose rollout it belongs to when it starts one.

    A candidate with a stage: ``stage/<index>``.  No candidate: ``promotion``
    when the stable digest is the candidate just published (or a first
    digest), ``rollback`` when a candidate was dropped for the old stable.
    """
    previous = before.candidate if before is not None else None
    if after.candidate is not None and after.stage is not None:
        new = after.candidate if previous != after.candidate else None
        return f"stage/{stage_index or 0}", new
    if previous is not None:
        return (PROMOTION_PHASE if after.stable == previous else ROLLBACK_PHASE), None
    if after.stable is not None and (before is None or before.stable != after.stable):
        return PROMOTION_PHASE, after.stable  # a digest straight to stable: its own rollout
    return "", None


class RolloutTraces:
    """The traces of the rollouts this operator runs (per bundle, while it is in flight)."""

    def __init__(self, tracing: Tracing | None = None) -> None:
        self.tracing = tracing if tracing is not None else NO_TRACING
        self._clock_ns = time.time_ns
        self._open: dict[BundleKey, _Trace] = {}
        self._source: dict[BundleKey, SourceSpan] = {}

    @property
    def enabled(self) -> bool:
        return self.tracing.enabled

    def forget(self, key: BundleKey) -> None:
        self._open.pop(key, None)
        self._source.pop(key, None)

    def source_checked(self, key: BundleKey, check: SourceSpan) -> None:
        """Remember the last source check (a span of the rollout it starts, if it starts one)."""
        if self.enabled:
            self._source[key] = check

    def stamp(
        self,
        *,
        uid: str,
        before: contract.RolloutState | None,
        after: contract.RolloutState | None,
        status: LogicBundleStatus,
    ) -> tuple[contract.RolloutState | None, LogicBundleStatus]:
        """``after`` and ``status`` with the rollout's ``traceparent`` (unchanged when off)."""
        if not self.enabled or after is None:
            return after, status
        phase, starts = phase_of(before=before, after=after, stage_index=status.stage_index)
        old = contract.parse_traceparent(before.traceparent if before is not None else None)
        if starts is not None or old is None:
            if not phase:
                return after, status  # steady, and never traced: nothing to say
            digest = starts or after.candidate or after.stable or ""
            trace_id = contract.rollout_trace_id(uid=uid, digest=digest, revision=after.revision)
        else:
            trace_id = old.trace_id
        if not phase:  # steady state: the trace of the last rollout stays, as it was
            traceparent = str(old) if old is not None else None
        else:
            span = contract.phase_span_id(trace_id, phase)
            traceparent = str(contract.TraceParent(trace_id=trace_id, span_id=span))
        if traceparent == after.traceparent:
            return after, status
        state = replace(after, traceparent=traceparent)
        target = TargetState.model_validate(contract.state_to_json(state))
        return state, status.model_copy(update={"target_state": target})

    def observe(
        self,
        key: BundleKey,
        *,
        before: contract.RolloutState | None,
        after: contract.RolloutState | None,
        status: LogicBundleStatus,
        spec_ref: str,
        judged: AnalysisStatus | None = None,
    ) -> None:
        """Export the spans that ended with this reconcile (call after publishing ``after``).

        ``judged`` is the analysis as this reconcile's verdict left it (the
        :class:`~logicbundle.rollout.Decision`'s): when that verdict let the stage
        end in the same reconcile, ``status.analysis`` is already the next stage's,
        and the verdict is noted on the stage it ended from ``judged``.
        """
        if not self.enabled or after is None:
            return
        parent = contract.parse_traceparent(after.traceparent)
        if parent is None:
            return
        now = self._clock_ns()
        phase, starts = phase_of(before=before, after=after, stage_index=status.stage_index)
        current = self._open.get(key)
        spans: list[SpanRecord] = []
        if current is not None and current.trace_id != parent.trace_id:
            spans += self._end(key, current, now=now, outcome="Superseded")
            current = None
        if current is None and phase and not self._closed_trace(key, parent.trace_id):
            current = self._begin(key, parent.trace_id, after, starts, now=now, spans=spans)
        if current is None or current.closed:
            self._export(spans)
            return
        moving = bool(phase) and phase != current.phase
        about = status.analysis.stage if status.analysis is not None else None
        if not (moving and about is not None and about == status.stage):
            self._note_analysis(current, status.analysis, now=now)  # the phase ending's verdict
        elif judged is not None and judged.stage != about:
            self._note_analysis(current, judged, now=now)  # its verdict ended it just now
        if moving:
            if current.phase:
                spans.append(self._phase_span(current, end_ns=now))
            current.phase, current.phase_start_ns = phase, now
            current.phase_name = status.stage or phase
            current.events = []
            self._note_analysis(current, status.analysis, now=now)  # already about the new one
        if phase in (PROMOTION_PHASE, ROLLBACK_PHASE):
            spans.append(self._phase_span(current, end_ns=now))
            outcome = "Promoted" if phase == PROMOTION_PHASE else "RolledBack"
            spans += self._end(key, current, now=now, outcome=outcome, spec_ref=spec_ref)
        self._export(spans)

    # -- internals ----------------------------------------------------------------------

    def _closed_trace(self, key: BundleKey, trace_id: str) -> bool:
        current = self._open.get(key)
        return current is not None and current.trace_id == trace_id and current.closed

    def _begin(
        self,
        key: BundleKey,
        trace_id: str,
        state: contract.RolloutState,
        starts: str | None,
        *,
        now: int,
        spans: list[SpanRecord],
    ) -> _Trace:
        digest = starts or state.candidate or state.stable or ""
        check = self._source.get(key)
        start = now
        root = contract.phase_span_id(trace_id, ROLLOUT_PHASE)
        if starts is not None and check is not None and check.digest == digest:
            start = min(now, check.start_ns)
            spans.append(_source_span(check, trace_id=trace_id, parent=root))
        trace = _Trace(
            trace_id=trace_id,
            digest=digest,
            start_ns=start,
            phase="",
            phase_start_ns=now,
            phase_name="",
        )
        self._open[key] = trace
        return trace

    def _note_analysis(self, trace: _Trace, analysis: AnalysisStatus | None, *, now: int) -> None:
        if analysis is None or analysis.verdict is None or analysis.last_measured_at is None:
            return
        stamp = analysis.last_measured_at.isoformat()
        if stamp == trace.measured:
            return
        trace.measured = stamp
        attributes: dict[str, str | int | float | bool] = {
            "logicbundle.verdict": analysis.verdict,
            "logicbundle.stage": analysis.stage or "",
            "logicbundle.measurements": analysis.measurements,
        }
        for metric in analysis.metrics:
            attributes[f"logicbundle.metric.{metric.name}.verdict"] = metric.verdict
            if metric.candidate is not None:
                attributes[f"logicbundle.metric.{metric.name}.candidate"] = metric.candidate
            if metric.stable is not None:
                attributes[f"logicbundle.metric.{metric.name}.stable"] = metric.stable
        at = _ns(analysis.last_measured_at) or now
        trace.events.append(SpanEvent(name="analysis", at_ns=at, attributes=attributes))

    def _phase_span(self, trace: _Trace, *, end_ns: int) -> SpanRecord:
        phase = trace.phase or ROLLOUT_PHASE
        attributes: dict[str, str | int | float | bool] = {"logicbundle.digest": trace.digest}
        if phase.startswith("stage/"):
            attributes["logicbundle.stage"] = trace.phase_name
            attributes["logicbundle.stage_index"] = int(phase.split("/", 1)[1])
            name = f"stage {trace.phase_name}"
        else:
            name = phase
        failed = any(e.attributes.get("logicbundle.verdict") == "Failed" for e in trace.events)
        return SpanRecord(
            name=name,
            trace_id=trace.trace_id,
            span_id=contract.phase_span_id(trace.trace_id, phase),
            parent_id=contract.phase_span_id(trace.trace_id, ROLLOUT_PHASE),
            start_ns=trace.phase_start_ns,
            end_ns=end_ns,
            attributes=attributes,
            events=tuple(trace.events),
            error="analysis failed" if failed else None,
        )

    def _end(
        self, key: BundleKey, trace: _Trace, *, now: int, outcome: str, spec_ref: str = ""
    ) -> list[SpanRecord]:
        spans: list[SpanRecord] = []
        if outcome == "Superseded" and trace.phase and not trace.closed:
            spans.append(self._phase_span(trace, end_ns=now))
        if trace.closed:
            return spans
        trace.closed = True
        namespace, name = key
        attributes: Mapping[str, str | int | float | bool] = {
            "k8s.namespace.name": namespace,
            "logicbundle.bundle": name,
            "logicbundle.digest": trace.digest,
            "logicbundle.outcome": outcome,
            **({"logicbundle.ref": spec_ref} if spec_ref else {}),
        }
        spans.append(
            SpanRecord(
                name=f"rollout {namespace}/{name}",
                trace_id=trace.trace_id,
                span_id=contract.phase_span_id(trace.trace_id, ROLLOUT_PHASE),
                parent_id=None,
                start_ns=trace.start_ns,
                end_ns=now,
                attributes=attributes,
                error="rolled back" if outcome == "RolledBack" else None,
            )
        )
        return spans

    def _export(self, spans: list[SpanRecord]) -> None:
        if spans:
            self.tracing.export(spans)


def _source_span(check: SourceSpan, *, trace_id: str, parent: str) -> SpanRecord:
    attributes: dict[str, str | int | float | bool] = {
        "logicbundle.ref": check.ref,
        "logicbundle.digest": check.digest,
    }
    if check.identity is not None:
        attributes["logicbundle.signer.identity"] = check.identity
    if check.issuer is not None:
        attributes["logicbundle.signer.issuer"] = check.issuer
    if check.method is not None:
        attributes["logicbundle.signer.method"] = check.method
    return SpanRecord(
        name="resolve, verify and cache",
        trace_id=trace_id,
        span_id=contract.phase_span_id(trace_id, "source"),
        parent_id=parent,
        start_ns=check.start_ns,
        end_ns=check.end_ns,
        attributes=attributes,
        error=check.error,
    )
