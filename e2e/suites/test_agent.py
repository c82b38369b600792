"""The reload agent against the real control plane: real pods, tokens, distributor, processes.

For each kwok pod the test runs the agent (``python -m logicbundle.agent``)
and the sample application (``python -m examples.sample_app.app``) as local
processes bound to that Pod: the agent's token comes from a TokenRequest bound
to the pod with the distributor's audience, and the distributor runs
in-process as ``logicbundle distributor`` does (TokenReview, the watch of the
LogicBundles and the pods, the readiness writer).

No operator runs: the test creates the LogicBundle through the real CRD and
writes its ``status.targetState`` itself, as the operator does at a rollout
step; each pod's target is the rule over that state and the pod's own facts
(the cohort key and admission instant the webhook writes, its labels).
kwok runs no kubelet, so the test writes the slow path's files itself, the
way the kubelet would: the pod's downward-API annotations and labels, and
the published state under the agent's ``stateDir`` (the ConfigMap the
operator mirrors the state into, projected).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.operator import LB_PATH, assigned, get_bundle, write_target_state
from e2e.harness.proc import Process, free_port, wait_for
from e2e.harness.services import Registry
from examples.sample_app.bundles import ENTRYPOINT, EXAMPLES_DIR, INTERFACE
from logicbundle import contract
from logicbundle.agent import format_annotations
from logicbundle.api import names
from logicbundle.artifact import oci_manifest, push_directory
from logicbundle.bundle import pack_directory_to
from logicbundle.distributor import BlobCache, DistributorSettings, serve_distributor
from logicbundle.oci import Reference, RegistryClient, sha256_digest
from logicbundle.sdk import SOCKET_ENV

SA = "agent"
DEADLINE = 60.0
REPO = Path(__file__).resolve().parents[2]
BUNDLE = "pricing"
LABELS = {"app": "web"}
"""The labels of every pod here; the LogicBundle selects them."""
POD_LABEL = "e2e.logicbundle.io/pod"
"""And one label naming the pod, for a stage that takes one pod alone."""


@dataclass(frozen=True)
class Published:
    name: str
    digest: str
    files: dict[str, str]  # path -> sha256 hex


def publish(
    source: Path, *, registry: Registry, cache: BlobCache, work: Path, version: str
) -> Published:
    """Pack ``source``, push it to the registry and put the same bytes into the cache."""
    layer = work / f"{source.name}-{version}.tar.gz"
    with layer.open("wb") as out:
        packed = pack_directory_to(
            source,
            out,
            name="pricing",
            version=version,
            interface=INTERFACE,
            entrypoint=ENTRYPOINT,
        )
    manifest = oci_manifest(packed)
    digest = sha256_digest(manifest)
    client = RegistryClient(insecure=True)
    try:
        pushed = push_directory(
            client,
            Reference.parse(f"{registry.host}/shop/pricing:{source.name}-{version}"),
            source,
            name="pricing",
            version=version,
            interface=INTERFACE,
            entrypoint=ENTRYPOINT,
        )
    finally:
        client.close()
    assert pushed.digest == digest, "packing is deterministic"
    cache.put(digest=digest, manifest=manifest, config=packed.config, layer=layer)
    files = {f.path: f.sha256 for f in packed.manifest.files}
    return Published(name=source.name, digest=digest, files=files)


def variant(base: str, tag: str, work: Path) -> Path:
    """A copy of an example bundle with one extra comment line: a new digest, same logic.

    And two data files beside the module, so a version has more than one file to lose
    when its deletion is cut short.
    """
    target = work / f"{base}-{tag}"
    shutil.copytree(EXAMPLES_DIR / base, target)
    with (target / "pricing.py").open("a") as out:
        out.write(f"# variant {tag}\n")
    (target / "tables").mkdir()
    for name in ("a.json", "b.json"):
        (target / "tables" / name).write_text(json.dumps({"variant": tag, "table": name}))
    return target


def create_bundle(cluster: Cluster, namespace: str, *, source: str, stable: str) -> None:
    """The LogicBundle selecting :data:`LABELS`, published with every pod on ``stable``.

    Its health check is the agents' own (the distributor sends it with each target).
    """
    cluster.request(
        "POST",
        LB_PATH.format(namespace=namespace),
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": BUNDLE},
            "spec": {
                "source": {"ref": source, "insecure": True},
                "verify": {
                    "keyless": {
                        "identities": [
                            {"issuer": "https://issuer.example", "subject": "ci@example.com"}
                        ]
                    }
                },
                "target": {
                    "podSelector": {"matchLabels": LABELS},
                    "healthCheck": {"mode": "sdk", "timeout": "10s"},
                },
            },
        },
    )
    set_target(cluster, namespace, stable)


def create_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """An opted-in pod as the webhook leaves it: the agent container and the rule's facts.

    No readiness gate: kwok would set its condition itself; here only the
    distributor writes it.
    """
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    names.LABEL_INJECT: names.LABEL_INJECT_ENABLED,
                    **LABELS,
                    POD_LABEL: name,
                },
                "annotations": {
                    contract.ANNOTATION_COHORT_KEY: f"{namespace}/{name}",
                    contract.ANNOTATION_ADMITTED_AT: str(time.time_ns() // 1_000_000),
                },
            },
            "spec": {
                "serviceAccountName": SA,
                "automountServiceAccountToken": False,
                "initContainers": [
                    {
                        "name": names.AGENT_CONTAINER,
                        "image": "registry.invalid/agent:1",
                        "restartPolicy": "Always",
                    }
                ],
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        },
    )
    return dict(body)


def pod_token(cluster: Cluster, namespace: str, pod: dict[str, Any]) -> str:
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{SA}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [names.DISTRIBUTOR_AUDIENCE],
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                },
            },
        },
    )
    return str(body["status"]["token"])


def set_target(cluster: Cluster, namespace: str, digest: str) -> None:
    """What the operator does: publish the bundle's state, every pod on ``digest``."""
    state = contract.RolloutState(bundle=BUNDLE, stable=digest)
    write_target_state(cluster, namespace, bundle=BUNDLE, state=contract.state_to_json(state))


def set_candidate(cluster: Cluster, namespace: str, digest: str, *, pod: str) -> None:
    """What the operator does at an internal stage whose selector matches ``pod`` alone."""
    stable = target_state(cluster, namespace)["stable"]
    stage = contract.Internal(contract.Selector(match_labels={POD_LABEL: pod}))
    state = contract.RolloutState(bundle=BUNDLE, stable=stable, candidate=digest, stage=stage)
    write_target_state(cluster, namespace, bundle=BUNDLE, state=contract.state_to_json(state))


def target_state(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The state the bundle publishes now (what the operator mirrors into its ConfigMap)."""
    state: dict[str, Any] = get_bundle(cluster, namespace, BUNDLE)["status"]["targetState"]
    return state


def ready_condition(cluster: Cluster, namespace: str, pod: str) -> dict[str, Any] | None:
    """The pod's ``logicbundle.io/bundles-ready`` condition (None: not written)."""
    body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
    for found in body["status"].get("conditions") or []:
        if found["type"] == names.POD_CONDITION_READY:
            return dict(found)
    return None


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole at once, as the kubelet's AtomicWriter does (a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


class RunningDistributor:
    """``serve_distributor`` on 127.0.0.1 in a thread of its own."""

    def __init__(self, settings: DistributorSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.port = 0
        ready = threading.Event()
        self.failure: list[BaseException] = []

        def on_ready(bound: int) -> None:
            self.port = bound
            ready.set()

        def main() -> None:
            try:
                self.loop.run_until_complete(
                    serve_distributor(settings, stop=self.stop_event, on_ready=on_ready)
                )
            except BaseException as exc:
                self.failure.append(exc)
                ready.set()
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=main, name="distributor", daemon=True)
        self.thread.start()
        assert ready.wait(DEADLINE), "the distributor did not start"
        assert not self.failure, self.failure
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(DEADLINE)
        assert not self.failure, self.failure


def http_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


@dataclass
class PodProcesses:
    """One kwok pod's agent and application, as local processes sharing a root."""

    name: str
    root: Path
    run_dir: Path
    config: dict[str, Any]
    env: dict[str, str]
    agent_port: int
    app: Process | None = None
    agent: Process | None = None
    app_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start_app(self) -> None:
        port_file = self.run_dir / "app.port"
        port_file.unlink(missing_ok=True)
        self.app = Process(
            f"app-{self.name}",
            [
                sys.executable,
                "-m",
                "examples.sample_app.app",
                "--root",
                self.root,
                "--port",
                "0",
                "--port-file",
                port_file,
            ],
            run_dir=self.run_dir,
            # What the webhook sets in the application container: the socket lives in its
            # own volume, never in the bundles volume (read-only to the application).
            env={**self.env, SOCKET_ENV: str(self.config["socket"])},
        )
        self.app_port = int(
            wait_for(
                lambda: port_file.read_text().strip() if port_file.exists() else None,
                what=f"the app of {self.name} listening",
                timeout=DEADLINE,
                watch=[self.app],
            )
        )

    def start_agent(self, extra_env: dict[str, str] | None = None) -> None:
        config_file = self.run_dir / "agent.json"
        config_file.write_text(json.dumps(self.config))
        self.agent = Process(
            f"agent-{self.name}",
            [sys.executable, "-m", "logicbundle.agent", "--config", config_file],
            run_dir=self.run_dir,
            env={**self.env, **(extra_env or {})},
        )

    def kill_agent(self) -> None:
        assert self.agent is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.agent.pid, signal.SIGKILL)
        self.agent.popen.wait(DEADLINE)
        self.agent.stop()

    def served_digest(self) -> str | None:
        status, body = http_get(f"http://127.0.0.1:{self.app_port}/price?item=apple&qty=2")
        return body.get("digest") if status == 200 and isinstance(body, dict) else None

    def agent_status(self) -> dict[str, Any]:
        status, body = http_get(f"http://127.0.0.1:{self.agent_port}/status")
        assert status == 200, body
        return dict(body["bundles"]["pricing"])

    def write_pod(self, pod: Mapping[str, Any]) -> None:
        """The kubelet's downward-API files of the pod: its annotations and its labels."""
        meta = pod["metadata"]
        annotations = format_annotations(meta.get("annotations") or {})
        _replace(Path(self.config["annotationsFile"]), annotations.encode())
        labels = format_annotations(meta.get("labels") or {})
        _replace(Path(self.config["labelsFile"]), labels.encode())

    def write_state(self, state: Mapping[str, Any]) -> None:
        """The kubelet's projection of the bundle's state ConfigMap into ``stateDir``."""
        path = Path(self.config["stateDir"]) / contract.state_file_name(BUNDLE)
        _replace(path, json.dumps(state).encode())

    def stop(self) -> None:
        for proc in (self.agent, self.app):
            if proc is not None:
                proc.stop()


class CurrentMovedError(Exception):
    """``current`` moved on while its old version was being read (the one tolerated race)."""


class Known:
    """The versions published so far, by digest; shared with a reader thread, so locked."""

    def __init__(self, published: Mapping[str, Published]) -> None:
        self._lock = threading.Lock()
        self._by_digest = {p.digest: p for p in published.values()}

    def add(self, published: Published) -> None:
        with self._lock:
            self._by_digest[published.digest] = published

    def get(self, digest: str) -> Published | None:
        with self._lock:
            return self._by_digest.get(digest)

    def get_by_prefix(self, prefix: str) -> Published | None:
        """The one version whose digest starts with ``prefix`` (None: none, or several)."""
        with self._lock:
            found = [p for d, p in self._by_digest.items() if d.startswith(prefix)]
        return found[0] if len(found) == 1 else None


def whole_version(root: Path, published: Mapping[str, Published] | Known) -> str | None:
    """The digest ``current`` names, after checking every file against its manifest hash.

    None when there is no ``current``.  A version whose files are missing or
    differ while ``current`` names it fails the check (AssertionError).  The
    one race a reader may lose is documented in ``docs/agent.md``: it read
    the link, then the agent swapped ``current`` to another version and
    deleted the old one (renamed aside first) -- reads then fail with
    FileNotFoundError although ``current`` was whole at every instant; that
    raises :class:`CurrentMovedError`, which a reader running beside the
    agent may retry.
    """
    known = published if isinstance(published, Known) else Known(published)
    current = root / "pricing" / "current"
    try:
        digest = current.readlink().name
    except FileNotFoundError:
        return None
    expected = known.get(digest)  # published before it was assigned, so known here
    assert expected is not None, f"current names {digest}, which was never published"
    base = root / "pricing" / ".versions" / digest
    for path, sha in expected.files.items():
        try:
            data = (base / path).read_bytes()
        except FileNotFoundError:
            try:
                now = current.readlink().name
            except FileNotFoundError:
                now = None
            if now != digest:
                raise CurrentMovedError(f"current moved from {digest} to {now}") from None
            raise AssertionError(f"{path} of {digest} is missing while current names it") from None
        assert hashlib.sha256(data).hexdigest() == sha, f"{path} of {digest} is partial"
    return digest


def _ready(pod: PodProcesses) -> bool:
    return http_get(f"http://127.0.0.1:{pod.agent_port}/readyz")[0] == 200


def _serves(pod: PodProcesses, digest: str) -> bool:
    return pod.served_digest() == digest


def _shows_ready(cluster: Cluster, namespace: str, pod: str) -> dict[str, Any] | None:
    found = ready_condition(cluster, namespace, pod)
    return found if found is not None and found["status"] == "True" else None


def _fast_path_down(pod: PodProcesses) -> bool:
    status, body = http_get(f"http://127.0.0.1:{pod.agent_port}/metrics")
    assert status == 200, body
    return "\nlogicbundle_agent_fast_path_up 0\n" in f"\n{body}"


def _failed_status(pod: PodProcesses) -> dict[str, Any] | None:
    status = pod.agent_status()
    return status if status.get("lastError") else None


@pytest.fixture
def service_account(cluster: Cluster, namespace: str) -> str:
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
    )
    return SA


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lbe-", dir="/tmp"))  # short: socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cache(work: Path) -> BlobCache:
    return BlobCache(work / "cache")


@pytest.fixture
def published(registry: Registry, cache: BlobCache, work: Path) -> dict[str, Published]:
    out = {}
    for name in ("pricing-v1", "pricing-v2", "pricing-bad-selftest"):
        out[name] = publish(
            EXAMPLES_DIR / name, registry=registry, cache=cache, work=work, version="1.0.0"
        )
    return out


@pytest.fixture
def bundle(
    cluster: Cluster,
    logicbundle_crd: str,
    namespace: str,
    registry: Registry,
    published: dict[str, Published],
) -> str:
    """The LogicBundle ``pricing``, published with every pod on v1."""
    create_bundle(
        cluster,
        namespace,
        source=f"{registry.host}/shop/pricing:pricing-v1-1.0.0",
        stable=published["pricing-v1"].digest,
    )
    return BUNDLE


@pytest.fixture
def distributor(
    cluster: Cluster, namespace: str, bundle: str, work: Path
) -> Iterator[RunningDistributor]:
    """Listening once it has listed the LogicBundles (``bundle`` among them), then the pods."""
    running = RunningDistributor(
        DistributorSettings(
            cache_dir=work / "cache",
            host="127.0.0.1",
            port=0,
            insecure_http=True,  # loopback; production serves TLS
            namespaces=(namespace,),
            kubeconfig=cluster.kubeconfig,
        )
    )
    yield running
    running.stop()


def start_pods(
    *,
    cluster: Cluster,
    namespace: str,
    registry: Registry,
    distributor: RunningDistributor,
    work: Path,
    count: int,
) -> list[PodProcesses]:
    """``count`` pods with their files as the kubelet writes them at start (state included)."""
    pods: list[PodProcesses] = []
    state = target_state(cluster, namespace)
    for i in range(count):
        name = f"web-{i}"
        body = create_pod(cluster, namespace, name)
        run_dir = work / name
        root = run_dir / "root"  # the pod's bundles volume
        root.mkdir(parents=True)
        (run_dir / "sdk").mkdir()  # the pod's socket volume
        (run_dir / "token").write_text(pod_token(cluster, namespace, body))
        port = free_port()
        config = {
            "root": str(root),
            "distributor": distributor.url,
            "tokenFile": str(run_dir / "token"),
            "annotationsFile": str(run_dir / "podinfo" / "annotations"),
            "labelsFile": str(run_dir / "podinfo" / "labels"),
            "stateDir": str(run_dir / "state"),
            "socket": str(run_dir / "sdk" / "sdk.sock"),
            "listen": f"127.0.0.1:{port}",
            "bundles": {
                "pricing": {
                    "source": f"{registry.host}/shop/pricing",
                    "insecure": True,
                    "healthCheck": {"mode": "sdk", "timeout": "10s"},
                }
            },
        }
        env = {
            "POD_NAME": name,
            "POD_NAMESPACE": namespace,
            "PYTHONPATH": f"{REPO / 'operator'}:{REPO}",
        }
        pod = PodProcesses(
            name=name, root=root, run_dir=run_dir, config=config, env=env, agent_port=port
        )
        pod.write_pod(body)
        pod.write_state(state)
        pods.append(pod)
    return pods


@pytest.fixture
def pods(
    cluster: Cluster,
    namespace: str,
    registry: Registry,
    service_account: str,
    distributor: RunningDistributor,
    work: Path,
) -> Iterator[list[PodProcesses]]:
    started = start_pods(
        cluster=cluster,
        namespace=namespace,
        registry=registry,
        distributor=distributor,
        work=work,
        count=2,
    )
    try:
        for pod in started:
            pod.start_agent()  # first, as a native sidecar: the app waits for /readyz
        for pod in started:
            wait_for(
                functools.partial(_ready, pod),
                what=f"the agent of {pod.name} ready",
                timeout=DEADLINE,
                watch=[p.agent for p in started if p.agent],
            )
            pod.start_app()
        yield started
    finally:
        for pod in started:
            pod.stop()


def test_every_app_serves_the_digest_its_bundle_publishes_and_the_pod_shows_ready(
    cluster: Cluster, namespace: str, pods: list[PodProcesses], published: dict[str, Published]
) -> None:
    v1, v2 = published["pricing-v1"].digest, published["pricing-v2"].digest
    for pod in pods:
        assert pod.served_digest() == v1
    set_target(cluster, namespace, v2)
    for pod in pods:
        wait_for(pod.served_digest, what="an answer", timeout=DEADLINE)
        wait_for(
            functools.partial(_serves, pod, v2),
            what=f"{pod.name} serving v2",
            timeout=DEADLINE,
            watch=[pod.agent, pod.app] if pod.agent and pod.app else [],
        )
        status = pod.agent_status()
        assert (status["active"], status["previous"]) == (v2, v1)
    # What a report records on the pod now: the readiness condition, written by the
    # distributor (the pods have no readiness gate, so kwok does not set it) when it
    # changes; what each pod runs is written nowhere on it.
    for pod in pods:
        condition = wait_for(
            functools.partial(_shows_ready, cluster, namespace, pod.name),
            what=f"the report of {pod.name} recorded on the pod",
            timeout=DEADLINE,
        )
        assert condition["reason"] == "BundlesActive", condition
        body = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod.name}")
        ours = sorted(
            key for key in body["metadata"].get("annotations") or {} if key.startswith(names.PREFIX)
        )
        assert ours == [contract.ANNOTATION_ADMITTED_AT, contract.ANNOTATION_COHORT_KEY], ours


def test_a_bundle_whose_self_test_fails_stays_on_the_old_one_and_the_report_says_why(
    cluster: Cluster, namespace: str, pods: list[PodProcesses], published: dict[str, Published]
) -> None:
    v1, bad = published["pricing-v1"].digest, published["pricing-bad-selftest"].digest
    set_target(cluster, namespace, bad)
    for pod in pods:
        status = wait_for(
            functools.partial(_failed_status, pod),
            what=f"{pod.name} reporting the failure",
            timeout=DEADLINE,
        )
        assert status["lastError"]["reason"] == "SelfTestFailed"
        assert status["lastError"]["digest"] == bad
        assert status["active"] == v1
        assert pod.served_digest() == v1
        assert whole_version(pod.root, published) == v1


def test_with_the_distributor_stopped_the_slow_path_converges(
    cluster: Cluster,
    namespace: str,
    pods: list[PodProcesses],
    published: dict[str, Published],
    distributor: RunningDistributor,
) -> None:
    v1, v2 = published["pricing-v1"].digest, published["pricing-v2"].digest
    distributor.stop()
    set_target(cluster, namespace, v2)  # the operator's write, which nobody serves now
    state = target_state(cluster, namespace)
    for pod in pods:
        assert assigned(cluster, namespace, BUNDLE, pod.name) == v2, "the rule moves every pod"
        # The kubelet refreshes the file a minute late, long after the agent saw the
        # distributor go; a state seen while the fast path was in charge is not news.
        wait_for(
            functools.partial(_fast_path_down, pod),
            what=f"the agent of {pod.name} noticing the distributor is gone",
            timeout=DEADLINE,
        )
        assert pod.agent_status()["active"] == v1
        pod.write_state(state)  # what the kubelet does, later: the ConfigMap projected
    for pod in pods:
        wait_for(
            functools.partial(_serves, pod, v2),
            what=f"{pod.name} on v2 through the slow path",
            timeout=DEADLINE,
            watch=[pod.agent] if pod.agent else [],
        )


KILL_STEPS = (
    "manifest-written",
    "layer-half-read",
    "unpacked",
    "symlink-created",
    "swapped",
    "notifying",
    "acked",
    "deleting",
)
"""Every seam of a swap (``logicbundle.agent._seams``), in swap order."""


def _half_deleted(root: Path, known: Known) -> tuple[Published, Path]:
    """The version the agent was deleting when killed: renamed aside, part of it gone."""
    versions = root / "pricing" / ".versions"
    aside = [p for p in versions.iterdir() if p.name.startswith(".deleting-")]
    assert len(aside) == 1, sorted(p.name for p in versions.iterdir())
    prefix = aside[0].name.split("-")[1]
    victim = known.get_by_prefix(f"sha256:{prefix}")
    assert victim is not None, aside
    left = {str(p.relative_to(aside[0])) for p in aside[0].rglob("*") if p.is_file()}
    assert left < set(victim.files), f"killed mid-delete, {aside[0].name} holds {left}"
    assert not (versions / victim.digest).exists(), "a half-deleted version under its name"
    return victim, aside[0]


def test_an_agent_killed_at_each_step_of_a_swap_recovers_and_readers_see_whole_versions(
    cluster: Cluster,
    namespace: str,
    pods: list[PodProcesses],
    published: dict[str, Published],
    registry: Registry,
    cache: BlobCache,
    work: Path,
    distributor: RunningDistributor,
) -> None:
    """SIGKILL at every seam (issue 11's fault matrix), a reader checking ``current`` all along.

    The target is assigned while the agent is down, and the agent started once the
    distributor serves it, so the seam stops the swap to it (not the resync of what it
    already runs, which passes the same seams).  Beyond the swap steps: ``notifying`` (the
    application got ``activate``, the agent never read the answer) once with a version
    it accepts and once with one it refuses (a failing self-test: after the restart the
    pod must be back on the version before, not on the refused one); ``acked``; and
    ``deleting`` (killed halfway through deleting an old version: the half-deleted tree
    is never served, is removed on restart, and that version assigned again is fetched
    whole).
    """
    pod = pods[0]
    # Written by this thread while the reader looks digests up: a locked registry (a dict
    # growing under an iterating reader fails at random with "changed size").
    known = Known(published)
    stop_reading = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []
    bad = published["pricing-bad-selftest"]

    def reader() -> None:
        while not stop_reading.is_set():
            try:
                digest = whole_version(pod.root, known)
                assert digest is not None, "current disappeared"
                if not seen or seen[-1] != digest:
                    seen.append(digest)
            except CurrentMovedError:
                continue  # the documented race: read the link, then it moved on
            except BaseException as exc:
                errors.append(exc)
                return

    def served_target() -> str | None:
        """The pod's target as the distributor serves it now (what a starting agent gets)."""
        token = (pod.run_dir / "token").read_text().strip()
        request = urllib.request.Request(
            f"{distributor.url}/v1/targets", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.loads(resp.read())
        target = body["targets"].get(BUNDLE)
        return str(target["digest"]) if target else None

    def kill_at(step: str, version: Published) -> None:
        pause_dir = pod.run_dir / f"pause-{step}-{version.digest[7:19]}"
        pause_dir.mkdir()
        pod.kill_agent()
        set_candidate(cluster, namespace, version.digest, pod=pod.name)
        wait_for(
            lambda: served_target() == version.digest,
            what="the distributor serving the new target",
            timeout=DEADLINE,
        )
        pod.start_agent(
            {
                "LOGICBUNDLE_AGENT_TEST_PAUSE": step,
                "LOGICBUNDLE_AGENT_TEST_PAUSE_DIR": str(pause_dir),
            }
        )
        wait_for(
            (pause_dir / step).exists,
            what=f"the agent paused at {step}",
            timeout=DEADLINE,
            watch=[pod.agent] if pod.agent else [],
        )
        pod.kill_agent()  # kill -9 right there
        assert whole_version(pod.root, known) is not None

    def recovered(version: Published, step: str) -> None:
        wait_for(
            functools.partial(_serves, pod, version.digest),
            what=f"recovery after a kill at {step}",
            timeout=DEADLINE,
            watch=[pod.agent, pod.app] if pod.agent and pod.app else [],
        )
        # Debris of the kill goes at start; a deletion the agent runs now may still be on.
        wait_for(
            lambda: (
                not [
                    p
                    for p in (pod.root / "pricing" / ".versions").iterdir()
                    if p.name.startswith(".")
                ]
            ),
            what=f"no debris left after a kill at {step}",
            timeout=DEADLINE,
        )

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    victim: Published | None = None
    try:
        for step in KILL_STEPS:
            fresh = publish(
                variant("pricing-v2", step, work),
                registry=registry,
                cache=cache,
                work=work,
                version=f"2.0.0-{step}",
            )
            known.add(fresh)  # before it is assigned: current can name it only after this
            kill_at(step, fresh)
            if step in ("swapped", "notifying", "acked"):
                assert whole_version(pod.root, known) == fresh.digest, step
            # ("deleting" may stop the clean-up the agent runs at start, before the swap.)
            if step == "deleting":
                victim, aside = _half_deleted(pod.root, known)
            pod.start_agent()
            recovered(fresh, step)
            if step == "deleting" and victim is not None:
                assert not aside.exists()
                manifest = pod.root / "pricing" / ".versions" / f"{victim.digest}.manifest.json"
                assert not manifest.exists(), "the manifest of the half-deleted version"

        # The application refuses the version it was being told about when the agent died.
        before = pod.served_digest()
        assert before is not None
        kill_at("notifying", bad)
        assert pod.served_digest() == before  # the app refused it and serves what it had
        pod.start_agent()
        status = wait_for(
            functools.partial(_failed_status, pod),
            what="the refusal reported after the restart",
            timeout=DEADLINE,
            watch=[pod.agent] if pod.agent else [],
        )
        assert (status["lastError"]["reason"], status["active"]) == ("SelfTestFailed", before)
        assert whole_version(pod.root, known) == before
        assert pod.served_digest() == before

        # The version deleted halfway, assigned again: fetched whole, never the half tree.
        assert victim is not None
        set_candidate(cluster, namespace, victim.digest, pod=pod.name)
        recovered(victim, "deleting (assigned again)")
    finally:
        stop_reading.set()
        thread.join(DEADLINE)
    assert not errors, errors
    assert len(seen) >= len(KILL_STEPS)
