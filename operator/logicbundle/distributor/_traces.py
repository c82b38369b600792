"""Each pod's swap as a span of its rollout's trace, built from the agent's report.

The agent sends nothing to a trace backend (it stays small, and a pod needs no
route to one): it reports its last swap as it always has (when it began, how
long the fetch, unpack, swap, notify and health check took, the outcome) plus
the ``traceparent`` of the target that caused it.  The replica that receives
the report exports the swap as a span under that parent, with a child span for
each step and one for the acknowledgement (from the end of the swap to the
report's arrival).  The swap span's id is derived from the report
(:func:`logicbundle.contract.swap_span_id`), so a report sent again, or to
another replica, exports the same span, never a second one with a new id;
each replica also remembers the last swap it exported per pod and bundle and
skips it when reported again.
"""

from __future__ import annotations

import time
from datetime import datetime

from logicbundle import contract
from logicbundle.distributor._models import PodIdentity, Report, SwapTimings
from logicbundle.telemetry import NO_TRACING, SpanRecord, Tracing

MAX_REMEMBERED = 100_000
"""Pods and bundles whose last exported swap a replica remembers (a pod it forgot whose
report comes again exports the same span id once more: the backend keeps one)."""

_STEPS = (
    ("fetch", "fetch_ms"),
    ("unpack", "unpack_ms"),
    ("swap", "swap_ms"),
    ("notify", "notify_ms"),
    ("health check", "health_ms"),
)


class SwapSpans:
    """Exports the swaps the agents report (nothing when tracing is off)."""

    def __init__(self, tracing: Tracing | None = None) -> None:
        self.tracing = tracing if tracing is not None else NO_TRACING
        self._exported: dict[tuple[str, str], str] = {}

    def observe(self, identity: PodIdentity, report: Report, *, received_ns: int) -> int:
        """Export the new swaps of ``report``; how many spans were exported."""
        if not self.tracing.enabled:
            return 0
        spans: list[SpanRecord] = []
        for bundle, entry in report.bundles.items():
            swap = entry.last_swap
            if swap is None or swap.traceparent is None or swap.at is None:
                continue
            key = (identity.uid, bundle)
            mark = f"{swap.traceparent}|{swap.to}|{swap.at.isoformat()}|{swap.outcome}"
            if self._exported.get(key) == mark:
                continue
            self._exported.pop(key, None)
            self._exported[key] = mark  # newest last: the oldest go first past the cap
            if len(self._exported) > MAX_REMEMBERED:
                del self._exported[next(iter(self._exported))]
            spans += swap_spans(identity, bundle, swap, received_ns=received_ns)
        if spans:
            self.tracing.export(spans)
        return len(spans)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def swap_spans(
    identity: PodIdentity, bundle: str, swap: SwapTimings, *, received_ns: int | None = None
) -> list[SpanRecord]:
    """The spans of one reported swap: the swap, each of its steps, the acknowledgement."""
    parent = contract.parse_traceparent(swap.traceparent)
    if parent is None or swap.at is None:
        return []
    received = received_ns if received_ns is not None else time.time_ns()
    start = _ns(swap.at)
    total = int((swap.total_ms or 0.0) * 1_000_000)
    end = start + total
    span_id = contract.swap_span_id(
        str(parent),
        pod_uid=identity.uid,
        bundle=bundle,
        digest=swap.to,
        at=swap.at.isoformat(),
    )
    failed = swap.outcome != "activated"
    spans = [
        SpanRecord(
            name=f"swap {identity.namespace}/{identity.name}",
            trace_id=parent.trace_id,
            span_id=span_id,
            parent_id=parent.span_id,
            start_ns=start,
            end_ns=max(end, start),
            attributes={
                "k8s.namespace.name": identity.namespace,
                "k8s.pod.name": identity.name,
                "k8s.pod.uid": identity.uid,
                "logicbundle.bundle": bundle,
                "logicbundle.digest": swap.to,
                "logicbundle.previous_digest": swap.from_ or "",
                "logicbundle.outcome": swap.outcome,
            },
            error=f"swap {swap.outcome}" if failed else None,
        )
    ]
    cursor = start
    for index, (name, attribute) in enumerate(_STEPS):
        took = getattr(swap, attribute)
        if took is None:
            continue
        length = int(took * 1_000_000)
        spans.append(
            SpanRecord(
                name=name,
                trace_id=parent.trace_id,
                span_id=contract.phase_span_id(span_id, f"step/{index}"),
                parent_id=span_id,
                start_ns=cursor,
                end_ns=cursor + length,
            )
        )
        cursor += length
    if not failed:
        spans.append(
            SpanRecord(
                name="ack",
                trace_id=parent.trace_id,
                span_id=contract.phase_span_id(span_id, "ack"),
                parent_id=span_id,
                start_ns=end,
                end_ns=max(end, received),
                attributes={"logicbundle.ack": "report received by the distributor"},
            )
        )
    return spans
