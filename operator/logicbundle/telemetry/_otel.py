"""The OpenTelemetry SDK behind :class:`logicbundle.telemetry.Tracing`, imported only when on.

A span's ids are chosen before the span exists (they are derived, see
:mod:`logicbundle.contract._trace`), so the tracer provider's id generator
hands out the ids set for the span being started, and random ones otherwise.
"""

from __future__ import annotations

import contextvars
import os
import random
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from logicbundle import __version__
from logicbundle.telemetry import SpanRecord, Tracing

_GIVEN: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "logicbundle_span_ids", default=None
)


class _GivenIds(IdGenerator):
    """The ids set in :data:`_GIVEN` for the span being started, else random ones."""

    def __init__(self) -> None:
        self._random = random.SystemRandom()

    def generate_trace_id(self) -> int:
        given = _GIVEN.get()
        return given[0] if given is not None else self._random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        given = _GIVEN.get()
        return given[1] if given is not None else self._random.getrandbits(64) or 1


class OtelTracing(Tracing):
    """Spans exported over OTLP/HTTP by a batching processor (configured by ``OTEL_*``)."""

    enabled = True

    def __init__(self, *, service_name: str) -> None:
        attributes: dict[str, str] = {"service.version": __version__}
        if not os.environ.get("OTEL_SERVICE_NAME"):  # set, it names the service
            attributes[SERVICE_NAME] = service_name
        resource = Resource.create(attributes)
        self._provider = TracerProvider(
            resource=resource, sampler=ALWAYS_ON, id_generator=_GivenIds()
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("logicbundle", __version__)

    def export(self, spans: Sequence[SpanRecord]) -> None:
        for record in spans:
            self._export_one(record)

    def _export_one(self, record: SpanRecord) -> None:
        context = None
        if record.parent_id is not None:
            parent = trace.NonRecordingSpan(
                trace.SpanContext(
                    trace_id=int(record.trace_id, 16),
                    span_id=int(record.parent_id, 16),
                    is_remote=True,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )
            )
            context = trace.set_span_in_context(parent)
        token = _GIVEN.set((int(record.trace_id, 16), int(record.span_id, 16)))
        try:
            span = self._tracer.start_span(
                record.name,
                context=context,
                attributes=dict(record.attributes),
                start_time=record.start_ns,
            )
        finally:
            _GIVEN.reset(token)
        for event in record.events:
            span.add_event(event.name, dict(event.attributes), timestamp=event.at_ns)
        if record.error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, record.error))
        span.end(end_time=max(record.end_ns, record.start_ns))

    def flush(self, timeout_seconds: float = 5.0) -> bool:
        return self._provider.force_flush(int(timeout_seconds * 1000))

    def shutdown(self) -> None:
        self._provider.shutdown()
