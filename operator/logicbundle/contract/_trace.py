"""The trace context a rollout hands to every pod: W3C ``traceparent``, and its span ids.

One rollout of a digest is one trace.  The operator picks the trace id when the
rollout starts and publishes it with the rollout state (``traceparent``); the
``parent-id`` part names the span of the current *phase* (a stage, the
promotion or the rollback), so each pod's swap becomes a child of the phase
that moved it.  Every span id of a rollout is derived from the trace id and
the phase's name (:func:`phase_span_id`), never remembered: a restarted
operator, any distributor replica and the agent agree on them without
talking, and the phase span itself is exported when the phase ends, with the
id the pods already used as their parent.

Standard library only: the agent and the distributor read it, the controller
writes it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

_TRACEPARENT: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED: Final = 0x01


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent`` (version 00): ids as lower-case hex."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"


def parse_traceparent(value: object) -> TraceParent | None:
    """``value`` read as a version-00 ``traceparent``; None when it is not one.

    All-zero trace or span ids are invalid (W3C Trace Context, section 3.2.2).
    """
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceParent(trace_id=trace_id, span_id=span_id, flags=int(flags, 16))


def _hex(material: str, size: int) -> str:
    digest = hashlib.sha256(material.encode()).hexdigest()[: size * 2]
    # an all-zero id is invalid; the chance is 2**-64, but never hand one out
    return digest if digest.strip("0") else "0" * (size * 2 - 1) + "1"


def rollout_trace_id(*, uid: str, digest: str, revision: int) -> str:
    """The trace id of the rollout of ``digest`` by LogicBundle ``uid`` begun at ``revision``."""
    return _hex(f"logicbundle-trace\n{uid}\n{digest}\n{revision}", 16)


def phase_span_id(trace_id: str, phase: str) -> str:
    """The span id of ``phase`` (``rollout``, ``stage/<i>``, ``promotion``, ``rollback``...)."""
    return _hex(f"logicbundle-span\n{trace_id}\n{phase}", 8)


def swap_span_id(traceparent: str, *, pod_uid: str, bundle: str, digest: str, at: str) -> str:
    """The span id of one pod's swap: the same whichever distributor replica exports it."""
    return _hex(f"logicbundle-swap\n{traceparent}\n{pod_uid}\n{bundle}\n{digest}\n{at}", 8)
