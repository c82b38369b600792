"""The chart's knobs a cluster operator expects (issue 13 part 4).

Rendered with ``helm template`` and asserted (no cluster): security contexts
that OpenShift can take over without losing the hardening, extra environment,
volumes and mounts, the injected agent's env, resources and image, disruption
budgets that never block a drain, ServiceMonitors and a PodMonitor, the
LogicBundle CRD as a template. Against the real API server: every knob passes a
server-side dry run; ``helm install`` owns the CRD, ``helm upgrade`` upgrades
it and ``helm uninstall`` keeps it; a second release is refused, saying why.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError
from e2e.suites.test_chart import (
    CHART,
    FULLNAME,
    KUBE_VERSION,
    RELEASE,
    _create_namespace,
    _delete_if_present,
    _dry_run,
    _helm,
    _kinds,
    _stub_crd,
    _values_file,
    chart_crds,  # noqa: F401  (a fixture, used by name)
    render,
)
from logicbundle.cli import build_parser

NS = "logicbundle-system"
CRD_NAME = "logicbundles.logicbundle.io"
GENERATED_CRD = Path(__file__).resolve().parents[2] / "crds" / "logicbundle.io_logicbundles.yaml"

OPENSHIFT: dict[str, Any] = {
    "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
    "securityContext": {"runAsUser": None, "runAsGroup": None},
    "agent": {"securityContext": {"runAsUser": None, "runAsGroup": None}},
}
PROXY_AND_CA: dict[str, Any] = {
    "extraEnv": [
        {"name": "HTTPS_PROXY", "value": "http://proxy.corp:3128"},
        {"name": "NO_PROXY", "value": ".svc,.cluster.local"},
        {"name": "SSL_CERT_FILE", "value": "/etc/corp-ca/ca.crt"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "corp", "key": "token"}}},
    ],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    "distributor": {
        "extraEnv": [{"name": "SSL_CERT_FILE", "value": "/etc/corp-ca/ca.crt"}],
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca"}],
    },
}
AGENT: dict[str, Any] = {
    "agent": {
        "env": [{"name": "MALLOC_ARENA_MAX", "value": "2"}],
        "resources": {"requests": {"memory": "48Mi"}, "limits": {"memory": "128Mi"}},
    },
    "agentImage": {
        "repository": "registry.example.com/lb-agent",
        "tag": "9.9.9",
        "pullPolicy": "Always",
    },
}
MONITORS: dict[str, Any] = {
    "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
}


def _deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _kinds(objects)["Deployment"]}


def _pods(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod specs of the operator, the distributor and the helm test pod."""
    deployments = _deployments(objects)
    (test_pod,) = _kinds(objects)["Pod"]
    return {
        "operator": deployments[FULLNAME]["spec"]["template"]["spec"],
        "distributor": deployments[f"{FULLNAME}-distributor"]["spec"]["template"]["spec"],
        "test": test_pod["spec"],
    }


def _by_name(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _kinds(objects).get(kind, [])}


# --- security contexts ------------------------------------------------------------------


def _assert_hardened(pod: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_the_default_security_contexts_fix_the_ids_and_harden_every_container(
    tmp_path: Path,
) -> None:
    for name, pod in _pods(render(tmp_path, NS, {})).items():
        _assert_hardened(pod)
        assert pod["securityContext"]["runAsUser"] == 65532, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["containers"][0]["securityContext"]["runAsGroup"] == 65532, name


def test_openshift_can_unset_the_ids_and_the_hardening_stays(tmp_path: Path) -> None:
    pods = _pods(render(tmp_path, NS, OPENSHIFT))
    for name, pod in pods.items():
        _assert_hardened(pod)
        for context in (pod["securityContext"], pod["containers"][0]["securityContext"]):
            assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), (name, context)
    # The injected agent too: the operator leaves its ids to the platform.
    args = pods["operator"]["containers"][0]["args"]
    assert {"--agent-run-as-user=none", "--agent-run-as-group=none"} <= set(args)
    parsed = build_parser().parse_args(args)
    assert (parsed.agent_run_as_user, parsed.agent_run_as_group) == (None, None)
    defaults = build_parser().parse_args(
        _pods(render(tmp_path, NS, {}))["operator"]["containers"][0]["args"]
    )
    assert (defaults.agent_run_as_user, defaults.agent_run_as_group) == (65532, 65532)


def test_values_cannot_weaken_the_hardening(tmp_path: Path) -> None:
    for weaker in (
        {"securityContext": {"readOnlyRootFilesystem": False}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"podSecurityContext": {"runAsNonRoot": False}},
    ):
        with pytest.raises(HarnessError, match=r"[sS]ecurityContext"):
            render(tmp_path, NS, weaker)
    # Keys the chart does not set pass through (an SELinux level, say).
    objects = render(tmp_path, NS, {"securityContext": {"seLinuxOptions": {"level": "s0:c1"}}})
    for pod in _pods(objects).values():
        assert pod["containers"][0]["securityContext"]["seLinuxOptions"] == {"level": "s0:c1"}
        _assert_hardened(pod)


# --- extra env, volumes, mounts; the agent ---------------------------------------------------


def test_extra_env_volumes_and_mounts_reach_the_operator_and_the_distributor(
    tmp_path: Path,
) -> None:
    pods = _pods(render(tmp_path, NS, PROXY_AND_CA))
    operator = pods["operator"]["containers"][0]
    env = {e["name"]: e for e in operator["env"]}
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.corp:3128"
    assert env["TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "corp", "key": "token"}}
    assert {"POD_NAME", "HOME"} <= set(env)  # the chart's own stay
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pods["operator"]["volumes"]
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in operator[
        "volumeMounts"
    ]
    distributor = pods["distributor"]["containers"][0]
    assert {"name": "SSL_CERT_FILE", "value": "/etc/corp-ca/ca.crt"} in distributor["env"]
    assert "HTTPS_PROXY" not in {e["name"] for e in distributor["env"]}
    assert {"name": "corp-ca", "mountPath": "/etc/corp-ca"} in distributor["volumeMounts"]
    assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in pods["distributor"]["volumes"]


def test_the_injected_agents_env_resources_and_image_reach_the_operator(tmp_path: Path) -> None:
    args = _pods(render(tmp_path, NS, AGENT))["operator"]["containers"][0]["args"]
    assert "--agent-env=MALLOC_ARENA_MAX=2" in args
    assert "--agent-image=registry.example.com/lb-agent:9.9.9" in args
    parsed = build_parser().parse_args(args)
    assert parsed.agent_env == ["MALLOC_ARENA_MAX=2"]
    assert parsed.agent_image_pull_policy == "Always"
    assert json.loads(parsed.agent_resources) == AGENT["agent"]["resources"]


# --- disruption budgets ---------------------------------------------------------------------


def test_no_disruption_budget_blocks_a_drain_at_one_replica(tmp_path: Path) -> None:
    single = render(tmp_path, NS, {"replicaCount": 1, "distributor": {"replicas": 1}})
    assert "PodDisruptionBudget" not in _kinds(single)
    budgets = _by_name(render(tmp_path, NS, {}), "PodDisruptionBudget")
    assert budgets[FULLNAME]["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budgets[FULLNAME]["spec"]
    assert budgets[f"{FULLNAME}-distributor"]["spec"]["maxUnavailable"] == 1
    three = render(tmp_path, NS, {"replicaCount": 3, "pdb": {"minAvailable": 2}})
    assert _by_name(three, "PodDisruptionBudget")[FULLNAME]["spec"]["minAvailable"] == 2


def test_a_budget_no_eviction_can_satisfy_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"pdb\.minAvailable 2 with replicaCount 2 blocks every"):
        render(tmp_path, NS, {"pdb": {"minAvailable": 2}})


# --- monitors -------------------------------------------------------------------------------


def test_no_monitor_by_default(tmp_path: Path) -> None:
    kinds = _kinds(render(tmp_path, NS, {}))
    assert "ServiceMonitor" not in kinds and "PodMonitor" not in kinds


def test_the_operator_the_distributor_and_the_agents_are_scraped_when_asked(
    tmp_path: Path,
) -> None:
    objects = render(tmp_path, NS, MONITORS)
    monitors = _by_name(objects, "ServiceMonitor")
    assert set(monitors) == {FULLNAME, f"{FULLNAME}-distributor"}
    (endpoint,) = monitors[f"{FULLNAME}-distributor"]["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["scheme"], endpoint["path"]) == (
        "https",
        "https",
        "/metrics",
    )
    assert endpoint["tlsConfig"] == {
        "serverName": f"{FULLNAME}-distributor.{NS}.svc",
        "ca": {"secret": {"name": f"{FULLNAME}-distributor-tls", "key": "ca.crt"}},
    }
    # The distributor Service names the port the monitor scrapes.
    service = _by_name(objects, "Service")[f"{FULLNAME}-distributor"]
    assert "https" in {p["name"] for p in service["spec"]["ports"]}
    (agents,) = _kinds(objects)["PodMonitor"]
    assert agents["spec"]["selector"] == {"matchLabels": {"logicbundle.io/inject": "true"}}
    assert agents["spec"]["namespaceSelector"] == {"any": True}
    (pod_endpoint,) = agents["spec"]["podMetricsEndpoints"]
    assert (pod_endpoint["port"], pod_endpoint["path"]) == ("lb-agent", "/metrics")
    scoped = render(
        tmp_path,
        NS,
        {**MONITORS, "watchNamespaces": ["team-b", "team-a"], "distributor": {"replicas": 0}},
    )
    assert set(_by_name(scoped, "ServiceMonitor")) == {FULLNAME}
    (agents,) = _kinds(scoped)["PodMonitor"]
    assert agents["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


# --- the CRD ------------------------------------------------------------------------------------


def test_the_logicbundle_crd_is_a_template_kept_on_uninstall(tmp_path: Path) -> None:
    objects = render(tmp_path, NS, {})
    crd = _by_name(objects, "CustomResourceDefinition")[CRD_NAME]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"] == yaml.safe_load(GENERATED_CRD.read_text())["spec"]
    # None of the project's CRDs in crds/, which Helm installs once and never upgrades.
    for path in (CHART / "crds").iterdir():
        assert yaml.safe_load(path.read_text())["spec"]["group"] == "kopf.dev", path
    unkept = _by_name(render(tmp_path, NS, {"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "annotations" not in unkept[CRD_NAME]["metadata"]
    assert "CustomResourceDefinition" not in _kinds(
        render(tmp_path, NS, {"crds": {"install": False}})
    )


def test_helm_lint_passes_strictly_with_every_knob(tmp_path: Path) -> None:
    values = {**OPENSHIFT, **PROXY_AND_CA, **AGENT, **MONITORS, "replicaCount": 3}
    values["pdb"] = {"minAvailable": 2}
    out = _helm(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
        "-f", str(_values_file(tmp_path, values)),
    )  # fmt: skip
    assert "1 chart(s) linted, 0 chart(s) failed" in out


# --- against the API server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pod_monitor_crd(cluster: Cluster, chart_crds: None) -> None:  # noqa: F811
    stub = _stub_crd("monitoring.coreos.com", "PodMonitor", "podmonitors")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(stub))
    cluster.wait_established(stub["metadata"]["name"])


def test_every_knob_passes_a_server_side_dry_run(
    cluster: Cluster, pod_monitor_crd: None, namespace: str, tmp_path: Path
) -> None:
    values = {**OPENSHIFT, **PROXY_AND_CA, **AGENT, **MONITORS}
    objects = [o for o in render(tmp_path, namespace, values) if o["kind"] != "Namespace"]
    out = _dry_run(cluster, namespace, objects)
    assert out.count("(server dry run)") == len(objects), out


OPERATOR_NS = "knobs-system"


@pytest.fixture(scope="module")
def installed(cluster: Cluster, chart_crds: None) -> Iterator[str]:  # noqa: F811
    """The chart installed with its defaults; the CRD, already applied by the suite, adopted."""
    _create_namespace(cluster, OPERATOR_NS)
    # --take-ownership: the session applied the CRD with kubectl before (as a user
    # who installed it by hand would have); the release adopts it.
    _helm("install", RELEASE, str(CHART), "-n", OPERATOR_NS, "--take-ownership", cluster=cluster)
    try:
        yield OPERATOR_NS
    finally:
        try:
            _helm("uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "60s",
                  cluster=cluster)  # fmt: skip
        except HarnessError as error:
            if "not found" not in str(error):
                raise
        _delete_if_present(
            cluster,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/logicbundle-injector",
        )
        _delete_if_present(cluster, f"/api/v1/namespaces/{OPERATOR_NS}")


def _crd(cluster: Cluster) -> dict[str, Any]:
    found: dict[str, Any] = cluster.request(
        "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    )
    return found


def test_the_release_owns_the_crd_and_upgrades_it(
    cluster: Cluster, installed: str, tmp_path: Path
) -> None:
    metadata = _crd(cluster)["metadata"]
    assert metadata["annotations"]["meta.helm.sh/release-name"] == RELEASE
    assert metadata["annotations"]["meta.helm.sh/release-namespace"] == installed
    assert metadata["annotations"]["helm.sh/resource-policy"] == "keep"
    # A chart whose CRD gained a printer column: `helm upgrade` brings it.
    newer = tmp_path / "logicbundle-operator"
    shutil.copytree(CHART, newer)
    crd_file = newer / "files" / "crds" / GENERATED_CRD.name
    document = yaml.safe_load(crd_file.read_text())
    column = {"name": "UpgradeProbe", "type": "string", "jsonPath": ".spec.source.ref"}
    document["spec"]["versions"][0]["additionalPrinterColumns"].append(column)
    crd_file.write_text(yaml.safe_dump(document))
    _helm("upgrade", RELEASE, str(newer), "-n", installed, "--reuse-values", cluster=cluster)
    columns = _crd(cluster)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert column in columns
    # And back: the chart's own CRD again.
    _helm("upgrade", RELEASE, str(CHART), "-n", installed, "--reuse-values", cluster=cluster)
    columns = _crd(cluster)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert "UpgradeProbe" not in {c["name"] for c in columns}


def test_a_second_release_in_the_cluster_is_refused_naming_the_first(
    cluster: Cluster, installed: str, tmp_path: Path
) -> None:
    with pytest.raises(HarnessError) as refused:
        _helm(
            "install", "second", str(CHART), "-n", "knobs-second", "--create-namespace",
            "--take-ownership", cluster=cluster,
        )  # fmt: skip
    message = str(refused.value)
    assert "runs once per cluster" in message
    assert f'release "{RELEASE}" in namespace "{installed}" already runs it' in message
    # The release itself upgrades fine (a server-side dry run sees the cluster).
    _helm(
        "upgrade", RELEASE, str(CHART), "-n", installed, "--reuse-values", "--dry-run=server",
        cluster=cluster,
    )  # fmt: skip
    _delete_if_present(cluster, "/api/v1/namespaces/knobs-second")


def test_helm_uninstall_keeps_the_crd(cluster: Cluster, installed: str) -> None:
    _helm("uninstall", RELEASE, "-n", installed, "--wait", "--timeout", "60s", cluster=cluster)
    assert _crd(cluster)["metadata"]["name"] == CRD_NAME
