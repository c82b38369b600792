"""The controller's Prometheus path: a query that fails is missing data, never a pass.

Issue 11, defect 1: a metric judged only by ``maxRatioToStable`` passed when the
stable digest's query failed and the candidate's succeeded.  These go through
``_analysis_step`` and a real HTTP server speaking the Prometheus query API.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from logicbundle.controller._reconcile import Runtime, _analysis_step
from logicbundle.distributor import BundleSummary
from tests.controller.test_reconcile import _in_flight_at_internal, runtime  # noqa: F401
from tests.rollout._fixtures import BUNDLE, D1, NS, T0, make_spec


class FakePrometheus:
    """``/api/v1/query``: a vector of ``value`` for each query; 503 for queries naming
    a digest in ``failing``."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.failing: set[str] = set()
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
                fake.queries.append(query)
                if any(digest in query for digest in fake.failing):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [{"metric": {}, "value": [0, str(fake.value)]}],
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus(0.01)
    yield server
    server.close()


def _spec(address: str, **analysis: Any) -> Any:
    return make_spec(
        analysis={
            "provider": "prometheus",
            "prometheus": {"address": address, "timeout": "2s"},
            "interval": "1s",
            "metrics": [
                {
                    "name": "error-ratio",
                    "query": 'errors{digest="{{digest}}"}',
                    "maxRatioToStable": 1.5,
                }
            ],
            **analysis,
        }
    )


def _verdict(rt: Runtime, spec: Any) -> Any:
    status, _ = _in_flight_at_internal()
    verdict = asyncio.run(
        _analysis_step(
            rt,
            namespace=NS,
            name=BUNDLE,
            spec=spec,
            status=status,
            now=T0 + timedelta(minutes=5),
            summary=BundleSummary(),
        )
    )
    assert verdict is not None
    return verdict


def test_both_queries_answered_and_within_the_ratio_pass(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
    prometheus: FakePrometheus,
) -> None:
    verdict = _verdict(runtime[0], _spec(prometheus.address))
    assert verdict.verdict == "Passed", verdict
    assert len(prometheus.queries) == 2


def test_a_failed_stable_query_is_missing_data_and_never_passes(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
    prometheus: FakePrometheus,
) -> None:
    prometheus.failing.add(D1)  # the stable digest's query fails; the candidate's answers
    verdict = _verdict(runtime[0], _spec(prometheus.address))
    assert verdict.verdict == "NoData", verdict
    assert "stable digest's query failed" in verdict.reason
    assert "503" in verdict.reason


def test_prometheus_down_is_missing_data_for_the_candidate_too(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
) -> None:
    verdict = _verdict(runtime[0], _spec("http://127.0.0.1:9"))
    assert verdict.verdict == "NoData", verdict
    assert "candidate's query failed" in verdict.reason


def test_stable_without_data_is_skipped_and_said_or_held_by_policy(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
    prometheus: FakePrometheus,
) -> None:
    prometheus.value = 0.0  # both answer 0: no ratio to judge by
    skipped = _verdict(runtime[0], _spec(prometheus.address))
    assert skipped.verdict == "Passed"
    assert "ratio to stable skipped: stable value is 0" in skipped.reason
    held = _verdict(runtime[0], _spec(prometheus.address, stableNoData="hold"))
    assert held.verdict == "NoData"
    assert "stableNoData: hold" in held.reason
