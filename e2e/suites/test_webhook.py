"""The injection webhook against the real API server: a Deployment's pods come out with the agent.

The webhook runs in-process on 127.0.0.1 (an event loop in a thread) with a
certificate from the real :class:`CertificateManager`, stored in a real
Secret through :class:`SecretCertificateStore`; the
MutatingWebhookConfiguration is the one :func:`webhook_configuration`
builds, pointed at the local URL and limited to the test's namespace so
other suites are unaffected.  Its failurePolicy is ``Fail`` here (the
product's default is ``Ignore``) so that a broken webhook fails the test
loudly instead of letting pods through without the agent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import config

from e2e.harness.cluster import Cluster
from e2e.harness.proc import wait_for
from logicbundle import contract
from logicbundle.api import names
from logicbundle.webhook import (
    SOCKET_DIR,
    SOCKET_FILE,
    VOLUME_SOCKET,
    WEBHOOK_PATH,
    CertificateBundle,
    CertificateManager,
    InjectionSettings,
    KubernetesClusterView,
    SecretCertificateStore,
    ServingTls,
    WebhookServer,
    create_app,
    has_agent,
    webhook_configuration,
)

STABLE = "sha256:" + "5" * 64
IMAGE = "registry.invalid/logicbundle:e2e"
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
OPTED_IN = {"app": "shop", names.LABEL_INJECT: names.LABEL_INJECT_ENABLED}


@dataclass
class RunningWebhook:
    port: int
    certificate: CertificateBundle
    configuration: str


@pytest.fixture
def webhook(cluster: Cluster, namespace: str, logicbundle_crd: str) -> Iterator[RunningWebhook]:
    """The webhook served on 127.0.0.1 and installed for ``namespace`` only."""
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    configuration = f"logicbundle-e2e-{namespace}"[:253]
    tls = ServingTls()
    certs = CertificateManager(
        store=SecretCertificateStore(
            api_client=api,
            namespace=namespace,
            secret_name="logicbundle-webhook-tls",
            configuration_name=configuration,
        ),
        hosts=("127.0.0.1",),
        on_change=tls.load,
    )
    certificate = certs.ensure()  # creates the Secret (nothing to publish to yet)
    settings = InjectionSettings(
        agent_image=IMAGE,
        operator_namespace="logicbundle-system",
        distributor_url="https://127.0.0.1:1",
    )
    app = create_app(view=KubernetesClusterView(api), settings=settings)
    server = WebhookServer(app, tls=tls, host="127.0.0.1")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="e2e-webhook", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    body = webhook_configuration(
        ca_bundle=certificate.ca_bundle,
        operator_namespace="logicbundle-system",
        url=f"https://127.0.0.1:{server.port}{WEBHOOK_PATH}",
        name=configuration,
        failure_policy="Fail",
        namespace_selector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
    )
    cluster.request("POST", CONFIGURATIONS, body)
    try:
        # The stored certificate is re-read and the (already right) caBundle left as it is.
        assert certs.ensure() == certificate
        yield RunningWebhook(server.port, certificate, configuration)
    finally:
        cluster.request("DELETE", f"{CONFIGURATIONS}/{configuration}")
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        api.close()


def _logic_bundle(cluster: Cluster, namespace: str) -> None:
    base = f"/apis/logicbundle.io/v1alpha1/namespaces/{namespace}/logicbundles"
    cluster.request(
        "POST",
        base,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": "pricing"},
            "spec": {
                "source": {"ref": "registry.example.com/shop/pricing:v1"},
                "verify": {
                    "keys": [{"pem": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"}]
                },
                "target": {"podSelector": {"matchLabels": {"app": "shop"}}},
            },
        },
    )
    cluster.request("PATCH", f"{base}/pricing/status", {"status": {"stableDigest": STABLE}})


def _pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }


def _check_injected(pod: dict[str, Any]) -> None:
    meta, spec = pod["metadata"], pod["spec"]
    annotations = meta["annotations"]
    # No target on the pod: it is a rule over the published state, evaluated elsewhere.
    assert not any(key.startswith("logicbundle.io/target.") for key in annotations)
    assert contract.admitted_at(annotations) > 0
    assert names.ANNOTATION_COHORT_KEY in annotations
    record = json.loads(annotations[names.ANNOTATION_INJECTED])
    assert record["bundles"] == ["pricing"] and record["agentImage"] == IMAGE
    (agent,) = [c for c in spec["initContainers"] if c["name"] == names.AGENT_CONTAINER]
    assert agent["restartPolicy"] == "Always"
    assert agent["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in agent["env"]}
    agent_config = json.loads(env["LOGICBUNDLE_AGENT_CONFIG"]["value"])
    assert agent_config["bundles"]["pricing"]["source"] == "registry.example.com/shop/pricing"
    assert agent_config["socket"] == SOCKET_FILE
    assert {"name": VOLUME_SOCKET, "mountPath": SOCKET_DIR} in agent["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[names.VOLUME_BUNDLES]
    # The API server keeps the socket volume as injected (sizeLimit a quantity it accepts).
    assert volumes[VOLUME_SOCKET]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    sources = volumes[names.VOLUME_TOKEN]["projected"]["sources"]
    assert any(
        s.get("serviceAccountToken", {}).get("audience") == names.DISTRIBUTOR_AUDIENCE
        for s in sources
    )
    assert "downwardAPI" in volumes[names.VOLUME_PODINFO]
    # The API server accepts the optional ConfigMap source of a state not published yet.
    assert volumes[names.VOLUME_STATE]["projected"]["sources"] == [
        {
            "configMap": {
                "name": contract.state_configmap_name("pricing"),
                "optional": True,
                "items": [{"key": contract.STATE_KEY, "path": "pricing.json"}],
            }
        }
    ]
    assert {
        "name": names.VOLUME_STATE,
        "mountPath": contract.STATE_DIR,
        "readOnly": True,
    } in agent["volumeMounts"]
    (app,) = spec["containers"]
    assert {
        "name": names.VOLUME_BUNDLES,
        "mountPath": "/var/run/logicbundle",
        "readOnly": True,
    } in (app["volumeMounts"])
    # The SDK binds its socket read-write, outside the read-only bundles volume.
    assert {"name": VOLUME_SOCKET, "mountPath": SOCKET_DIR} in app["volumeMounts"]
    assert {"name": "LOGICBUNDLE_SOCKET", "value": SOCKET_FILE} in app["env"]
    assert {"conditionType": names.POD_CONDITION_READY} in spec["readinessGates"]


def _ours(pod: dict[str, Any]) -> dict[str, Any]:
    """What the webhook adds (the API server's own token volume has a random name)."""
    spec = pod["spec"]
    ours = {
        names.VOLUME_BUNDLES,
        VOLUME_SOCKET,
        names.VOLUME_TOKEN,
        names.VOLUME_PODINFO,
        names.VOLUME_STATE,
    }

    def mine(container: dict[str, Any]) -> dict[str, Any]:
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] in ours]
        return {**container, "volumeMounts": mounts}

    return {
        "initContainers": [mine(c) for c in spec["initContainers"]],
        "volumes": [v for v in spec["volumes"] if v["name"] in ours],
        "containers": [mine(c) for c in spec["containers"]],
        "readinessGates": spec["readinessGates"],
    }


def test_a_deployments_opted_in_pods_are_created_with_the_agent(
    cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    _logic_bundle(cluster, namespace)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    # The API server picks the configuration up asynchronously (and the
    # namespace's default ServiceAccount appears asynchronously): dry runs until both have.
    wait_for(
        lambda: has_agent(cluster.request("POST", f"{pods}?dryRun=All", _pod("probe", OPTED_IN))),
        what="the webhook configuration to take effect",
        timeout=60,
    )
    cluster.request(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shop"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {
                    "metadata": {"labels": OPTED_IN},
                    "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
                },
            },
        },
    )
    created = wait_for(
        lambda: (
            items
            if len(items := cluster.request("GET", f"{pods}?labelSelector=app%3Dshop")["items"])
            == 2
            else None
        ),
        what="the Deployment's two pods",
        timeout=60,
    )
    keys = set()
    for pod in created:
        _check_injected(pod)
        key = pod["metadata"]["annotations"][names.ANNOTATION_COHORT_KEY]
        assert key.startswith("uid/")  # generateName: the name is unknown at admission
        keys.add(key)
    assert len(keys) == 2

    # The same (already injected) spec created again is left as it is: one agent, one volume each.
    again = created[0]
    clone = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "clone",
            "labels": again["metadata"]["labels"],
            "annotations": again["metadata"]["annotations"],
        },
        "spec": {k: v for k, v in again["spec"].items() if k != "nodeName"},
    }
    cloned = cluster.request("POST", pods, clone)
    assert [c["name"] for c in cloned["spec"]["initContainers"]] == [names.AGENT_CONTAINER]
    assert [v["name"] for v in cloned["spec"]["volumes"]].count(names.VOLUME_BUNDLES) == 1
    assert [v["name"] for v in cloned["spec"]["volumes"]].count(VOLUME_SOCKET) == 1
    assert cloned["metadata"]["annotations"] == again["metadata"]["annotations"]


def test_a_pod_without_the_label_is_untouched_and_a_dry_run_twice_injects_alike(
    cluster: Cluster, namespace: str, webhook: RunningWebhook
) -> None:
    _logic_bundle(cluster, namespace)
    pods = f"/api/v1/namespaces/{namespace}/pods"
    wait_for(
        lambda: has_agent(cluster.request("POST", f"{pods}?dryRun=All", _pod("probe", OPTED_IN))),
        what="the webhook configuration to take effect",
        timeout=60,
    )
    plain = cluster.request("POST", pods, _pod("plain", {"app": "shop"}))
    assert not has_agent(plain)
    assert "annotations" not in plain["metadata"]
    assert "readinessGates" not in plain["spec"]

    first = cluster.request("POST", f"{pods}?dryRun=All", _pod("named", OPTED_IN))
    second = cluster.request("POST", f"{pods}?dryRun=All", _pod("named", OPTED_IN))
    _check_injected(first)
    assert _ours(first) == _ours(second)
    # Alike but for the admission instant, which is the moment each was admitted.
    admitted = contract.ANNOTATION_ADMITTED_AT
    first_at = int(first["metadata"]["annotations"].pop(admitted))
    second_at = int(second["metadata"]["annotations"].pop(admitted))
    assert 0 < first_at <= second_at
    assert first["metadata"]["annotations"] == second["metadata"]["annotations"]
    # A named pod is keyed by its name, so the cohort survives its re-creation.
    assert first["metadata"]["annotations"][names.ANNOTATION_COHORT_KEY] == f"{namespace}/named"

    # The Secret the certificate manager wrote holds what the server serves.
    secret = cluster.request(
        "GET", f"/api/v1/namespaces/{namespace}/secrets/logicbundle-webhook-tls"
    )
    assert base64.b64decode(secret["data"]["tls.crt"]) == webhook.certificate.cert
    configuration = cluster.request("GET", f"{CONFIGURATIONS}/{webhook.configuration}")
    assert base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"]) == (
        webhook.certificate.ca_bundle
    )
