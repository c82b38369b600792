"""An activation is a span event when the application traces with OpenTelemetry, else free.

Each case runs in a fresh interpreter: whether ``opentelemetry`` is imported
is the point, and a tracer provider can be set once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, sys, tempfile
from pathlib import Path
from logicbundle.sdk import LogicHost
from tests.sdk.conftest import BUNDLE, IFACE, simple, write_bundle_at
root = Path(tempfile.mkdtemp())
one = write_bundle_at(root, simple("one"))
host = LogicHost(name=BUNDLE, interface=IFACE, root=root)
"""

WITHOUT = (
    PRELUDE
    + """
host.activate(one.digest, one.path)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")))
"""
)

WITH = (
    """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""
    + PRELUDE
    + """
tracer = trace.get_tracer("app")
with tracer.start_as_current_span("request"):
    host.activate(one.digest, one.path)
two = write_bundle_at(root, simple("two"))
host.activate(two.digest, two.path)  # no span current: a span of its own
out = []
for span in exporter.get_finished_spans():
    for event in span.events:
        out.append({"span": span.name, "event": event.name, **dict(event.attributes)})
print(json.dumps({"events": out, "digests": [one.digest, two.digest]}, default=list))
"""
)


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_without_opentelemetry_imported_an_activation_imports_none_of_it() -> None:
    assert json.loads(_run(WITHOUT)) == []


def test_an_activation_is_a_span_event_with_the_bundle_digest_and_modules() -> None:
    found = json.loads(_run(WITH))
    first_digest, second_digest = found["digests"]
    first, second = found["events"]
    assert first["span"] == "request"  # on the application's own span
    assert first["event"] == "logicbundle.activate"
    assert first["logicbundle.bundle"] == "calc"
    assert first["logicbundle.digest"] == first_digest
    assert first["code.namespace"].startswith("_logicbundle_calc_")
    assert f"{first['code.namespace']}.logic" in first["logicbundle.modules"]
    assert second["span"] == "logicbundle activate"
    assert second["logicbundle.digest"] == second_digest
