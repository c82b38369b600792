"""The generated LogicBundle CRD on a real API server: accepted, enforcing, and printable."""

from __future__ import annotations

import copy
import json
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
