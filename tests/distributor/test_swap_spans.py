"""A pod's reported swap becomes a span of its rollout's trace, exported once."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from logicbundle import contract
from logicbundle.distributor import PodIdentity, Report, SwapSpans, swap_spans
from logicbundle.telemetry import SpanRecord, Tracing

V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64
TRACE = "ab" * 16
PHASE = contract.phase_span_id(TRACE, "stage/1")
TRACEPARENT = f"00-{TRACE}-{PHASE}-01"
POD = PodIdentity(namespace="ns", name="web-1", uid="uid-1", service_account="default")


class Recording(Tracing):
    enabled = True

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []

    def export(self, spans: Sequence[SpanRecord]) -> None:
        self.spans.extend(spans)


def _report(*, traceparent: str | None = TRACEPARENT, outcome: str = "activated") -> Report:
    swap = {
        "to": V2,
        "from": V1,
        "outcome": outcome,
        "at": "2026-12-06T10:00:00.000000Z",
        "fetchMs": 10.0,
        "unpackMs": 5.0,
        "swapMs": 1.0,
        "notifyMs": 2.0,
        "healthMs": 20.0,
        "totalMs": 40.0,
    }
    if traceparent is not None:
        swap["traceparent"] = traceparent
    return Report.model_validate({"bundles": {"pricing": {"active": V2, "lastSwap": swap}}})


def test_a_swap_is_a_span_under_the_phase_that_moved_the_pod_with_one_child_per_step() -> None:
    swap = _report().bundles["pricing"].last_swap
    assert swap is not None
    spans = swap_spans(POD, "pricing", swap, received_ns=2_000_000_000_000_000_000)
    top, *steps = spans
    assert top.name == "swap ns/web-1"
    assert (top.trace_id, top.parent_id) == (TRACE, PHASE)
    assert top.end_ns - top.start_ns == 40_000_000
    assert top.attributes["k8s.pod.name"] == "web-1"
    assert top.attributes["logicbundle.digest"] == V2
    assert [s.name for s in steps] == ["fetch", "unpack", "swap", "notify", "health check", "ack"]
    assert all(s.parent_id == top.span_id for s in steps)
    # the steps follow one another from the swap's start
    assert steps[0].start_ns == top.start_ns
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(steps[:5]))


def test_a_report_sent_again_exports_nothing_new_and_an_untraced_swap_nothing() -> None:
    recording = Recording()
    swaps = SwapSpans(recording)
    assert swaps.observe(POD, _report(), received_ns=0) == 7
    assert swaps.observe(POD, _report(), received_ns=0) == 0
    assert swaps.observe(POD, _report(traceparent=None), received_ns=0) == 0
    assert len(recording.spans) == 7


def test_a_failed_swap_is_an_error_span_without_an_ack() -> None:
    swap = _report(outcome="rolledBack").bundles["pricing"].last_swap
    assert swap is not None
    spans = swap_spans(POD, "pricing", swap, received_ns=0)
    assert spans[0].error == "swap rolledBack"
    assert "ack" not in [s.name for s in spans]


def test_tracing_off_exports_nothing() -> None:
    assert SwapSpans().observe(POD, _report(), received_ns=0) == 0
