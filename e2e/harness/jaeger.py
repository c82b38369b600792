"""Jaeger v2 (all-in-one, in-memory storage): the trace backend of the tracing suite.

Built once from the Go module proxy (:data:`e2e.harness.build.JAEGER`) and
started with a configuration file of its own: an OTLP/HTTP receiver, the
in-memory store and the query API, each on a free port of 127.0.0.1 (nothing
else is opened: no metrics endpoint, no other receiver).  Stopped by its pid.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from e2e.harness import build
from e2e.harness.proc import HarnessError, Process, free_port, http_status, wait_for


def jaeger_config(
    *, otlp_port: int, query_port: int, grpc_port: int, health_port: int
) -> dict[str, Any]:
    """The collector-style configuration Jaeger v2 reads (``--config``)."""
    storage = "memory"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
        },
        "extensions": {
            "jaeger_query": {
                "storage": {"traces": storage},
                "http": {"endpoint": f"127.0.0.1:{query_port}"},
                "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
            },
            "jaeger_storage": {"backends": {storage: {"memory": {"max_traces": 10000}}}},
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"127.0.0.1:{health_port}"}},
        },
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{otlp_port}"}}}},
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": storage}},
    }


@dataclass
class Jaeger:
    """A running Jaeger: ``otlp_url`` receives spans, ``query_url`` answers ``/api/traces``."""

    otlp_url: str
    query_url: str
    process: Process

    @classmethod
    def start(cls, run_dir: Path) -> Jaeger:
        binary = build.JAEGER.path("jaeger")
        run_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "otlp_port": free_port(),
            "query_port": free_port(),
            "grpc_port": free_port(),
            "health_port": free_port(),
        }
        config = run_dir / "jaeger.yaml"
        config.write_text(yaml.safe_dump(jaeger_config(**ports)))
        process = Process("jaeger", [binary, "--config", config], run_dir=run_dir)
        jaeger = cls(
            otlp_url=f"http://127.0.0.1:{ports['otlp_port']}",
            query_url=f"http://127.0.0.1:{ports['query_port']}",
            process=process,
        )
        health = f"http://127.0.0.1:{ports['health_port']}/status"
        try:
            wait_for(
                lambda: http_status(health) == 200,
                what="jaeger healthy",
                timeout=60,
                watch=[process],
            )
            wait_for(
                lambda: http_status(f"{jaeger.query_url}/api/services") == 200,
                what="jaeger query API",
                timeout=60,
                watch=[process],
            )
        except BaseException:
            process.stop()
            raise
        return jaeger

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans Jaeger holds of ``trace_id`` (``/api/traces/<id>``); empty: none yet."""
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/traces/{trace_id}", timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise HarnessError(f"jaeger /api/traces/{trace_id}: HTTP {exc.code}") from None
        data = body.get("data") or []
        return list(data[0]["spans"]) if data else []

    def traces(self, service: str) -> list[dict[str, Any]]:
        """Every trace with a span of ``service`` (``/api/traces?service=``)."""
        url = f"{self.query_url}/api/traces?service={service}&limit=100"
        with urllib.request.urlopen(url, timeout=10) as r:
            return list(json.loads(r.read()).get("data") or [])
