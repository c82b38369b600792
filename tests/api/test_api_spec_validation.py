"""Which LogicBundles the models accept, and what they say about the ones they refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from logicbundle.api import DEFAULT_METRICS, DEFAULT_STAGES, LogicBundle, names
from tests.api._fixtures import DELETE, DIGEST_A, changed, minimal

STAGES = "spec.rollout.stages"
ANALYSIS = "spec.rollout.analysis"
PROMETHEUS = {"address": "http://prometheus:9090"}


def _with(*changes: tuple[str, object]) -> dict[str, Any]:
    body = minimal()
    for path, value in changes:
        body = changed(body, path, value)
    return body


VALID: dict[str, dict[str, Any]] = {
    "a minimal bundle": minimal(),
    "a ref pinned by digest": _with(
        ("spec.source.ref", f"registry.example.com/team/rules@{DIGEST_A}")
    ),
    "a ref with a tag and a digest": _with(
        ("spec.source.ref", f"registry.example.com/team/rules:v1@{DIGEST_A}")
    ),
    "a registry on localhost with a port": _with(("spec.source.ref", "localhost:5000/rules:v1")),
    "a registry host with a port and no dot": _with(("spec.source.ref", "registry:5000/a/b:v1")),
    "a compound duration": _with(("spec.source.interval", "1h30m")),
    "a fractional duration": _with(("spec.source.interval", "1.5h")),
    "keys instead of keyless": _with(
        ("spec.verify.keyless", DELETE), ("spec.verify.keys", [{"secretRef": {"name": "k"}}])
    ),
    "keyless and keys together": _with(("spec.verify.keys", [{"secretRef": {"name": "k"}}])),
    "a subject regex": _with(
        ("spec.verify.keyless.identities.0.subject", DELETE),
        ("spec.verify.keyless.identities.0.subjectRegex", "https://github.com/org/.*"),
    ),
    "percent 0 and 100": _with(
        (STAGES, [{"name": "none", "percent": 0}, {"name": "every", "percent": 100}])
    ),
    "a manual gate": _with((STAGES, [{"name": "gate", "all": True, "manualGate": True}])),
    "request percent with the sdk": _with((STAGES, [{"name": "r", "requestPercent": 5}])),
    "an http hook": _with(
        ("spec.target.notify", {"mode": "http", "http": {"url": "http://127.0.0.1:8080/r"}})
    ),
    "a signal": _with(("spec.target.notify", {"mode": "signal", "signal": {"processName": "app"}})),
    "a prometheus provider": _with(
        (ANALYSIS, {"provider": "prometheus", "prometheus": PROMETHEUS})
    ),
    "an integer threshold": _with(
        (f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "restarts", "max": 0}])
    ),
    "a null optional field, as the API server would prune it": _with(
        ("spec.source.pullSecretRef", None)
    ),
    "a name of exactly the longest length": _with(
        ("metadata.name", "a" * names.MAX_BUNDLE_NAME_LENGTH)
    ),
}

REF_MESSAGE = "must be a fully qualified OCI reference with a tag or a digest"  # not the regex

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "a ref without a registry host": (
        _with(("spec.source.ref", "team/rules:v1")),
        REF_MESSAGE,
    ),
    "a ref without a tag or digest": (
        _with(("spec.source.ref", "registry.example.com/team/rules")),
        REF_MESSAGE,
    ),
    "a ref with a short digest": (
        _with(("spec.source.ref", "registry.example.com/team/rules@sha256:abc")),
        REF_MESSAGE,
    ),
    "a ref with upper-case repository": (
        _with(("spec.source.ref", "registry.example.com/Team/rules:v1")),
        REF_MESSAGE,
    ),
    "a duration without a unit": (_with(("spec.source.interval", "5")), "should match pattern"),
    "a duration in days": (_with(("spec.source.interval", "1d")), "should match pattern"),
    "a negative duration": (_with(("spec.source.interval", "-5m")), "should match pattern"),
    "both CA references": (
        _with(
            ("spec.source.caSecretRef", {"name": "a"}),
            ("spec.source.caConfigMapRef", {"name": "b"}),
        ),
        "set at most one of caSecretRef and caConfigMapRef",
    ),
    "insecure with a CA": (
        _with(("spec.source.insecure", True), ("spec.source.caSecretRef", {"name": "a"})),
        "insecure (plain HTTP) cannot be combined with a CA",
    ),
    "insecure as a string": (_with(("spec.source.insecure", "true")), "valid boolean"),
    "no verification at all": (
        _with(("spec.verify", {})),
        "set verify.keyless, verify.keys or both",
    ),
    "an empty identity list": (
        _with(("spec.verify.keyless.identities", [])),
        "at least 1 item",
    ),
    "an invalid subject regex": (
        _with(
            ("spec.verify.keyless.identities.0.subject", DELETE),
            ("spec.verify.keyless.identities.0.subjectRegex", "https://(github.com/.*"),
        ),
        "subjectRegex is not a valid regular expression",
    ),
    "a threshold as a string": (
        _with((f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "errorRate", "max": "0.1"}])),
        "valid number",
    ),
    "an empty key list": (
        _with(("spec.verify.keyless", DELETE), ("spec.verify.keys", [])),
        "at least 1 item",
    ),
    "subject and subjectRegex both set": (
        _with(("spec.verify.keyless.identities.0.subjectRegex", ".*")),
        "set exactly one of subject and subjectRegex",
    ),
    "neither subject nor subjectRegex": (
        _with(("spec.verify.keyless.identities.0.subject", DELETE)),
        "set exactly one of subject and subjectRegex",
    ),
    "a key with a secret and a pem": (
        _with(
            (
                "spec.verify.keys",
                [
                    {
                        "secretRef": {"name": "k"},
                        "pem": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
                    }
                ],
            )
        ),
        "set exactly one of secretRef and pem",
    ),
    "an unknown audit policy": (
        _with(("spec.verify.audit", "strict")),
        "'warn', 'reject' or 'off'",
    ),
    "an unknown notify mode": (_with(("spec.target.notify.mode", "webhook")), "'sdk', 'http'"),
    "http mode without its settings": (
        _with(("spec.target.notify.mode", "http")),
        "notify.http is required when mode is http, and only then",
    ),
    "http settings with another mode": (
        _with(("spec.target.notify.http", {"url": "http://localhost/r"})),
        "notify.http is required when mode is http, and only then",
    ),
    "signal mode without its settings": (
        _with(("spec.target.notify.mode", "signal")),
        "notify.signal is required when mode is signal, and only then",
    ),
    "an http hook that leaves the pod": (
        _with(
            ("spec.target.notify", {"mode": "http", "http": {"url": "http://example.com/reload"}})
        ),
        "should match pattern",
    ),
    "an http health check without a url": (
        _with(("spec.target.healthCheck.mode", "http")),
        "healthCheck.url is required when mode is http, and only then",
    ),
    "an sdk health check without the sdk": (
        _with(("spec.target.notify.mode", "none"), ("spec.target.healthCheck.mode", "sdk")),
        "healthCheck.mode sdk needs notify.mode sdk",
    ),
    "a relative mount path": (_with(("spec.target.mountPath", "var/run")), "should match pattern"),
    "a selector expression In without values": (
        _with(("spec.target.podSelector.matchExpressions", [{"key": "a", "operator": "In"}])),
        "values must be non-empty for the operators In and NotIn",
    ),
    "a negative percent": (
        _with((STAGES, [{"name": "s", "percent": -5}])),
        "greater than or equal to 0",
    ),
    "a percent above 100": (
        _with((STAGES, [{"name": "s", "percent": 101}])),
        "less than or equal to 100",
    ),
    "a percent as a string": (
        _with((STAGES, [{"name": "s", "percent": "5"}])),
        "valid integer",
    ),
    "a stage with two kinds": (
        _with((STAGES, [{"name": "s", "percent": 5, "all": True}])),
        "a stage sets exactly one of internal, percent, requestPercent and all",
    ),
    "a stage with no kind": (
        _with((STAGES, [{"name": "s", "pause": "1m"}])),
        "a stage sets exactly one of internal, percent, requestPercent and all",
    ),
    "a stage with all: false": (
        _with((STAGES, [{"name": "s", "all": False}])),
        "Input should be True",
    ),
    "a stage with a pause and a manual gate": (
        _with((STAGES, [{"name": "s", "all": True, "pause": "1m", "manualGate": True}])),
        "a stage sets pause or manualGate: true, not both",
    ),
    "a stage with a bad pause": (
        _with((STAGES, [{"name": "s", "all": True, "pause": "soon"}])),
        "should match pattern",
    ),
    "two stages with one name": (
        _with((STAGES, [{"name": "s", "percent": 5}, {"name": "s", "all": True}])),
        "stage names must be unique",
    ),
    "an empty stage list": (_with((STAGES, [])), "at least 1 item"),
    "a stage name with capitals": (
        _with((STAGES, [{"name": "Canary", "all": True}])),
        "should match pattern",
    ),
    "request percent without the sdk": (
        _with(
            (STAGES, [{"name": "r", "requestPercent": 5}]),
            ("spec.target.notify", {"mode": "none"}),
        ),
        "requestPercent stages split requests inside the SDK",
    ),
    "an unknown provider": (
        _with((f"{ANALYSIS}.provider", "datadog")),
        "'builtin' or 'prometheus'",
    ),
    "prometheus without its address": (
        _with((f"{ANALYSIS}.provider", "prometheus")),
        "analysis.prometheus is required when provider is prometheus, and only then",
    ),
    "a prometheus address that is not a URL": (
        _with((ANALYSIS, {"provider": "prometheus", "prometheus": {"address": "prometheus:9090"}})),
        "should match pattern",
    ),
    "a query with the builtin provider": (
        _with((f"{ANALYSIS}.metrics", [{"name": "m", "query": "up", "max": 1}])),
        "metrics with a query need analysis.provider prometheus",
    ),
    "a metric with a query and a builtin": (
        _with(
            (ANALYSIS, {"provider": "prometheus", "prometheus": PROMETHEUS}),
            (
                f"{ANALYSIS}.metrics",
                [{"name": "m", "query": "up", "builtin": "errorRate", "max": 1}],
            ),
        ),
        "a metric sets exactly one of builtin, query and templateRef",
    ),
    "a metric with templateArgs and no templateRef": (
        _with(
            (
                f"{ANALYSIS}.metrics",
                [{"name": "m", "builtin": "errorRate", "templateArgs": {"a": "b"}, "max": 1}],
            ),
        ),
        "templateArgs are the arguments of a templateRef: set templateRef too",
    ),
    "a Prometheus with basic auth and a bearer token": (
        _with(
            (
                ANALYSIS,
                {
                    "provider": "prometheus",
                    "prometheus": {
                        **PROMETHEUS,
                        "basicAuthSecretRef": {"name": "a"},
                        "bearerTokenSecretRef": {"name": "b"},
                    },
                },
            ),
        ),
        "set at most one of bearerTokenSecretRef and basicAuthSecretRef",
    ),
    "a Prometheus with two CAs": (
        _with(
            (
                ANALYSIS,
                {
                    "provider": "prometheus",
                    "prometheus": {
                        **PROMETHEUS,
                        "caSecretRef": {"name": "a"},
                        "caConfigMapRef": {"name": "b"},
                    },
                },
            ),
        ),
        "set at most one of caSecretRef and caConfigMapRef",
    ),
    "a metric without a threshold": (
        _with((f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "errorRate"}])),
        "a metric sets at least one threshold",
    ),
    "a metric with min above max": (
        _with((f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "errorRate", "min": 2, "max": 1}])),
        "a metric's min must not exceed its max",
    ),
    "a metric with a zero ratio": (
        _with(
            (f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "errorRate", "maxRatioToStable": 0}])
        ),
        "greater than 0",
    ),
    "an unknown builtin metric": (
        _with((f"{ANALYSIS}.metrics", [{"name": "m", "builtin": "cpu", "max": 1}])),
        "'errorRate'",
    ),
    "an unknown placeholder": (
        _with(
            (ANALYSIS, {"provider": "prometheus", "prometheus": PROMETHEUS}),
            (f"{ANALYSIS}.metrics", [{"name": "m", "query": "up{pod='{{pod}}'}", "max": 1}]),
        ),
        "unknown placeholder(s) {{pod}}",
    ),
    "two metrics with one name": (
        _with(
            (
                f"{ANALYSIS}.metrics",
                [
                    {"name": "m", "builtin": "errorRate", "max": 1},
                    {"name": "m", "builtin": "restarts", "max": 0},
                ],
            )
        ),
        "metric names must be unique",
    ),
    "a negative failure limit": (
        _with((f"{ANALYSIS}.failureLimit", -1)),
        "greater than or equal to 0",
    ),
    "zero minimum samples": (_with((f"{ANALYSIS}.minSamples", 0)), "greater than or equal to 1"),
    "an unknown no-data policy": (_with((f"{ANALYSIS}.noData", "pass")), "'wait' or 'fail'"),
    "a misspelt field": (_with(("spec.source.intreval", "5m")), "Extra inputs are not permitted"),
    "a name too long for annotation keys": (
        _with(("metadata.name", "a" * (names.MAX_BUNDLE_NAME_LENGTH + 1))),
        "metadata.name must be at most 56 characters",
    ),
    "a missing source": (_with(("spec.source", DELETE)), "Field required"),
    "the wrong apiVersion": (_with(("apiVersion", "logicbundle.io/v1")), "logicbundle.io/v1alpha1"),
}


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_a_valid_bundle_is_accepted(body: dict[str, Any]) -> None:
    LogicBundle.model_validate(body)


@pytest.mark.parametrize(("body", "message"), INVALID.values(), ids=INVALID.keys())
def test_an_invalid_bundle_is_refused_with_a_message_saying_why(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        LogicBundle.model_validate(body)
    assert message in str(caught.value)


def test_omitted_settings_take_the_documented_defaults() -> None:
    spec = LogicBundle.model_validate(minimal()).spec
    assert spec.source.interval == "5m"
    assert spec.source.insecure is False
    assert spec.verify.audit == "warn"
    assert spec.suspend is False
    assert spec.target.notify.mode == "sdk"
    assert spec.target.effective_health_mode() == "sdk"
    assert spec.target.health_check.timeout == "10s"
    assert spec.target.effective_mount_path("rules") == "/var/run/logicbundle/rules"
    assert spec.rollout.effective_stages() == DEFAULT_STAGES
    analysis = spec.rollout.analysis
    assert (analysis.provider, analysis.interval, analysis.no_data) == ("builtin", "30s", "wait")
    assert (analysis.min_samples, analysis.failure_limit) == (20, 0)
    assert analysis.effective_metrics() == DEFAULT_METRICS


def test_the_default_stages_are_internal_then_five_percent_then_everyone() -> None:
    internal, canary, everyone = DEFAULT_STAGES
    assert internal.internal is not None
    assert internal.internal.match_labels == {names.LABEL_COHORT: names.COHORT_INTERNAL}
    assert canary.percent == 5
    assert everyone.all_pods is True


def test_the_health_check_follows_the_notify_mode_unless_set() -> None:
    body = changed(minimal(), "spec.target.notify", {"mode": "none"})
    assert LogicBundle.model_validate(body).spec.target.effective_health_mode() == "none"
    body = changed(body, "spec.target.healthCheck", {"mode": "http", "url": "http://[::1]:81/h"})
    assert LogicBundle.model_validate(body).spec.target.effective_health_mode() == "http"


def test_a_metrics_own_minimum_samples_wins_over_the_analysis_default() -> None:
    metrics = [
        {"name": "own", "builtin": "restarts", "max": 0, "minSamples": 3},
        {"name": "inherited", "builtin": "errorRate", "max": 0.1},
    ]
    body = changed(minimal(), f"{ANALYSIS}.metrics", metrics)
    body = changed(body, f"{ANALYSIS}.minSamples", 50)
    analysis = LogicBundle.model_validate(body).spec.rollout.analysis
    own, inherited = analysis.effective_metrics()
    assert analysis.effective_min_samples(own) == 3
    assert analysis.effective_min_samples(inherited) == 50


def test_a_bundle_round_trips_through_its_camel_case_json_unchanged() -> None:
    body = changed(minimal(), STAGES, [{"name": "all", "all": True, "manualGate": True}])
    bundle = LogicBundle.model_validate(body)
    dumped = bundle.model_dump(mode="json", exclude_unset=True)
    assert dumped == body
    assert LogicBundle.model_validate(dumped) == bundle


def test_spec_models_are_frozen() -> None:
    bundle = LogicBundle.model_validate(minimal())
    with pytest.raises(ValidationError, match="frozen"):
        bundle.spec.source.ref = "registry.example.com/other:v2"  # type: ignore[misc]


def test_the_status_ignores_fields_a_newer_operator_wrote() -> None:
    body = changed(minimal(), "status", {"observedGeneration": 3, "fieldFromTheFuture": 1})
    status = LogicBundle.model_validate(body).status
    assert status is not None
    assert status.observed_generation == 3
