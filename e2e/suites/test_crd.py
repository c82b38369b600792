"""The generated LogicBundle CRD on a real API server: accepted, enforcing, and printable."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.yaml"))

VALID: dict[str, Any] = {
    "apiVersion": "logicbundle.io/v1alpha1",
    "kind": "LogicBundle",
    "metadata": {"name": "rules"},
    "spec": {
        "source": {"ref": "127.0.0.1:5000/team/rules:v1"},
        "verify": {
            "keyless": {
                "identities": [{"issuer": "https://issuer.example", "subject": "ci@example.com"}]
            }
        },
        "target": {"podSelector": {"matchLabels": {"app": "web"}}},
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID with one field set (dotted path; numeric parts index lists)."""
    doc = copy.deepcopy(VALID)
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


def _apply(cluster: Cluster, namespace: str, doc: dict[str, Any], *, dry_run: bool = True) -> str:
    args = ["apply", "-n", namespace, "-f", "-"]
    if dry_run:
        args.append("--dry-run=server")
    return cluster.kubectl(*args, input=json.dumps(doc))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_documented_example_passes_a_server_side_dry_run(
    cluster: Cluster, logicbundle_crd: str, namespace: str, example: Path
) -> None:
    doc = yaml.safe_load(example.read_text())
    doc["metadata"]["namespace"] = namespace
    assert "created (server dry run)" in _apply(cluster, namespace, doc)


INVALID = {
    "a ref that is not an OCI reference": (
        _with("spec.source.ref", "not a ref"),
        "spec.source.ref",
    ),
    "a negative percent": (
        _with("spec.rollout", {"stages": [{"name": "a", "percent": -5}]}),
        "percent",
    ),
    "a percent over 100": (
        _with("spec.rollout", {"stages": [{"name": "a", "percent": 101}]}),
        "percent",
    ),
    "a stage of two kinds": (
        _with("spec.rollout", {"stages": [{"name": "a", "percent": 5, "all": True}]}),
        "exactly one",
    ),
    "an unknown analysis provider": (
        _with(
            "spec.rollout",
            {"stages": [{"name": "a", "all": True}], "analysis": {"provider": "datadog"}},
        ),
        "provider",
    ),
    "an empty identity list": (_with("spec.verify.keyless.identities", []), "identities"),
    "both subject and subjectRegex": (
        _with(
            "spec.verify.keyless.identities",
            [{"issuer": "https://i.example", "subject": "a", "subjectRegex": "a.*"}],
        ),
        "subject",
    ),
    "no verification at all": (_with("spec.verify", {}), "verify"),
    "a bad interval": (_with("spec.source.interval", "five minutes"), "interval"),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_the_api_server_refuses_an_invalid_logicbundle(
    cluster: Cluster, logicbundle_crd: str, namespace: str, case: str
) -> None:
    doc, needle = INVALID[case]
    with pytest.raises(HarnessError, match=needle):
        _apply(cluster, namespace, doc)


def test_a_ref_without_a_tag_is_refused_in_words_not_with_a_regular_expression(
    cluster: Cluster, logicbundle_crd: str, namespace: str
) -> None:
    """Issue 13: the answer was the field's 500-character pattern."""
    with pytest.raises(HarnessError) as refused:
        _apply(cluster, namespace, _with("spec.source.ref", "registry.example.com/team/rules"))
    answer = str(refused.value)
    assert "spec.source.ref" in answer
    assert "there is no implicit latest" in answer, answer
    assert "(?:" not in answer and "[a-z0-9]+" not in answer, answer


# -- every CEL rule of the CRD, evaluated by the API server ----------------------------------

PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
IN_WITHOUT_VALUES = [{"key": "tier", "operator": "In"}]
STAGES = "spec.rollout.stages"
ANALYSIS = "spec.rollout.analysis"
PROMETHEUS = {"address": "http://127.0.0.1:9090"}
STAGE = "status.targetState.stage"


def _status(stage: dict[str, Any]) -> dict[str, Any]:
    """A published state whose stage is ``stage`` (a status write, not a create)."""
    return {"targetState": {"bundle": "rules", "stable": "sha256:" + "1" * 64, "stage": stage}}


@dataclass(frozen=True)
class CelCase:
    """An object that breaks exactly one CEL rule of the CRD.

    ``path`` is the schema node the rule sits on (``.spec.verify.keys[]``; ``""``
    for the root) and ``message`` the rule's message: together they name the
    rule (tests/api/test_cel_cases.py checks every rule of the generated CRD
    has a case).  ``doc`` is the whole object, or with ``status`` set, the
    status written to a valid object through the status subresource.
    """

    path: str
    message: str
    doc: dict[str, Any]
    status: bool = False


CEL_CASES: dict[str, CelCase] = {
    "name-too-long": CelCase(
        "",
        "metadata.name must be at most 56 characters: it names the state ConfigMap "
        "and the pods' state files",
        _with("metadata.name", "r" * 57),
    ),
    "ref-without-a-tag": CelCase(
        ".spec.source.ref",
        "must be a fully qualified OCI reference with a tag or a digest: "
        "registry.example.com/repository:tag or registry.example.com/repository@sha256:<64 hex> "
        "(the registry host is required, and there is no implicit latest)",
        _with("spec.source.ref", "registry.example.com/team/rules"),
    ),
    "request-percent-without-sdk": CelCase(
        ".spec",
        "requestPercent stages split requests inside the SDK: they need target.notify.mode sdk",
        _with(
            "spec",
            {
                **VALID["spec"],
                "target": {**VALID["spec"]["target"], "notify": {"mode": "none"}},
                "rollout": {"stages": [{"name": "split", "requestPercent": 10}]},
            },
        ),
    ),
    "two-cas": CelCase(
        ".spec.source",
        "set at most one of caSecretRef and caConfigMapRef",
        _with(
            "spec.source",
            {
                **VALID["spec"]["source"],
                "caSecretRef": {"name": "ca"},
                "caConfigMapRef": {"name": "ca"},
            },
        ),
    ),
    "insecure-with-a-ca": CelCase(
        ".spec.source",
        "insecure (plain HTTP) cannot be combined with a CA: drop one of them",
        _with(
            "spec.source",
            {**VALID["spec"]["source"], "insecure": True, "caSecretRef": {"name": "ca"}},
        ),
    ),
    "no-verification": CelCase(
        ".spec.verify",
        "set verify.keyless, verify.keys or both: logicbundle never accepts an unsigned artifact",
        _with("spec.verify", {}),
    ),
    "subject-and-regex": CelCase(
        ".spec.verify.keyless.identities[]",
        "set exactly one of subject and subjectRegex",
        _with(
            "spec.verify.keyless.identities",
            [{"issuer": "https://i.example", "subject": "a", "subjectRegex": "a.*"}],
        ),
    ),
    "key-secret-and-pem": CelCase(
        ".spec.verify.keys[]",
        "set exactly one of secretRef and pem",
        _with("spec.verify", {"keys": [{"secretRef": {"name": "keys"}, "pem": PEM}]}),
    ),
    "sdk-health-without-sdk-notify": CelCase(
        ".spec.target",
        "healthCheck.mode sdk needs notify.mode sdk: the SDK confirms what it was told to load",
        _with(
            "spec.target",
            {
                **VALID["spec"]["target"],
                "notify": {"mode": "none"},
                "healthCheck": {"mode": "sdk"},
            },
        ),
    ),
    "pod-selector-in-without-values": CelCase(
        ".spec.target.podSelector.matchExpressions[]",
        "values must be non-empty for the operators In and NotIn, and absent for Exists "
        "and DoesNotExist",
        _with("spec.target.podSelector", {"matchExpressions": IN_WITHOUT_VALUES}),
    ),
    "notify-http-without-http": CelCase(
        ".spec.target.notify",
        "notify.http is required when mode is http, and only then",
        _with("spec.target.notify", {"mode": "http"}),
    ),
    "notify-signal-without-signal": CelCase(
        ".spec.target.notify",
        "notify.signal is required when mode is signal, and only then",
        _with("spec.target.notify", {"mode": "signal"}),
    ),
    "health-http-without-url": CelCase(
        ".spec.target.healthCheck",
        "healthCheck.url is required when mode is http, and only then",
        _with("spec.target.healthCheck", {"mode": "http"}),
    ),
    "stage-of-two-kinds": CelCase(
        ".spec.rollout.stages[]",
        "a stage sets exactly one of internal, percent, requestPercent and all",
        _with(STAGES, [{"name": "a", "percent": 5, "all": True}]),
    ),
    "pause-and-gate": CelCase(
        ".spec.rollout.stages[]",
        "a stage sets pause or manualGate: true, not both",
        _with(STAGES, [{"name": "a", "all": True, "pause": "1m", "manualGate": True}]),
    ),
    "internal-in-without-values": CelCase(
        ".spec.rollout.stages[].internal.matchExpressions[]",
        "values must be non-empty for the operators In and NotIn, and absent for Exists "
        "and DoesNotExist",
        _with(STAGES, [{"name": "a", "internal": {"matchExpressions": IN_WITHOUT_VALUES}}]),
    ),
    "prometheus-provider-without-prometheus": CelCase(
        ".spec.rollout.analysis",
        "analysis.prometheus is required when provider is prometheus, and only then",
        _with(ANALYSIS, {"provider": "prometheus"}),
    ),
    "query-without-prometheus": CelCase(
        ".spec.rollout.analysis",
        "metrics with a query need analysis.provider prometheus",
        _with(ANALYSIS, {"metrics": [{"name": "m", "query": "up", "max": 1}]}),
    ),
    "builtin-and-query": CelCase(
        ".spec.rollout.analysis.metrics[]",
        "a metric sets exactly one of builtin, query and templateRef",
        _with(
            ANALYSIS,
            {
                "provider": "prometheus",
                "prometheus": PROMETHEUS,
                "metrics": [{"name": "m", "builtin": "errorRate", "query": "up", "max": 1}],
            },
        ),
    ),
    "template-args-without-template-ref": CelCase(
        ".spec.rollout.analysis.metrics[]",
        "templateArgs are the arguments of a templateRef: set templateRef too",
        _with(
            ANALYSIS,
            {"metrics": [{"name": "m", "builtin": "errorRate", "templateArgs": {}, "max": 1}]},
        ),
    ),
    "prometheus-basic-and-bearer": CelCase(
        ".spec.rollout.analysis.prometheus",
        "set at most one of bearerTokenSecretRef and basicAuthSecretRef",
        _with(
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
    "prometheus-two-cas": CelCase(
        ".spec.rollout.analysis.prometheus",
        "set at most one of caSecretRef and caConfigMapRef",
        _with(
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
    "metric-without-threshold": CelCase(
        ".spec.rollout.analysis.metrics[]",
        "a metric sets at least one threshold: max, min or maxRatioToStable",
        _with(ANALYSIS, {"metrics": [{"name": "m", "builtin": "errorRate"}]}),
    ),
    "min-above-max": CelCase(
        ".spec.rollout.analysis.metrics[]",
        "a metric's min must not exceed its max",
        _with(ANALYSIS, {"metrics": [{"name": "m", "builtin": "errorRate", "min": 2, "max": 1}]}),
    ),
    "published-internal-in-without-values": CelCase(
        ".status.targetState.stage.internal.matchExpressions[]",
        "values must be non-empty for the operators In and NotIn, and absent for Exists "
        "and DoesNotExist",
        _status({"internal": {"matchExpressions": IN_WITHOUT_VALUES}}),
        status=True,
    ),
    "published-carry-in-without-values": CelCase(
        ".status.targetState.stage.percent.carry.selector.matchExpressions[]",
        "values must be non-empty for the operators In and NotIn, and absent for Exists "
        "and DoesNotExist",
        _status(
            {
                "percent": {
                    "threshold": "0x10",
                    "sealed": 1,
                    "carry": {
                        "threshold": "0x20",
                        "selector": {"matchExpressions": IN_WITHOUT_VALUES},
                    },
                }
            }
        ),
        status=True,
    ),
}


def _field(path: str) -> str:
    """The field path the API server names in its error (``[]`` -> the first item)."""
    return path.lstrip(".").replace("[]", "[0]")


@pytest.mark.parametrize("case", list(CEL_CASES), ids=list(CEL_CASES))
def test_each_cel_rule_is_enforced_by_the_api_server_with_its_message(
    cluster: Cluster, logicbundle_crd: str, namespace: str, case: str
) -> None:
    """Issue 11: every x-kubernetes-validations rule, evaluated by a real API server.

    The object breaks that rule and no other (no other rule's message is in the
    answer), so a rule that never fires, or fires with another message, fails.
    """
    rule = CEL_CASES[case]
    if rule.status:
        name = f"cel-{case}"[:56]
        _apply(cluster, namespace, _with("metadata.name", name), dry_run=False)
        command = ["patch", "lb", name, "-n", namespace, "--subresource=status", "--type=merge"]
        command += ["--dry-run=server", "-p", json.dumps({"status": rule.doc})]
    else:
        command = ["create", "-n", namespace, "--dry-run=server", "-f", "-"]
    # The valid object, with the rule's own field, goes through: only the rule refuses it.
    with pytest.raises(HarnessError) as refused:
        cluster.kubectl(*command, input=None if rule.status else json.dumps(rule.doc))
    answer = str(refused.value)
    assert rule.message in answer, answer
    if rule.path:
        assert _field(rule.path) in answer, answer
    others = {c.message for c in CEL_CASES.values()} - {rule.message}
    assert [m for m in others if m in answer] == [], answer


def test_kubectl_get_lb_shows_the_printer_columns(
    cluster: Cluster, logicbundle_crd: str, namespace: str
) -> None:
    _apply(cluster, namespace, VALID, dry_run=False)
    header = cluster.kubectl("get", "lb", "-n", namespace).splitlines()[0].split()
    assert header[:1] == ["NAME"]
    for column in ("STAGE", "STABLE", "CANDIDATE", "PODS", "READY", "AGE"):
        assert column in header
    # The status subresource exists: a status patch through it is accepted.
    cluster.kubectl(
        "patch",
        "lb",
        "rules",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"observedGeneration": 1}}),
    )
    got = json.loads(cluster.kubectl("get", "lb", "rules", "-n", namespace, "-o", "json"))
    assert got["status"]["observedGeneration"] == 1
