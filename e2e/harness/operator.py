"""The operator as a real process against the harness, and helpers to drive LogicBundles.

Used by the controller's e2e suites, the benchmarks and the demo: start
``logicbundle operator`` with its embedded distributor on 127.0.0.1, push and
sign bundles into the harness registry, create opted-in pods, and wait on
LogicBundle conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError, Process, free_port, wait_for
from logicbundle import contract
from logicbundle.api import names
from logicbundle.artifact import push_directory
from logicbundle.distributor import facts_of, rule_of
from logicbundle.oci import Reference, RegistryClient
from logicbundle.trust import attach_signature, sign_with_key

LB_PATH = "/apis/logicbundle.io/v1alpha1/namespaces/{namespace}/logicbundles"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "logicbundle.io_logicbundles.yaml"


@dataclass
class Operator:
    """A running ``logicbundle operator`` process."""

    process: Process
    distributor_port: int
    metrics_port: int

    @property
    def distributor_url(self) -> str:
        return f"http://127.0.0.1:{self.distributor_port}"

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        run_dir: Path,
        *,
        name: str = "operator",
        extra: tuple[str, ...] = (),
        ports: tuple[int, int] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Operator:
        """Start the operator; ``env``: more environment (a test pause point, say)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        port, metrics = ports or (free_port(), free_port())
        process = Process(
            name,
            [
                sys.executable,
                "-m",
                "logicbundle.cli",
                "operator",
                "--distributor-port",
                str(port),
                "--distributor-insecure-http",
                "--metrics-port",
                str(metrics),
                "--cache-dir",
                str(run_dir / f"{name}-cache"),
                *extra,
            ],
            run_dir=run_dir,
            env={**cluster.env(), **(env or {})},
        )
        wait_for(
            lambda: re.search(r"distributor listening on port \d+", process.log_path.read_text()),
            what="the operator's distributor",
            timeout=60,
            watch=[process],
        )
        return cls(process=process, distributor_port=port, metrics_port=metrics)

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop()

    def crash_and_restart(self, cluster: Cluster, *, env: Mapping[str, str] | None = None) -> None:
        """SIGKILL the operator and start it again on the same ports and cache (like a pod).

        ``env``: more environment for the new process only (the next restart drops it).
        """
        self.kill()
        self._start_again(cluster, env)

    def _start_again(self, cluster: Cluster, env: Mapping[str, str] | None) -> None:
        again = Operator.start(
            cluster,
            self.process.log_path.parent,
            name=self.process.name,
            ports=(self.distributor_port, self.metrics_port),
            env=env,
        )
        self.process = again.process


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: str

    @classmethod
    def generate(cls) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
        )


def push_bundle(
    registry_host: str,
    source: Path,
    *,
    repository: str,
    tag: str,
    version: str,
    key: KeyPair | None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Push an example bundle directory (signed with ``key`` unless None); its digest.

    The repository goes into the bundle's labels, so every repository gets its own
    digest: a digest verified once stays verified, wherever it is pushed again.
    """
    from examples.sample_app.bundles import ENTRYPOINT, INTERFACE

    with RegistryClient(insecure=True) as client:
        pushed = push_directory(
            client,
            Reference(registry_host, repository, tag),
            source,
            name=repository.rsplit("/", 1)[-1],
            version=version,
            interface=INTERFACE,
            entrypoint=ENTRYPOINT,
            labels={"e2e-repository": repository.replace("/", "."), **(labels or {})},
        )
        if key is not None:
            attach_signature(
                client,
                pushed.reference,
                sign_with_key(digest=pushed.digest, private_key_pem=key.private_pem),
            )
    return pushed.digest


def logicbundle(
    name: str,
    *,
    ref: str,
    key: KeyPair,
    selector: Mapping[str, str],
    rollout: Mapping[str, Any] | None = None,
    interval: str = "2s",
    notify: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"ref": ref, "insecure": True, "interval": interval},
        "verify": {"keys": [{"pem": key.public_pem}]},
        "target": {"podSelector": {"matchLabels": dict(selector)}},
    }
    if notify is not None:
        spec["target"]["notify"] = dict(notify)
    if rollout is not None:
        spec["rollout"] = dict(rollout)
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(cluster: Cluster, namespace: str, obj: Mapping[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def get_bundle(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    bundle: dict[str, Any] = cluster.request(
        "GET", LB_PATH.format(namespace=namespace) + f"/{name}"
    )
    return bundle


class BundleWatch:
    """Every stored version of one LogicBundle, in order, from a watch on the API server.

    Polling misses a status that lives for less than one poll (a last stage whose
    pods all switch within a second); a watch delivers each version the API
    server stored. A background thread follows the watch, reconnecting from the
    last resourceVersion it saw, until :meth:`stop`.
    """

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self._cluster, self._namespace, self._name = cluster, namespace, name
        self._objects: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"watch-{name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        version = ""
        while not self._stop.is_set():
            query = {
                "watch": "1",
                "fieldSelector": f"metadata.name={self._name}",
                "allowWatchBookmarks": "false",
                "timeoutSeconds": "30",
            }
            if version:
                query["resourceVersion"] = version
            url = (
                self._cluster.server
                + LB_PATH.format(namespace=self._namespace)
                + "?"
                + urllib.parse.urlencode(query)
            )
            try:
                # A short read timeout lets stop() end the thread promptly; a timed-out
                # read just reconnects from the last version seen, losing nothing.
                with urllib.request.urlopen(
                    url, context=self._cluster.ssl_context(), timeout=1.0
                ) as stream:
                    for line in stream:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":  # e.g. 410 Gone: start afresh
                            version = ""
                            break
                        obj = event.get("object") or {}
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if event.get("type") in {"ADDED", "MODIFIED"}:
                            self._objects.put(obj)
                        if self._stop.is_set():
                            return
            except (OSError, ValueError):
                self._stop.wait(0.2)

    def drain(self) -> list[dict[str, Any]]:
        """The versions that arrived since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self._objects.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return None


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    kind: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = 60,
    watch: tuple[Process, ...] = (),
) -> dict[str, Any]:
    """Wait until the LogicBundle has condition ``kind`` = ``status`` (and ``reason``)."""

    def met() -> dict[str, Any] | None:
        obj = get_bundle(cluster, namespace, name)
        cond = condition(obj, kind)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return obj
        return None

    return wait_for(
        met,
        what=f"{name} {kind}={status}{f' ({reason})' if reason else ''}",
        timeout=timeout,
        watch=list(watch),
    )


def opted_in_pod(name: str, labels: Mapping[str, str], *, agent: bool = True) -> dict[str, Any]:
    """A pod that opted in; with ``agent`` it carries the sidecar the webhook would inject."""
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    if agent:
        spec["initContainers"] = [
            {
                "name": names.AGENT_CONTAINER,
                "image": "registry.invalid/agent:1",
                "restartPolicy": "Always",
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {**labels, names.LABEL_INJECT: names.LABEL_INJECT_ENABLED},
        },
        "spec": spec,
    }


def pod_annotations(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    pod = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return dict(pod["metadata"].get("annotations") or {})


def assigned(cluster: Cluster, namespace: str, bundle: str, pod: str) -> str | None:
    """The digest the published rule gives ``pod`` for ``bundle``, read from the live objects.

    What every distributor replica and the agent's slow path compute: the
    LogicBundle's ``status.targetState`` evaluated on the pod's own facts.
    None: nothing published, or the bundle does not select the pod.
    """
    obj = get_bundle(cluster, namespace, bundle)
    rule = rule_of(obj)
    if rule is None or rule.state is None:
        return None
    body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
    facts = facts_of(body)
    if not rule.selects(facts.labels):
        return None
    target = contract.target_of(rule.state, facts)
    return target.digest if target is not None else None


def report_as_pod(
    cluster: Cluster,
    distributor_url: str,
    namespace: str,
    pod: str,
    *,
    bundle: str,
    digest: str,
    healthy: bool = True,
) -> None:
    """Send the report ``pod``'s agent would (``digest`` active) to a distributor.

    For suites whose pods have no agent process: the token is a real one,
    bound to the pod, from the TokenRequest API.
    """
    body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
    account = body["spec"].get("serviceAccountName") or "default"
    token = cluster.pod_token(namespace, account, pod=pod, uid=body["metadata"]["uid"], seconds=600)
    report = {"bundles": {bundle: {"active": digest, "healthy": healthy}}}
    request = urllib.request.Request(
        f"{distributor_url}/v1/reports",
        data=json.dumps(report).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 204:
            raise HarnessError(f"the distributor answered {response.status} to {pod}'s report")


def published_state(cluster: Cluster, namespace: str, bundle: str) -> dict[str, Any] | None:
    """The state the bundle's ConfigMap carries for the agents' slow path (None: no ConfigMap)."""
    try:
        cm = cluster.request(
            "GET",
            f"/api/v1/namespaces/{namespace}/configmaps/{contract.state_configmap_name(bundle)}",
        )
    except HarnessError as exc:
        if "404" in str(exc):
            return None
        raise
    value: dict[str, Any] = json.loads(cm["data"][contract.STATE_KEY])
    return value


def write_target_state(
    cluster: Cluster, namespace: str, *, bundle: str, state: Mapping[str, Any]
) -> None:
    """What the operator does at a rollout step: one write of ``status.targetState``.

    For suites that run no operator.  A JSON patch, so ``state`` replaces the
    published one whole (a merge patch would merge a new stage into the old);
    one request once the bundle has a status (benchmarks time it).
    """
    path = LB_PATH.format(namespace=namespace) + f"/{bundle}/status"
    value = dict(state)
    try:
        _json_patch(cluster, path, {"op": "add", "path": "/status/targetState", "value": value})
    except urllib.error.HTTPError as exc:
        if exc.code != 422:  # 422: no status yet, so no member to add the state to
            raise HarnessError(f"PATCH {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        try:
            _json_patch(
                cluster, path, {"op": "add", "path": "/status", "value": {"targetState": value}}
            )
        except urllib.error.HTTPError as again:
            raise HarnessError(
                f"PATCH {path}: HTTP {again.code}: {again.read()[:500]!r}"
            ) from again


def _json_patch(cluster: Cluster, path: str, operation: Mapping[str, Any]) -> None:
    request = urllib.request.Request(
        cluster.server + path,
        data=json.dumps([operation]).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json-patch+json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, context=cluster.ssl_context(), timeout=30) as response:
        response.read()


def install_crd(cluster: Cluster) -> str:
    """Apply the generated LogicBundle CRD and wait until it is Established; its name."""
    cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    cluster.wait_established("logicbundles.logicbundle.io")
    return "logicbundles.logicbundle.io"


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    """(type, reason) of the events about LogicBundle ``name``, oldest first."""
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    about = [
        e
        for e in items
        if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == names.KIND
    ]
    about.sort(key=lambda e: e.get("firstTimestamp") or e.get("eventTime") or "")
    return [(e["type"], e["reason"]) for e in about]
