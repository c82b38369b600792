"""Metrics from templates, and Prometheus behind authentication, through ``_analysis_step``.

A real HTTP server speaks the Prometheus query API and demands credentials;
the templates and Secrets come from fakes of the API server.  Every way a
template can be wrong is a measurement without data (never a pass) whose
reason names the template, and no credential appears in a verdict, an
event, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from logicbundle.api import Prometheus, names
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._prometheus import (
    PrometheusEndpoint,
    PrometheusError,
    endpoint,
    query,
    redact,
    safe_address,
)
from logicbundle.controller._reconcile import REPORT_GRACE, Runtime, _analysis_step
from logicbundle.controller._source import BundleCache, ConfigError, SourceTools
from logicbundle.controller._summaries import AgentsView
from logicbundle.distributor import BlobCache, BundleSummary, ReportStore, RuleTargets, TargetStore
from tests.controller.test_reconcile import FakeKube, _in_flight_at_internal
from tests.oci.mock_registry import make_self_signed_certificate
from tests.rollout._fixtures import BUNDLE, D1, D2, NS, T0, make_spec

PASSWORD = "s3cr3t-Pa55word-do-not-leak"
TOKEN = "tok-0123456789abcdef-do-not-leak"


class AuthPrometheus:
    """``/api/v1/query`` answering ``value`` only to requests with the expected credentials."""

    def __init__(self, value: float, *, authorization: str | None) -> None:
        self.value = value
        self.authorization = authorization
        self.queries: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if fake.authorization is not None and (
                    self.headers.get("Authorization") != fake.authorization
                ):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="prometheus"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
                fake.queries.append(query)
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def prometheus() -> Iterator[AuthPrometheus]:
    server = AuthPrometheus(0.01, authorization=basic("lb", PASSWORD))
    yield server
    server.close()


@dataclass
class FakeApi:
    """Secrets, ConfigMaps and metric templates, as the operator's API client reads them."""

    secrets: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    templates: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        if (namespace, name) not in self.secrets:
            raise ConfigError(f"cannot read Secret {namespace}/{name}: HTTP 404 Not Found")
        return self.secrets[(namespace, name)]

    def config_map(self, namespace: str, name: str) -> Mapping[str, str]:
        if (namespace, name) not in self.config_maps:
            raise ConfigError(f"cannot read ConfigMap {namespace}/{name}: HTTP 404 Not Found")
        return self.config_maps[(namespace, name)]

    def metric_template(self, *, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.templates.get((kind, namespace, name))

    def add_template(
        self, name: str, spec: dict[str, Any], *, cluster: bool = False
    ) -> dict[str, Any]:
        kind = names.CLUSTER_TEMPLATE_KIND if cluster else names.TEMPLATE_KIND
        body = {
            "apiVersion": names.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, **({} if cluster else {"namespace": NS})},
            "spec": spec,
        }
        self.templates[(kind, "" if cluster else NS, name)] = body
        return body


class TemplateKube(FakeKube):
    def __init__(self, api: FakeApi) -> None:
        super().__init__(set)
        self.api = api

    def metric_template(self, *, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.api.metric_template(kind=kind, namespace=namespace, name=name)


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.secrets[(NS, "prom-basic")] = {"username": b"lb", "password": PASSWORD.encode()}
    fake.secrets[(NS, "prom-token")] = {"token": TOKEN.encode()}
    return fake


@pytest.fixture
def setup(tmp_path: Path, api: FakeApi) -> tuple[Runtime, list[tuple[str, str, str]]]:
    targets = TargetStore()
    events: list[tuple[str, str, str]] = []
    rt = Runtime(
        kube=TemplateKube(api),  # type: ignore[arg-type]
        source=SourceTools(reader=api, cache=BundleCache(BlobCache(tmp_path))),
        agents=AgentsView(rules=RuleTargets(targets), reports=ReportStore()),
        metrics=OperatorMetrics(),
        post_event=lambda _body, type_, reason, message: events.append((type_, reason, message)),
    )
    rt.started -= REPORT_GRACE
    return rt, events


def _spec(metric: dict[str, Any], prometheus: dict[str, Any] | None = None) -> Any:
    analysis: dict[str, Any] = {"interval": "1s", "metrics": [metric]}
    if prometheus is not None:
        analysis |= {"provider": "prometheus", "prometheus": prometheus}
    return make_spec(analysis=analysis)


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
            body={"metadata": {"namespace": NS, "name": BUNDLE}},
        )
    )
    assert verdict is not None
    return verdict


REQUESTS = (
    'sum(rate(logicbundle_sdk_call_errors_total{namespace="{{namespace}}",'
    'job="{{args.job}}",digest="{{digest}}"}[{{args.window}}]))'
)


def _basic_template(api: FakeApi, address: str, *, cluster: bool = False) -> None:
    api.add_template(
        "error-rate",
        {
            "query": REQUESTS,
            "args": [{"name": "job"}, {"name": "window", "default": "5m"}],
            "prometheus": {"address": address, "basicAuthSecretRef": {"name": "prom-basic"}},
        },
        cluster=cluster,
    )


METRIC = {
    "name": "errors",
    "templateRef": {"name": "error-rate"},
    "templateArgs": {"job": "shop"},
    "max": 0.05,
}


def _no_credential_in(
    text: str, caplog: pytest.LogCaptureFixture, events: list[tuple[str, str, str]]
) -> None:
    everything = text + caplog.text + repr(events)
    for secret in (PASSWORD, TOKEN, base64.b64encode(f"lb:{PASSWORD}".encode()).decode()):
        assert secret not in everything


def test_a_namespaced_template_with_basic_auth_is_judged_on_its_query(
    setup: tuple[Runtime, list[Any]], api: FakeApi, prometheus: AuthPrometheus
) -> None:
    _basic_template(api, prometheus.address)
    verdict = _verdict(setup[0], _spec(METRIC))
    assert verdict.verdict == "Passed", verdict
    assert prometheus.queries == [
        f'sum(rate(logicbundle_sdk_call_errors_total{{namespace="{NS}",job="shop",'
        f'digest="{digest}"}}[5m]))'
        for digest in (D2, D1)
    ]


def test_a_cluster_template_is_found_by_kind_and_its_secrets_read_in_the_bundles_namespace(
    setup: tuple[Runtime, list[Any]], api: FakeApi, prometheus: AuthPrometheus
) -> None:
    _basic_template(api, prometheus.address, cluster=True)
    metric = {**METRIC, "templateRef": {"name": "error-rate", "kind": names.CLUSTER_TEMPLATE_KIND}}
    verdict = _verdict(setup[0], _spec(metric))
    assert verdict.verdict == "Passed", verdict


def test_a_failing_value_from_a_template_fails_the_measurement(
    setup: tuple[Runtime, list[Any]], api: FakeApi, prometheus: AuthPrometheus
) -> None:
    prometheus.value = 0.5
    _basic_template(api, prometheus.address)
    verdict = _verdict(setup[0], _spec(METRIC))
    assert verdict.verdict == "Failed", verdict


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"templateRef": {"name": "nope"}}, f"{names.TEMPLATE_KIND} {NS}/nope not found"),
        ({"templateArgs": {}}, "missing required argument(s) job"),
        ({"templateArgs": {"job": "shop", "jb": "x"}}, "unknown argument(s) jb"),
        (
            {"templateArgs": {"job": "shop", "window": "5m]) or vector(1"}},
            "argument 'window' is outside a quoted string",
        ),
    ],
)
def test_a_template_that_cannot_be_evaluated_is_missing_data_said_in_the_reason_and_an_event(
    setup: tuple[Runtime, list[Any]],
    api: FakeApi,
    prometheus: AuthPrometheus,
    change: dict[str, Any],
    expected: str,
) -> None:
    rt, events = setup
    _basic_template(api, prometheus.address)
    verdict = _verdict(rt, _spec({**METRIC, **change}))
    assert verdict.verdict == "NoData", verdict
    assert expected in verdict.reason
    assert prometheus.queries == []  # nothing was sent
    assert [(t, r) for t, r, _ in events] == [("Warning", "MetricTemplateInvalid")]
    assert expected in events[0][2]
    assert "vector(1" not in verdict.reason + events[0][2]  # the hostile value is not echoed


def test_a_template_without_any_prometheus_is_missing_data(
    setup: tuple[Runtime, list[Any]], api: FakeApi
) -> None:
    api.add_template("error-rate", {"query": "vector(0)"})
    verdict = _verdict(setup[0], _spec({**METRIC, "templateArgs": None}))
    assert verdict.verdict == "NoData"
    assert "names no Prometheus and analysis.prometheus is not set" in verdict.reason


def test_an_invalid_template_is_missing_data_naming_the_field(
    setup: tuple[Runtime, list[Any]], api: FakeApi, prometheus: AuthPrometheus
) -> None:
    api.add_template("error-rate", {"query": "up{a='{{args.undeclared}}'}"})
    verdict = _verdict(
        setup[0], _spec({**METRIC, "templateArgs": None}, {"address": prometheus.address})
    )
    assert verdict.verdict == "NoData"
    assert f"{names.TEMPLATE_KIND} {NS}/error-rate is invalid: spec" in verdict.reason
    assert "{{args.undeclared}}" in verdict.reason


def test_a_wrong_password_is_a_refused_query_without_the_password(
    setup: tuple[Runtime, list[Any]],
    api: FakeApi,
    prometheus: AuthPrometheus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, events = setup
    prometheus.authorization = basic("lb", "another")
    _basic_template(api, prometheus.address)
    with caplog.at_level(logging.DEBUG):
        verdict = _verdict(rt, _spec(METRIC))
    assert verdict.verdict == "NoData"
    assert "refused the query: HTTP 401 Unauthorized (check the credentials" in verdict.reason
    assert [(t, r) for t, r, _ in events] == [("Warning", "PrometheusUnavailable")]
    _no_credential_in(verdict.reason + repr(verdict), caplog, events)


def test_no_credentials_for_a_prometheus_that_wants_them_says_which_fields_to_set(
    setup: tuple[Runtime, list[Any]], prometheus: AuthPrometheus
) -> None:
    metric = {"name": "q", "query": 'up{digest="{{digest}}"}', "max": 1}
    verdict = _verdict(setup[0], _spec(metric, {"address": prometheus.address}))
    assert verdict.verdict == "NoData"
    assert "HTTP 401 Unauthorized (it wants credentials: set basicAuthSecretRef" in verdict.reason


def test_an_inline_query_uses_the_bearer_token_of_analysis_prometheus(
    setup: tuple[Runtime, list[Any]],
    prometheus: AuthPrometheus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rt, events = setup
    prometheus.authorization = f"Bearer {TOKEN}"
    metric = {"name": "q", "query": 'up{digest="{{digest}}"}', "max": 1}
    settings = {"address": prometheus.address, "bearerTokenSecretRef": {"name": "prom-token"}}
    assert _verdict(rt, _spec(metric, settings)).verdict == "Passed"
    prometheus.authorization = "Bearer other"
    with caplog.at_level(logging.DEBUG):
        refused = _verdict(rt, _spec(metric, settings))
    assert refused.verdict == "NoData"
    assert "HTTP 401" in refused.reason
    _no_credential_in(refused.reason, caplog, events)


def test_a_missing_secret_is_missing_data_naming_the_secret(
    setup: tuple[Runtime, list[Any]], api: FakeApi, prometheus: AuthPrometheus
) -> None:
    del api.secrets[(NS, "prom-basic")]
    _basic_template(api, prometheus.address)
    verdict = _verdict(setup[0], _spec(METRIC))
    assert verdict.verdict == "NoData"
    assert f"Secret {NS}/prom-basic" in verdict.reason


# --- the endpoint: headers and redaction --------------------------------------------


def test_the_endpoint_builds_the_authorization_header_and_never_shows_it(api: FakeApi) -> None:
    address = "https://prom.example:9090/prefix"
    basic_ep = endpoint(
        Prometheus.model_validate(
            {"address": address, "basicAuthSecretRef": {"name": "prom-basic"}}
        ),
        namespace=NS,
        reader=api,
    )
    assert basic_ep.headers()["Authorization"] == basic("lb", PASSWORD)
    bearer_ep = endpoint(
        Prometheus.model_validate(
            {"address": address, "bearerTokenSecretRef": {"name": "prom-token"}}
        ),
        namespace=NS,
        reader=api,
    )
    assert bearer_ep.headers()["Authorization"] == f"Bearer {TOKEN}"
    for ep in (basic_ep, bearer_ep):
        assert PASSWORD not in repr(ep) and TOKEN not in repr(ep)
        assert "lb:" not in repr(ep)
    plain = endpoint(Prometheus(address=address), namespace=NS, reader=api)
    assert "Authorization" not in plain.headers()


def test_a_ca_bundle_comes_from_a_secret_or_a_config_map(api: FakeApi) -> None:
    api.config_maps[(NS, "prom-ca")] = {"ca.crt": "PEM"}
    api.secrets[(NS, "prom-ca")] = {"bundle.pem": b"PEM2"}
    by_map = endpoint(
        Prometheus.model_validate(
            {"address": "https://p:9090", "caConfigMapRef": {"name": "prom-ca"}}
        ),
        namespace=NS,
        reader=api,
    )
    assert by_map.ca_pem == b"PEM"
    by_secret = endpoint(
        Prometheus.model_validate(
            {"address": "https://p:9090", "caSecretRef": {"name": "prom-ca", "key": "bundle.pem"}}
        ),
        namespace=NS,
        reader=api,
    )
    assert by_secret.ca_pem == b"PEM2"
    with pytest.raises(PrometheusError, match="CA bundle is not PEM") as caught:
        query(by_secret, "up")
    assert "PEM2" not in str(caught.value)


def test_credentials_in_the_address_are_stripped_from_messages_and_requests() -> None:
    ep = PrometheusEndpoint(
        address=f"http://lb:{PASSWORD}@127.0.0.1:9/?key={TOKEN}",
        timeout=1,
        secrets=(PASSWORD, TOKEN),
    )
    assert safe_address(ep.address) == "http://127.0.0.1:9/"
    with pytest.raises(PrometheusError) as caught:
        query(ep, "up")
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)
    assert "did not answer" in str(caught.value)


def test_redact_hides_every_credential_longest_first() -> None:
    assert redact(f"a {PASSWORD} b {TOKEN}", (TOKEN, PASSWORD, "")) == ("a [redacted] b [redacted]")


def test_an_https_prometheus_is_trusted_through_the_ca_bundle_the_settings_name(
    tmp_path: Path, api: FakeApi
) -> None:
    cert, key = make_self_signed_certificate(tmp_path, name="prometheus ca")
    server = AuthPrometheus(0.25, authorization=f"Bearer {TOKEN}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    address = server.address.replace("http://", "https://")
    api.config_maps[(NS, "prom-ca")] = {"ca.crt": cert.read_text()}
    try:
        settings = {"address": address, "bearerTokenSecretRef": {"name": "prom-token"}}
        without_ca = endpoint(Prometheus.model_validate(settings), namespace=NS, reader=api)
        with pytest.raises(PrometheusError, match=r"did not answer.*CERTIFICATE_VERIFY_FAILED"):
            query(without_ca, "up")
        with_ca = endpoint(
            Prometheus.model_validate({**settings, "caConfigMapRef": {"name": "prom-ca"}}),
            namespace=NS,
            reader=api,
        )
        assert query(with_ca, "up") == 0.25
    finally:
        server.close()
