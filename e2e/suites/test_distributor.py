"""The distributor against the real API server: real pod-bound tokens, TokenReview, pod watch.

Pods are created in the test namespace (kwok runs them), tokens come from the
TokenRequest API bound to each pod with the distributor's audience, and the
distributor runs in-process exactly as ``logicbundle distributor`` does
(:func:`serve_distributor`: TokenReview authenticator, pod watcher fed by the
target annotations, pod-status writer), with the harness's kubeconfig.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.proc import wait_for
from logicbundle.api import names
from logicbundle.artifact import oci_manifest
from logicbundle.bundle import pack_directory_to
from logicbundle.distributor import BlobCache, DistributorSettings, serve_distributor
from logicbundle.oci import sha256_digest

SA = "agent"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DEADLINE = 30.0


@dataclass(frozen=True)
class Pod:
    name: str
    uid: str


@dataclass(frozen=True)
class Distributor:
    url: str


def _create_pod(cluster: Cluster, namespace: str, name: str, annotations: dict[str, str]) -> Pod:
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED},
                "annotations": annotations,
            },
            "spec": {
                "serviceAccountName": SA,
                "automountServiceAccountToken": False,
                "readinessGates": [{"conditionType": names.POD_CONDITION_READY}],
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        },
    )
    return Pod(name=name, uid=body["metadata"]["uid"])


def _token(
    cluster: Cluster, namespace: str, pod: Pod, *, audience: str = names.DISTRIBUTOR_AUDIENCE
) -> str:
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{SA}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience],
                "expirationSeconds": 600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": pod.uid,
                },
            },
        },
    )
    return str(body["status"]["token"])


def _call(
    url: str, *, token: str, method: str = "GET", body: Any = None, timeout: float = DEADLINE
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw


def _poll_until_known(dist: Distributor, token: str) -> dict[str, Any]:
    """What an agent does at start: poll, and long-poll until the distributor knows the pod."""
    status, body = _call(f"{dist.url}/v1/targets", token=token)
    assert status == 200, body
    deadline = time.monotonic() + DEADLINE
    while not body["known"]:
        assert time.monotonic() < deadline, "the pod watcher never reported the pod"
        status, fresh = _call(
            f"{dist.url}/v1/targets?wait=10&version={body['version']}", token=token
        )
        if status == 200:
            body = fresh
    return dict(body)


@pytest.fixture
def service_account(cluster: Cluster, namespace: str) -> str:
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
    )
    return SA


@pytest.fixture
def pods(cluster: Cluster, namespace: str, service_account: str) -> tuple[Pod, Pod]:
    a = _create_pod(cluster, namespace, "web-a", {names.target_annotation("pricing"): D1})
    b = _create_pod(cluster, namespace, "web-b", {names.target_annotation("pricing"): D2})
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=60s",
        "pod/web-a",
        "pod/web-b",
    )
    return a, b


@pytest.fixture
def distributor(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Distributor]:
    """``serve_distributor`` on 127.0.0.1 in a thread of its own, stopped after the test."""
    settings = DistributorSettings(
        cache_dir=tmp_path / "cache",
        host="127.0.0.1",
        port=0,
        insecure_http=True,  # a loopback test; production serves TLS
        namespaces=(namespace,),
        kubeconfig=cluster.kubeconfig,
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    def on_ready(bound: int) -> None:
        port.append(bound)
        ready.set()

    def main() -> None:
        try:
            loop.run_until_complete(serve_distributor(settings, stop=stop, on_ready=on_ready))
        except BaseException as exc:
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="distributor", daemon=True)
    thread.start()
    assert ready.wait(DEADLINE), "the distributor did not start"
    assert not failure, failure
    yield Distributor(url=f"http://127.0.0.1:{port[0]}")
    loop.call_soon_threadsafe(stop.set)
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the distributor did not stop"
    assert not failure, failure


def test_a_pod_gets_its_own_targets_with_a_real_bound_token(
    cluster: Cluster, namespace: str, pods: tuple[Pod, Pod], distributor: Distributor
) -> None:
    a, _ = pods
    body = _poll_until_known(distributor, _token(cluster, namespace, a))
    assert body["pod"] == {"namespace": namespace, "name": "web-a", "uid": a.uid}
    assert body["targets"] == {"pricing": {"digest": D1}}


def test_pod_a_naming_pod_b_is_refused_and_b_digest_is_refused_to_a(
    cluster: Cluster, namespace: str, pods: tuple[Pod, Pod], distributor: Distributor
) -> None:
    a, _ = pods
    token = _token(cluster, namespace, a)
    status, body = _call(f"{distributor.url}/v1/targets?pod=web-b", token=token)
    assert status == 403, body
    status, body = _call(f"{distributor.url}/v1/manifests/{D2}", token=token)
    assert status == 403, body


def test_a_token_for_another_audience_or_no_pod_is_refused(
    cluster: Cluster, namespace: str, pods: tuple[Pod, Pod], distributor: Distributor
) -> None:
    a, _ = pods
    wrong_audience = _token(cluster, namespace, a, audience="https://kubernetes.default.svc")
    status, body = _call(f"{distributor.url}/v1/targets", token=wrong_audience)
    assert status == 401, body
    unbound = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{SA}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [names.DISTRIBUTOR_AUDIENCE], "expirationSeconds": 600},
        },
    )["status"]["token"]
    status, body = _call(f"{distributor.url}/v1/targets", token=unbound)
    assert status == 401, body
    assert "not bound to a pod" in body["error"]["message"]
    status, _ = _call(f"{distributor.url}/v1/targets", token="not-a-token")
    assert status == 401


def test_an_annotation_change_answers_the_long_poll_within_the_deadline(
    cluster: Cluster, namespace: str, pods: tuple[Pod, Pod], distributor: Distributor
) -> None:
    a, _ = pods
    token = _token(cluster, namespace, a)
    first = _poll_until_known(distributor, token)
    url = f"{distributor.url}/v1/targets?wait={DEADLINE}&version={first['version']}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        poll = pool.submit(_call, url, token=token)
        written = time.perf_counter()
        cluster.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/web-a",
            {"metadata": {"annotations": {names.target_annotation("pricing"): D2}}},
        )
        status, body = poll.result(timeout=DEADLINE)
        latency = time.perf_counter() - written
    assert status == 200, body
    assert body["targets"] == {"pricing": {"digest": D2}}
    print(f"annotation written -> long-poll answered: {latency * 1000:.1f} ms")


def test_a_report_records_the_active_annotation_and_the_readiness_condition(
    cluster: Cluster, namespace: str, pods: tuple[Pod, Pod], distributor: Distributor
) -> None:
    a, _ = pods
    token = _token(cluster, namespace, a)
    _poll_until_known(distributor, token)
    report = {"bundles": {"pricing": {"active": D1, "healthy": True}}}
    status, body = _call(f"{distributor.url}/v1/reports", token=token, method="POST", body=report)
    assert status == 204, body

    # The report is answered first; the pod is written in the background.
    def recorded() -> dict[str, Any] | None:
        pod = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/web-a")
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        condition = conditions.get(names.POD_CONDITION_READY, {})
        annotations = pod["metadata"].get("annotations") or {}
        if condition.get("reason") and annotations.get(names.active_annotation("pricing")):
            return dict(pod)
        return None

    pod = wait_for(recorded, what="the report recorded on the pod", timeout=DEADLINE)
    assert pod["metadata"]["annotations"][names.active_annotation("pricing")] == D1
    conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
    condition = conditions[names.POD_CONDITION_READY]
    assert (condition["status"], condition["reason"]) == ("True", "BundlesActive")


def test_a_cached_bundle_is_served_to_its_pod(
    cluster: Cluster,
    namespace: str,
    pods: tuple[Pod, Pod],
    distributor: Distributor,
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "rules.py").write_text("VERSION = 1\n")
    layer = tmp_path / "layer.tar.gz"
    with layer.open("wb") as out:
        packed = pack_directory_to(
            src,
            out,
            name="pricing",
            version="1.0.0",
            interface={"functions": {"price": {"params": [], "returns": "float"}}},
            entrypoint="rules:Rules",
        )
    manifest = oci_manifest(packed)
    digest = sha256_digest(manifest)
    BlobCache(tmp_path / "cache").put(
        digest=digest, manifest=manifest, config=packed.config, layer=layer
    )
    cluster.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/web-a",
        {"metadata": {"annotations": {names.target_annotation("pricing"): digest}}},
    )
    a, _ = pods
    token = _token(cluster, namespace, a)
    body = _poll_until_known(distributor, token)
    deadline = time.monotonic() + DEADLINE
    while body["targets"]["pricing"]["digest"] != digest:
        assert time.monotonic() < deadline, "the new target never arrived"
        status, fresh = _call(
            f"{distributor.url}/v1/targets?wait=10&version={body['version']}", token=token
        )
        body = fresh if status == 200 else body
    request = urllib.request.Request(
        f"{distributor.url}/v1/blobs/{packed.layer_digest}",
        headers={"Authorization": f"Bearer {token}", "Range": "bytes=10-"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE) as resp:
        assert resp.status == 206
        assert resp.read() == layer.read_bytes()[10:]
