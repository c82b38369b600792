"""logicbundle.telemetry: the rollout traces the operator and the distributor export.

Off by default, and then free: :func:`tracing_from_env` returns
:data:`NO_TRACING`, whose methods return at once, and nothing of OpenTelemetry
is imported.  It is on when an OTLP endpoint is configured the standard way
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
and neither ``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none`` says
otherwise; the OpenTelemetry SDK then exports over OTLP/HTTP (protobuf), with
every other ``OTEL_*`` variable (headers, timeout, service name, resource
attributes, batch sizes) read by the SDK itself.

Spans are exported with ids that everyone derives the same way
(:mod:`logicbundle.contract._trace`): a rollout's spans are written by
whichever process sees each step end (the operator for its steps, any
distributor replica for a pod's swap), at different times, and still form one
tree.  Every rollout is sampled: one trace per rollout is a few dozen spans
and one per pod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from logicbundle.telemetry._otel import OtelTracing

Attributes = Mapping[str, str | int | float | bool | Sequence[str]]


@dataclass(frozen=True, kw_only=True)
class SpanEvent:
    """Something that happened at one instant inside a span (an analysis verdict)."""

    name: str
    at_ns: int
    attributes: Attributes = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SpanRecord:
    """One finished span, with the ids it was given in advance.

    ``parent_id`` None: the trace's root.  ``error``: the span failed, and why.
    """

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    attributes: Attributes = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    error: str | None = None


class Tracing:
    """Tracing off: every call returns at once (see :func:`tracing_from_env`)."""

    enabled: bool = False

    def export(self, spans: Sequence[SpanRecord]) -> None:
        """Hand finished spans to the exporter (batched; never blocks on the network)."""

    def flush(self, timeout_seconds: float = 5.0) -> bool:
        """Export what is queued; whether it all went out in time."""
        return True

    def shutdown(self) -> None:
        """Export what is queued and stop (at process exit)."""


NO_TRACING: Final = Tracing()


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module doc)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def tracing_from_env(
    service_name: str, environ: Mapping[str, str] | None = None
) -> Tracing | OtelTracing:
    """:data:`NO_TRACING` unless the environment configures an OTLP endpoint.

    ``service_name`` applies unless ``OTEL_SERVICE_NAME`` names another.
    """
    if not configured(environ):
        return NO_TRACING
    from logicbundle.telemetry._otel import OtelTracing  # noqa: PLC0415 - only when on

    return OtelTracing(service_name=service_name)


__all__ = [
    "NO_TRACING",
    "Attributes",
    "SpanEvent",
    "SpanRecord",
    "Tracing",
    "configured",
    "tracing_from_env",
]
