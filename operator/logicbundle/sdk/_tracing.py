"""A span event for each activation, when the application traces with OpenTelemetry.

The SDK never imports ``opentelemetry`` itself: only when the application has
already imported ``opentelemetry.trace`` (it traces, so it has configured, or
will configure, a tracer provider) does an activation record the event
``logicbundle.activate`` with the bundle, the digest and the version's module
names (``code.namespace``).  An application without OpenTelemetry pays one
dictionary lookup per activation and nothing per call.

The event goes on the span current in the activating thread when one is
recording; otherwise on a short span of its own (``logicbundle activate``), so
it is not lost.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

INSTRUMENTATION: str = "logicbundle.sdk"
EVENT: str = "logicbundle.activate"


def modules_of(package: str) -> list[str]:
    """The names of the modules loaded of one version (its synthetic package and below)."""
    prefix = package + "."
    return sorted(name for name in list(sys.modules) if name == package or name.startswith(prefix))


def record_activation(
    *, bundle: str, digest: str, candidate: str | None, packages: Sequence[str]
) -> bool:
    """Record the activation as a span event; whether one was recorded."""
    api: Any = sys.modules.get("opentelemetry.trace")
    if api is None:
        return False
    modules = [name for package in packages for name in modules_of(package)]
    attributes: dict[str, str | list[str]] = {
        "logicbundle.bundle": bundle,
        "logicbundle.digest": digest,
        "code.namespace": packages[0] if packages else "",
        "logicbundle.modules": modules,
    }
    if candidate is not None:
        attributes["logicbundle.candidate"] = candidate
    try:
        span = api.get_current_span()
        if span.is_recording():
            span.add_event(EVENT, attributes)
            return True
        tracer = api.get_tracer(INSTRUMENTATION)
        with tracer.start_as_current_span("logicbundle activate", attributes=attributes) as own:
            own.add_event(EVENT, attributes)
            return bool(own.is_recording())
    except Exception:  # the application's tracing never fails an activation
        return False
