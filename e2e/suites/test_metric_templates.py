"""Metric templates against a real Prometheus that demands credentials (issue 13 part 5).

The real operator, agents and apps, and Debian's Prometheus scraping the apps
with basic auth turned on (``--web.config.file``, a bcrypt hash).  A
LogicBundle judges its candidate by two templated metrics:

- ``errors``: a ``LogicBundleMetricTemplate`` that asks Prometheus itself with
  basic auth from a Secret;
- ``calls``: a ``ClusterLogicBundleMetricTemplate`` that asks through a small
  reverse proxy checking a bearer token (Prometheus has no bearer-token
  authentication of its own; a proxy such as kube-rbac-proxy is what checks
  one in front of it), with the token from a Secret.

First the basic-auth Secret holds a wrong password: the stage holds,
``Reconciling`` says the query was refused (HTTP 401), without the password
anywhere (conditions, events, the operator's log).  Then the Secret is fixed
and the rollout finishes on the real figures.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import KeyPair, Operator, condition, get_bundle, wait_condition
from e2e.harness.proc import HarnessError, http_status, wait_for
from e2e.harness.services import Prometheus, Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    INTERNAL,
    digests,
    fleet,
    install,
    key,
    move_to,
    operator,
    ref,
)
from logicbundle.api import names

USER = "logicbundle"
PASSWORD = "e2e-Pr0metheus-pa55word"
WRONG = "e2e-wrong-pa55word"
TOKEN = "e2e-bearer-token-0123456789"

ERRORS = (
    'sum(rate(logicbundle_sdk_call_errors_total{bundle="{{bundle}}",digest="{{digest}}",'
    'role="{{args.role}}"}[{{args.window}}])) / sum(rate(logicbundle_sdk_calls_total{'
    'bundle="{{bundle}}",digest="{{digest}}",role="{{args.role}}"}[{{args.window}}]))'
)
CALLS = 'sum(rate(logicbundle_sdk_calls_total{bundle="{{bundle}}",digest="{{digest}}"}[15s]))'


class BearerProxy:
    """Forwards ``GET`` to Prometheus (with its basic auth) for requests bearing ``token``."""

    def __init__(self, prometheus: Prometheus, token: str) -> None:
        assert prometheus.basic_auth is not None
        upstream = "Basic " + base64.b64encode(":".join(prometheus.basic_auth).encode()).decode()
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {token}":
                    proxy.refused += 1
                    self._answer(401, b"")
                    return
                request = urllib.request.Request(prometheus.url + self.path)
                request.add_header("Authorization", upstream)
                try:
                    with urllib.request.urlopen(request, timeout=10) as resp:
                        self._answer(resp.status, resp.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def start_auth_prometheus(
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Callable[[], Prometheus]]:
    """Start Prometheus with basic auth, scraping the fleet's apps every second.

    A function: the test starts it once the fleet's pods exist.
    """
    started: list[Prometheus] = []

    def start() -> Prometheus:
        targets = [f"127.0.0.1:{p.app_port}" for p in fleet.pods]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "apps", "static_configs": [{"targets": targets}]}],
        }
        server = Prometheus.start(
            tmp_path / "prometheus", config=config, basic_auth=(USER, PASSWORD)
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def cluster_template(cluster: Cluster, namespace: str) -> Iterator[str]:
    """The name of this test's ClusterLogicBundleMetricTemplate, deleted afterwards."""
    name = f"calls-{namespace}"[:63].rstrip("-")
    yield name
    with contextlib.suppress(HarnessError):  # never created: the test failed before
        cluster.request(
            "DELETE", f"/apis/{names.API_VERSION}/{names.CLUSTER_TEMPLATE_PLURAL}/{name}"
        )


def _create(cluster: Cluster, namespace: str | None, plural: str, body: dict[str, Any]) -> None:
    """POST ``body`` (through the REST API: kubectl's discovery cache may predate the CRDs)."""
    group = "/api/v1" if plural == "secrets" else f"/apis/{names.API_VERSION}"
    where = f"/namespaces/{namespace}" if namespace else ""
    cluster.request("POST", f"{group}{where}/{plural}", body)


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def _event_messages(cluster: Cluster, namespace: str) -> list[tuple[str, str]]:
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [(e["reason"], e.get("message", "")) for e in items]


def test_templates_with_basic_auth_and_a_bearer_token_judge_the_rollout_and_a_wrong_password_holds(
    cluster: Cluster,
    registry: Registry,
    operator: Operator,  # noqa: F811
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    start_auth_prometheus: Callable[[], Prometheus],
    cluster_template: str,
) -> None:
    manifest = install(cluster, fleet, registry, key, digests)
    server = start_auth_prometheus()
    assert http_status(f"{server.url}/api/v1/query?query=up") == 401  # auth is on
    proxy = BearerProxy(server, TOKEN)
    try:
        ns = fleet.namespace
        _create(
            cluster, ns, "secrets", _secret("prom-basic", {"username": USER, "password": WRONG})
        )
        _create(cluster, ns, "secrets", _secret("prom-token", {"token": TOKEN}))
        _create(
            cluster,
            ns,
            names.TEMPLATE_PLURAL,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.TEMPLATE_KIND,
                "metadata": {"name": "error-ratio"},
                "spec": {
                    "query": ERRORS,
                    "args": [{"name": "role"}, {"name": "window", "default": "15s"}],
                    "prometheus": {
                        "address": server.url,
                        "timeout": "3s",
                        "basicAuthSecretRef": {"name": "prom-basic"},
                    },
                },
            },
        )
        _create(
            cluster,
            None,
            names.CLUSTER_TEMPLATE_PLURAL,
            {
                "apiVersion": names.API_VERSION,
                "kind": names.CLUSTER_TEMPLATE_KIND,
                "metadata": {"name": cluster_template},
                "spec": {
                    "query": CALLS,
                    "prometheus": {
                        "address": proxy.url,
                        "timeout": "3s",
                        "bearerTokenSecretRef": {"name": "prom-token"},
                    },
                },
            },
        )
        manifest["spec"]["rollout"] = {
            "stages": [
                {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": "5s"},
                {"name": "everyone", "all": True},
            ],
            "analysis": {
                "interval": "2s",
                "metrics": [
                    {
                        "name": "errors",
                        "templateRef": {"name": "error-ratio"},
                        "templateArgs": {"role": "primary"},
                        "max": 0.05,
                    },
                    {
                        "name": "calls",
                        "templateRef": {
                            "kind": names.CLUSTER_TEMPLATE_KIND,
                            "name": cluster_template,
                        },
                        "min": 0.001,
                    },
                ],
            },
        }
        with Traffic(fleet):
            stable = (
                ERRORS.replace("{{bundle}}", "pricing")
                .replace("{{digest}}", digests["v1"])
                .replace("{{args.role}}", "primary")
                .replace("{{args.window}}", "15s")
            )
            wait_for(
                lambda: server.query(stable)["result"],
                what="the stable digest's error ratio in the authenticated Prometheus",
                timeout=90,
            )
            move_to(cluster, fleet, manifest, ref(registry, "v2"))

            # The wrong password: refused, said, never a pass, never shown.
            wait_condition(
                cluster, ns, "pricing", "Reconciling", "True", reason="InsufficientData",
                timeout=120,
            )  # fmt: skip
            wait_for(
                lambda: (
                    "HTTP 401" in str(condition(get_bundle(cluster, ns, "pricing"), "Reconciling"))
                ),
                what="Reconciling to say the query was refused",
                timeout=60,
            )
            obj = get_bundle(cluster, ns, "pricing")
            message = condition(obj, "Reconciling")["message"]  # type: ignore[index]
            assert "refused the query: HTTP 401 Unauthorized" in message, message
            assert obj["status"].get("stableDigest") == digests["v1"]
            assert obj["status"].get("candidateDigest") == digests["v2"]
            seen = _event_messages(cluster, ns)
            assert "PrometheusUnavailable" in [reason for reason, _ in seen]
            everything = (
                json.dumps(obj)
                + json.dumps(seen)
                + operator.process.log_path.read_text(errors="replace")
            )
            for secret in (WRONG, PASSWORD, TOKEN):
                assert secret not in everything
            assert "StageAdvanced" not in [reason for reason, _ in seen]

            # The right password: the rollout is judged on the real figures and finishes.
            cluster.request(
                "PATCH",
                f"/api/v1/namespaces/{ns}/secrets/prom-basic",
                {"stringData": {"password": PASSWORD}},
            )
            wait_condition(cluster, ns, "pricing", "Ready", "True", timeout=180)
        done = get_bundle(cluster, ns, "pricing")
        assert done["status"]["stableDigest"] == digests["v2"]
        # Each stage passed on both metrics' real figures (calls has min 0.001/s: no
        # pass without real calls counted by the real Prometheus).
        advanced = [m for reason, m in _event_messages(cluster, ns) if reason == "StageAdvanced"]
        assert advanced, "no stage advanced"
        assert all("errors " in m and "calls " in m for m in advanced), advanced
        assert proxy.refused == 0  # the bearer token was sent every time
        log = operator.process.log_path.read_text(errors="replace")
        for secret in (WRONG, PASSWORD, TOKEN):
            assert secret not in log
    finally:
        proxy.close()
