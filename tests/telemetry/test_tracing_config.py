"""Tracing is off unless the OTEL_* variables configure an endpoint, and then free."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from logicbundle.telemetry import NO_TRACING, SpanEvent, SpanRecord, configured, tracing_from_env

ENDPOINT = "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
    ],
)
def test_tracing_is_on_only_with_an_otlp_endpoint(environ: dict[str, str], on: bool) -> None:
    assert configured(environ) is on


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    code = (
        "import sys; from logicbundle.telemetry import tracing_from_env, NO_TRACING; "
        "import logicbundle.controller._tracing, logicbundle.distributor; "
        "assert tracing_from_env('x', {}) is NO_TRACING; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
    assert tracing_from_env("x", {}) is NO_TRACING


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    """A local OTLP/HTTP endpoint that keeps every request body."""
    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
    thread.join()


def test_spans_are_exported_over_otlp_with_the_ids_they_were_given(
    collector: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = collector
    monkeypatch.setenv("OTEL_SERVICE_NAME", "probe")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    tracing = tracing_from_env("ignored")
    assert tracing.enabled
    now = time.time_ns()
    tracing.export(
        [
            SpanRecord(
                name="stage canary",
                trace_id="a" * 32,
                span_id="b" * 16,
                parent_id="c" * 16,
                start_ns=now - 1000,
                end_ns=now,
                attributes={"logicbundle.stage": "canary"},
                events=(SpanEvent(name="analysis", at_ns=now - 500, attributes={"v": "Passed"}),),
                error="analysis failed",
            )
        ]
    )
    assert tracing.flush(10)
    tracing.shutdown()
    request = ExportTraceServiceRequest()
    request.ParseFromString(b"".join(bodies[:1]))
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "probe"
    (span,) = resource_spans.scope_spans[0].spans
    assert (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex()) == (
        "a" * 32,
        "b" * 16,
        "c" * 16,
    )
    assert span.start_time_unix_nano == now - 1000 and span.end_time_unix_nano == now
    assert [e.name for e in span.events] == ["analysis"]
    assert span.status.code == 2  # ERROR
