"""The distributor against the real API server: real pod-bound tokens, TokenReview, the rule.

Pods are created in the test namespace (kwok runs them), tokens come from the
TokenRequest API bound to each pod with the distributor's audience, and the
distributor runs in-process exactly as ``logicbundle distributor`` does
(:func:`serve_distributor`: TokenReview authenticator, the watcher that
computes each pod's targets from the LogicBundle's published state and the
pod's own facts, the pod-status writer), with the harness's kubeconfig.

No operator runs here: the test writes the LogicBundle and its
``status.targetState`` itself, as the operator would, through the real CRD.
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
from logicbundle import contract
from logicbundle.api import names
from logicbundle.artifact import oci_manifest
from logicbundle.bundle import pack_directory_to
from logicbundle.distributor import BlobCache, DistributorSettings, serve_distributor
from logicbundle.oci import sha256_digest

SA = "agent"
BUNDLE = "pricing"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
DEADLINE = 30.0
EVERY_POSITION = f"0x{contract.POSITION_LIMIT:x}"
"""A percent threshold that takes every pod admitted by the seal."""

INTERNAL_STAGE = {
    "bundle": BUNDLE,
    "stable": D1,
    "candidate": D2,
    "stage": {"internal": {"matchLabels": {"cohort": "internal"}}},
}


@dataclass(frozen=True)
class Pod:
    name: str
    uid: str


@dataclass(frozen=True)
class Pods:
    a: Pod
    """app=web, admitted at 1000; no readiness gate (see :func:`_create_pod`)."""
    b: Pod
    """app=web, cohort=internal, admitted at 3000; the readiness gate, which kwok set True."""
    other: Pod
    """app=api: no bundle selects it."""
    bare: Pod
    """app=web, opted in but without the agent container: not served."""


@dataclass(frozen=True)
class Distributor:
    url: str


def _bundles_path(namespace: str) -> str:
    return f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{namespace}/{names.PLURAL}"


def _publish(cluster: Cluster, namespace: str, state: dict[str, Any]) -> None:
    """What the operator does at a rollout step: one write of the bundle's status."""
    cluster.request(
        "PATCH",
        f"{_bundles_path(namespace)}/{BUNDLE}/status",
        {"status": {"targetState": state}},
    )


def _create_pod(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    labels: dict[str, str],
    admitted: int,
    agent: bool = True,
    gate: bool = True,
) -> Pod:
    """An opted-in pod, as the webhook leaves it (agent, facts, readiness gate).

    kwok plays the kubelet and sets every readiness-gate condition ``True``
    itself when the pod runs; ``gate=False`` leaves the condition to the
    distributor alone.
    """
    spec: dict[str, Any] = {
        "serviceAccountName": SA,
        "automountServiceAccountToken": False,
        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
    }
    if gate:
        spec["readinessGates"] = [{"conditionType": names.POD_CONDITION_READY}]
    if agent:
        spec["initContainers"] = [
            {
                "name": names.AGENT_CONTAINER,
                "image": "registry.invalid/lb:1",
                "restartPolicy": "Always",
            }
        ]
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED, **labels},
                "annotations": {
                    contract.ANNOTATION_COHORT_KEY: f"key-{name}",
                    contract.ANNOTATION_ADMITTED_AT: str(admitted),
                },
            },
            "spec": spec,
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


def _targets(dist: Distributor, token: str) -> dict[str, Any]:
    """What an agent gets at start.  The distributor listens only once it knows every pod."""
    status, body = _call(f"{dist.url}/v1/targets", token=token)
    assert status == 200, body
    return dict(body)


def _digests(body: dict[str, Any]) -> dict[str, str]:
    return {bundle: target["digest"] for bundle, target in body["targets"].items()}


def _follow_until(
    dist: Distributor, token: str, body: dict[str, Any], want: dict[str, str]
) -> dict[str, Any]:
    """Long-poll, as the agent does, until the pod's targets are ``want``."""
    deadline = time.monotonic() + DEADLINE
    while _digests(body) != want:
        assert time.monotonic() < deadline, f"never got {want}; last {body}"
        status, fresh = _call(
            f"{dist.url}/v1/targets?wait=10&version={body['version']}", token=token
        )
        if status == 200:
            body = fresh
    return body


def _metric(dist: Distributor, name: str) -> float:
    with urllib.request.urlopen(f"{dist.url}/metrics", timeout=DEADLINE) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@pytest.fixture
def service_account(cluster: Cluster, namespace: str) -> str:
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
    )
    return SA


@pytest.fixture
def bundle(cluster: Cluster, logicbundle_crd: str, namespace: str) -> str:
    """The LogicBundle ``pricing`` selecting app=web, published with every pod on D1."""
    cluster.request(
        "POST",
        _bundles_path(namespace),
        {
            "apiVersion": names.API_VERSION,
            "kind": "LogicBundle",
            "metadata": {"name": BUNDLE},
            "spec": {
                "source": {"ref": "127.0.0.1:5000/team/pricing:v1"},
                "verify": {
                    "keyless": {
                        "identities": [
                            {"issuer": "https://issuer.example", "subject": "ci@example.com"}
                        ]
                    }
                },
                "target": {"podSelector": {"matchLabels": {"app": "web"}}},
            },
        },
    )
    _publish(cluster, namespace, {"bundle": BUNDLE, "stable": D1})
    return BUNDLE


@pytest.fixture
def pods(cluster: Cluster, namespace: str, service_account: str) -> Pods:
    made = Pods(
        a=_create_pod(
            cluster, namespace, "web-a", labels={"app": "web"}, admitted=1000, gate=False
        ),
        b=_create_pod(
            cluster,
            namespace,
            "web-b",
            labels={"app": "web", "cohort": "internal"},
            admitted=3000,
        ),
        other=_create_pod(cluster, namespace, "api-0", labels={"app": "api"}, admitted=1000),
        bare=_create_pod(
            cluster, namespace, "bare", labels={"app": "web"}, admitted=1000, agent=False
        ),
    )
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=60s",
        "pod/web-a",
        "pod/web-b",
        "pod/api-0",
        "pod/bare",
    )
    return made


@pytest.fixture
def distributor(
    cluster: Cluster, namespace: str, bundle: str, pods: Pods, tmp_path: Path
) -> Iterator[Distributor]:
    """``serve_distributor`` on 127.0.0.1 in a thread of its own, stopped after the test.

    Ready once it listens, which is once it has listed the LogicBundles, then the pods.
    """
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


def test_each_pod_gets_the_target_its_rule_gives_with_a_real_bound_token(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    a = _targets(distributor, _token(cluster, namespace, pods.a))
    assert a["pod"] == {"namespace": namespace, "name": "web-a", "uid": pods.a.uid}
    assert (a["known"], _digests(a)) == (True, {BUNDLE: D1})
    assert a["targets"][BUNDLE]["source"].startswith("127.0.0.1:5000/team/pricing")
    other = _targets(distributor, _token(cluster, namespace, pods.other))
    assert (other["known"], other["targets"]) == (True, {}), "selected by no bundle"
    bare = _targets(distributor, _token(cluster, namespace, pods.bare))
    assert bare["known"] is False, "no agent container: not served"


def test_an_internal_stage_gives_the_candidate_to_the_matching_pods_only(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    token_a, token_b = _token(cluster, namespace, pods.a), _token(cluster, namespace, pods.b)
    _publish(cluster, namespace, INTERNAL_STAGE)
    _follow_until(distributor, token_b, _targets(distributor, token_b), {BUNDLE: D2})
    assert _digests(_targets(distributor, token_a)) == {BUNDLE: D1}


def test_a_percent_stage_follows_the_admission_seal_on_the_pods(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    token_a, token_b = _token(cluster, namespace, pods.a), _token(cluster, namespace, pods.b)
    stage = {"percent": {"threshold": EVERY_POSITION, "sealed": 2000}}
    _publish(cluster, namespace, {"bundle": BUNDLE, "stable": D1, "candidate": D2, "stage": stage})
    _follow_until(distributor, token_a, _targets(distributor, token_a), {BUNDLE: D2})
    assert _digests(_targets(distributor, token_b)) == {BUNDLE: D1}, "admitted after the seal"


def test_a_state_that_cannot_be_followed_changes_nothing(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    token = _token(cluster, namespace, pods.a)
    first = _targets(distributor, token)
    # The CRD's schema refuses most malformed states; a state published under another
    # bundle's name passes it, and the distributor must not follow it.
    _publish(cluster, namespace, {"bundle": "inventory", "stable": D2})
    # A good state after the bad one: when it is served, the bad one was seen.
    _publish(cluster, namespace, INTERNAL_STAGE)
    token_b = _token(cluster, namespace, pods.b)
    _follow_until(distributor, token_b, _targets(distributor, token_b), {BUNDLE: D2})
    status, _ = _call(f"{distributor.url}/v1/targets?version={first['version']}", token=token)
    assert status == 304, "pod a was never told anything else"


def test_pod_a_naming_pod_b_is_refused_and_b_digest_is_refused_to_a(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    _publish(cluster, namespace, INTERNAL_STAGE)
    token_b = _token(cluster, namespace, pods.b)
    _follow_until(distributor, token_b, _targets(distributor, token_b), {BUNDLE: D2})
    token = _token(cluster, namespace, pods.a)
    status, body = _call(f"{distributor.url}/v1/targets?pod=web-b", token=token)
    assert status == 403, body
    status, body = _call(f"{distributor.url}/v1/manifests/{D2}", token=token)
    assert status == 403, body


def test_a_token_for_another_audience_or_no_pod_is_refused(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    wrong_audience = _token(cluster, namespace, pods.a, audience="https://kubernetes.default.svc")
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


def test_a_published_state_answers_the_long_poll_within_the_deadline(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    token = _token(cluster, namespace, pods.a)
    first = _targets(distributor, token)
    url = f"{distributor.url}/v1/targets?wait={DEADLINE}&version={first['version']}"
    with ThreadPoolExecutor(max_workers=1) as pool:
        poll = pool.submit(_call, url, token=token)
        written = time.perf_counter()
        _publish(cluster, namespace, {"bundle": BUNDLE, "stable": D2})
        status, body = poll.result(timeout=DEADLINE)
        latency = time.perf_counter() - written
    assert status == 200, body
    assert _digests(body) == {BUNDLE: D2}
    print(f"targetState written -> long-poll answered: {latency * 1000:.1f} ms")


def _pod_changes(
    cluster: Cluster, namespace: str, name: str, since: str, seconds: int
) -> list[Any]:
    """Every change of the pod after resourceVersion ``since``, watched for ``seconds``."""
    query = (
        f"watch=1&fieldSelector=metadata.name%3D{name}&resourceVersion={since}"
        f"&timeoutSeconds={seconds}"
    )
    request = urllib.request.Request(
        f"{cluster.server}/api/v1/namespaces/{namespace}/pods?{query}",
        headers={"Accept": "application/json"},
    )
    events = []
    with urllib.request.urlopen(
        request, context=cluster.ssl_context(), timeout=seconds + DEADLINE
    ) as resp:
        for line in resp:
            if line.strip():
                events.append(json.loads(line))
    return events


def test_a_report_turns_the_readiness_condition_true_once_and_writes_nothing_else(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    token = _token(cluster, namespace, pods.a)
    _targets(distributor, token)
    before = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/web-a")
    since = before["metadata"]["resourceVersion"]
    report = {"bundles": {BUNDLE: {"active": D1, "healthy": True}}}
    writes = "logicbundle_distributor_pod_status_writes_total"
    status, body = _call(f"{distributor.url}/v1/reports", token=token, method="POST", body=report)
    assert status == 204, body

    # The report is answered first; the pod is written in the background.
    def recorded() -> dict[str, Any] | None:
        pod = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/web-a")
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        if conditions.get(names.POD_CONDITION_READY, {}).get("status") == "True":
            return dict(pod)
        return None

    pod = wait_for(recorded, what="the readiness condition on the pod", timeout=DEADLINE)
    conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
    condition = conditions[names.POD_CONDITION_READY]
    assert (condition["status"], condition["reason"]) == ("True", "BundlesActive")
    annotations = pod["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("logicbundle.io/active.")]
    written = _metric(distributor, writes)

    # The same report again: decided before the 204, nothing to deliver.
    status, body = _call(f"{distributor.url}/v1/reports", token=token, method="POST", body=report)
    assert status == 204, body
    assert _metric(distributor, writes) == written

    changes = _pod_changes(cluster, namespace, "web-a", since, seconds=3)
    assert [e["type"] for e in changes] == ["MODIFIED"], [
        (e["type"], e["object"]["metadata"]["resourceVersion"]) for e in changes
    ]
    assert changes[0]["object"]["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]


def test_a_cached_bundle_is_served_to_its_pod(
    cluster: Cluster,
    namespace: str,
    pods: Pods,
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
    _publish(cluster, namespace, {"bundle": BUNDLE, "stable": digest})
    token = _token(cluster, namespace, pods.a)
    _follow_until(distributor, token, _targets(distributor, token), {BUNDLE: digest})
    request = urllib.request.Request(
        f"{distributor.url}/v1/blobs/{packed.layer_digest}",
        headers={"Authorization": f"Bearer {token}", "Range": "bytes=10-"},
    )
    with urllib.request.urlopen(request, timeout=DEADLINE) as resp:
        assert resp.status == 206
        assert resp.read() == layer.read_bytes()[10:]


def test_a_pod_that_already_shows_ready_is_not_written(
    cluster: Cluster, namespace: str, pods: Pods, distributor: Distributor
) -> None:
    """kwok set pod b's readiness gate True; the distributor's watch saw it, so a report
    that says the same (a restarted distributor's first report) writes nothing."""
    token = _token(cluster, namespace, pods.b)
    _targets(distributor, token)
    before = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/web-b")
    conditions = {c["type"]: c for c in before["status"].get("conditions", [])}
    assert conditions[names.POD_CONDITION_READY]["status"] == "True"
    report = {"bundles": {BUNDLE: {"active": D1, "healthy": True}}}
    status, body = _call(f"{distributor.url}/v1/reports", token=token, method="POST", body=report)
    assert status == 204, body
    since = before["metadata"]["resourceVersion"]
    assert _pod_changes(cluster, namespace, "web-b", since, seconds=3) == []
