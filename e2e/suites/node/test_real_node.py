"""Smoke tests of the real node: real containers, real CNI, real kube-proxy and CoreDNS."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import netns
from e2e.harness.node import NODE_LABEL, RealNode
from e2e.harness.proc import HarnessError, wait_for
from e2e.suites.node.conftest import RealCluster

REPO = Path(__file__).resolve().parents[3]

POD_TIMEOUT = 120.0


def _pod(
    name: str,
    containers: list[dict[str, Any]],
    *,
    init: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    restart: str = "Always",
    security: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeSelector": {NODE_LABEL: "real"},
        "containers": containers,
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": True,
    }
    if init:
        spec["initContainers"] = init
    if volumes:
        spec["volumes"] = volumes
    if security:
        spec["securityContext"] = security
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def _create(rc: RealCluster, ns: str, manifest: dict[str, Any]) -> None:
    kind = manifest["kind"].lower() + "s"
    rc.cluster.request("POST", f"/api/v1/namespaces/{ns}/{kind}", manifest)


def _get_pod(rc: RealCluster, ns: str, name: str) -> Any:
    return rc.cluster.request("GET", f"/api/v1/namespaces/{ns}/pods/{name}")


def _wait_ready(rc: RealCluster, ns: str, name: str) -> Any:
    def ready() -> Any:
        pod = _get_pod(rc, ns, name)
        conditions = pod.get("status", {}).get("conditions", [])
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return pod if ok else None

    return wait_for(ready, what=f"pod {ns}/{name} Ready", timeout=POD_TIMEOUT)


def _wait_finished(rc: RealCluster, ns: str, name: str) -> str:
    """Wait for a run-once pod to end; its logs, or a failure carrying them."""

    def done() -> Any:
        pod = _get_pod(rc, ns, name)
        phase = pod.get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(done, what=f"pod {ns}/{name} to finish", timeout=POD_TIMEOUT)
    logs = rc.cluster.kubectl("logs", "-n", ns, name)
    assert phase == "Succeeded", f"pod {name} {phase}; logs:\n{logs}"
    return logs


def _exec(rc: RealCluster, ns: str, pod: str, *cmd: str, container: str | None = None) -> str:
    args = ["exec", "-n", ns, pod]
    if container:
        args += ["-c", container]
    return rc.cluster.kubectl(*args, "--", *cmd)


def _busybox(rc: RealCluster, name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": rc.images["busybox"],
        "command": ["/bin/sh", "-c", script],
        **extra,
    }


def _started_at(status: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(status["state"]["running"]["startedAt"])


def test_the_node_is_a_real_kubelet(real_cluster: RealCluster) -> None:
    node = real_cluster.node.node()
    assert node["metadata"]["labels"][NODE_LABEL] == "real"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert not node["spec"].get("taints")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == "10.88.0.1"


def test_native_sidecar_starts_first_and_pod_becomes_ready(
    real_cluster: RealCluster, real_namespace: str
) -> None:
    rc, ns = real_cluster, real_namespace
    shared = {"name": "shared", "mountPath": "/shared"}
    podinfo = {"name": "podinfo", "mountPath": "/etc/podinfo", "readOnly": True}
    sidecar = _busybox(
        rc,
        "sidecar",
        "echo sidecar >> /shared/order; touch /shared/sidecar-ready; exec sleep 2147483647",
        restartPolicy="Always",
        volumeMounts=[shared],
        startupProbe={
            "exec": {"command": ["/bin/test", "-f", "/shared/sidecar-ready"]},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
    )
    app = _busybox(
        rc,
        "app",
        "echo app >> /shared/order; exec sleep 2147483647",
        volumeMounts=[shared, podinfo],
        readinessProbe={
            "exec": {"command": ["/bin/grep", "-q", "app", "/shared/order"]},
            "periodSeconds": 1,
        },
    )
    volumes = [
        {"name": "shared", "emptyDir": {}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                ]
            },
        },
    ]
    _create(
        rc,
        ns,
        _pod(
            "sidecar-pod",
            [app],
            init=[sidecar],
            volumes=volumes,
            labels={"app": "sidecar-pod", "tier": "smoke"},
        ),
    )
    pod = _wait_ready(rc, ns, "sidecar-pod")

    assert _exec(rc, ns, "sidecar-pod", "cat", "/shared/order", container="app") == "sidecar\napp\n"
    init_status = pod["status"]["initContainerStatuses"][0]
    app_status = pod["status"]["containerStatuses"][0]
    assert init_status["name"] == "sidecar" and init_status["started"] is True
    assert init_status["ready"] is True and app_status["ready"] is True
    assert _started_at(init_status) <= _started_at(app_status)
    labels = _exec(rc, ns, "sidecar-pod", "cat", "/etc/podinfo/labels", container="app")
    assert 'tier="smoke"' in labels
    assert _exec(rc, ns, "sidecar-pod", "cat", "/etc/podinfo/name") == "sidecar-pod"


def test_service_dns_name_resolves_and_cluster_ip_routes(
    real_cluster: RealCluster, real_namespace: str
) -> None:
    rc, ns = real_cluster, real_namespace
    server = _busybox(
        rc,
        "httpd",
        "mkdir -p /tmp/www && echo hello-from-httpd > /tmp/www/index.html "
        "&& exec httpd -f -p 8080 -h /tmp/www",
        ports=[{"containerPort": 8080}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )
    _create(rc, ns, _pod("web", [server], labels={"app": "web"}))
    _create(
        rc,
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    _create(rc, ns, _pod("client", [_busybox(rc, "client", "exec sleep 2147483647")]))
    _wait_ready(rc, ns, "web")
    _wait_ready(rc, ns, "client")
    cluster_ip = rc.cluster.request("GET", f"/api/v1/namespaces/{ns}/services/web")["spec"][
        "clusterIP"
    ]
    name = f"web.{ns}.svc"

    # Busybox's nslookup asks CoreDNS for exactly the name given (no search list).
    def resolved() -> str | None:
        out = _exec(rc, ns, "client", "nslookup", f"{name}.cluster.local")
        return out if cluster_ip in out else None

    wait_for(resolved, what=f"{name}.cluster.local resolving to {cluster_ip}", timeout=60)

    # wget resolves the short name through the pod's resolv.conf search list, then goes
    # through kube-proxy's rules to the other pod.  (Debian's busybox wget crashes on
    # -T: the busybox applet `timeout` bounds it instead.)
    def fetched() -> str | None:
        out = _exec(rc, ns, "client", "timeout", "5", "wget", "-qO-", f"http://{name}/")
        return out if "hello-from-httpd" in out else None

    assert wait_for(fetched, what=f"GET http://{name}/", timeout=60) == "hello-from-httpd\n"


def test_non_root_read_only_pod_cannot_write_its_root(
    real_cluster: RealCluster, real_namespace: str
) -> None:
    rc, ns = real_cluster, real_namespace
    locked = _busybox(
        rc,
        "locked",
        "id -u; if touch /probe 2>/dev/null; then echo WRITABLE; else echo READONLY; fi; "
        "grep CapEff /proc/self/status",
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    )
    _create(rc, ns, _pod("locked", [locked], restart="Never"))
    lines = _wait_finished(rc, ns, "locked").split("\n")
    assert lines[0] == "65534"
    assert lines[1] == "READONLY"
    assert lines[2].split() == ["CapEff:", "0000000000000000"]


def test_pod_reaches_the_kubernetes_service(real_cluster: RealCluster, real_namespace: str) -> None:
    rc, ns = real_cluster, real_namespace
    script = (
        "TOKEN=$(cat /var/run/secrets/kubernetes.io/serviceaccount/token); "
        'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
        "timeout 10 wget -qO- --no-check-certificate "
        '--header "Authorization: Bearer $TOKEN" '
        '"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version"'
    )
    _create(rc, ns, _pod("apicall", [_busybox(rc, "apicall", script)], restart="Never"))
    out = _wait_finished(rc, ns, "apicall")
    first, _, body = out.partition("\n")
    assert first == "10.96.0.1:443"
    assert '"gitVersion"' in body


def _a_pod_on_the_bridge(rc: RealCluster, ns: str) -> None:
    _create(rc, ns, _pod("sleeper", [_busybox(rc, "sleeper", "exec sleep 3600")]))
    _wait_ready(rc, ns, "sleeper")
    assert netns.bridge_ports(), "a running pod's veth should be on this namespace's bridge"


def test_the_launcher_run_inside_the_namespace_nests_a_new_one(
    real_cluster: RealCluster, real_namespace: str
) -> None:
    """The real-node demo runs beside this suite's node: it needs a bridge of its own."""
    _a_pod_on_the_bridge(real_cluster, real_namespace)
    probe = (
        "import os, json; from e2e.harness import netns; "
        "print(json.dumps([os.stat('/proc/self/ns/net').st_ino, netns.bridge_ports(), "
        "netns.namespace_id()]))"
    )
    done = subprocess.run(
        [sys.executable, "-m", "e2e.harness.netns", "--", sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    inode, ports, ns_id = json.loads(done.stdout.strip().splitlines()[-1])
    assert inode != Path("/proc/self/ns/net").stat().st_ino
    assert ports == []  # a fresh bridge: none of this suite's pods
    assert ns_id and ns_id != netns.namespace_id()  # cgroup names of its own


def test_a_second_node_on_the_same_bridge_is_refused(
    real_cluster: RealCluster, real_namespace: str, tmp_path: Path
) -> None:
    """Two nodes' IPAM would hand the same pod addresses out on one bridge."""
    _a_pod_on_the_bridge(real_cluster, real_namespace)
    with pytest.raises(HarnessError, match="share this namespace"):
        RealNode.start(
            tmp_path / "second",
            real_cluster.cluster,
            registry_host=real_cluster.registry.host,
            sandbox_image=real_cluster.images["pause"],
            name="real-node-1",
        )
    assert not (tmp_path / "second").exists()  # refused before anything started
