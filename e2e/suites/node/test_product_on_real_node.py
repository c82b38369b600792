"""The product on a real node: the image, the chart, injection and rollouts in real containers.

What a user does on a cluster of their own, against the harness's real kubelet
(containerd, runc, CNI bridge, kube-proxy, CoreDNS; :mod:`e2e.harness.node`):

1. the project's image and the sample app's image, built from the Dockerfiles
   with buildah on a Debian base (:mod:`e2e.harness.images`), pushed to the
   harness registry;
2. the chart installed with that image by the commands of ``docs/quickstart.md``,
   run as written: two operator replicas as real pods, one elected; the API
   server calls the webhook through its Service, agents reach the distributor
   through its Service;
3. a Deployment of the sample app (10 replicas, plus one internal pod) opted in:
   every pod injected, the agent started first (native sidecar, startup probe),
   the app Ready only once its first bundle is active (readiness gate);
4. v1 -> v2 through internal -> 5 % -> everyone, every answer a whole version and
   no container restarted; a bad v3 caught and rolled back on every pod;
5. the faults a real node adds: an agent killed in the middle of a swap, the
   leader's pod deleted mid-rollout, the distributor unreachable (the slow
   path, with the kubelet's real delay in projecting the published rollout
   state's ConfigMap measured), an app
   container restarted in the middle of a request split;
6. the hardening the security docs promise, checked inside the containers.

The tests of this module run in order and share one installation.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.operator import BundleWatch, condition, wait_condition
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.product import (
    APP_SELECTOR,
    APP_UID,
    OPERATOR_NS,
    RELEASE,
    SHOP,
    Installed,
    diagnose,
    install,
    leader,
    operator_pods,
)
from e2e.harness.realpods import (
    APP_PORT,
    Containerd,
    Traffic,
    container_id,
    container_status,
    exec_in,
    get_json,
    is_ready,
    pods,
    restart_counts,
    served,
    wait_all_serving,
    watching,
)
from e2e.suites.node.conftest import RealCluster
from logicbundle import contract
from logicbundle.api import names
from logicbundle.distributor import facts_of

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "docs" / "quickstart.md"
REPLICAS = 10
PODS = REPLICAS + 1  # plus the internal pod
PAUSE_DIR = ".e2e-pause"
"""In the bundles volume: the agent's test seam stops only where this directory exists."""
KILL_STEP = "symlink-created"


@pytest.fixture(scope="module")
def installed(
    real_cluster: RealCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    product = install(
        real_cluster.cluster,
        real_cluster.registry.host,
        tmp_path_factory.mktemp("real-product"),
        agent_env={
            # The agent's test seam, armed only in a pod whose volume holds PAUSE_DIR.
            "LOGICBUNDLE_AGENT_TEST_PAUSE": KILL_STEP,
            "LOGICBUNDLE_AGENT_TEST_PAUSE_DIR": f"/var/run/logicbundle/{PAUSE_DIR}",
            "LOGICBUNDLE_AGENT_TEST_PAUSE_ONCE": "1",
        },
        quickstart=QUICKSTART,
        replicas=REPLICAS,
    )
    yield product
    product.uninstall()


def _containerd(real_cluster: RealCluster) -> Containerd:
    return Containerd(socket=real_cluster.node.containerd_socket)


def _pod_volume(real_cluster: RealCluster, pod: dict[str, Any], kind: str, volume: str) -> Path:
    """Where the kubelet keeps ``volume`` of ``pod`` on the node (``kind``: empty-dir, ...)."""
    path: Path = (
        real_cluster.node.run_dir
        / "kubelet"
        / "pods"
        / pod["metadata"]["uid"]
        / "volumes"
        / f"kubernetes.io~{kind}"
        / volume
    )
    return path


def _settled(installed: Installed, tag: str, *, timeout: float = 180) -> str:
    """Wait until every pod serves ``tag`` and the LogicBundle is Ready (or say what is not)."""
    digest = installed.digests[tag]
    try:
        wait_all_serving(installed.cluster, SHOP, APP_SELECTOR, digest, count=PODS, timeout=timeout)
        wait_condition(installed.cluster, SHOP, "pricing", "Ready", "True", timeout=timeout)
    except HarnessError as error:
        raise HarnessError(f"{error}\n{diagnose(installed.cluster)}") from None
    return digest


def _why_restarted(cluster: Cluster, pod: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """The restarted container's last state and the log of its previous run."""
    name = pod["metadata"]["name"]
    logs = ["logs", "-n", OPERATOR_NS, name, "-c", "operator", "--previous", "--tail=80"]
    try:
        previous = cluster.kubectl(*logs)
    except HarnessError as error:
        previous = f"(no previous log: {error})"
    return f"{name} restarted, last state {json.dumps(status.get('lastState'))}\n{previous}"


# -- install, inject, roll out ---------------------------------------------------------------


def test_the_chart_runs_the_operator_as_real_pods_from_the_built_image(
    installed: Installed,
) -> None:
    cluster = installed.cluster

    def both_ready() -> list[dict[str, Any]] | None:
        found = operator_pods(cluster)
        return found if len(found) == 2 and all(is_ready(p) for p in found) else None

    try:  # the chart's default: two replicas, both Ready (helm --wait needs only one)
        operators = wait_for(both_ready, what="both operator replicas Ready", timeout=120)
    except HarnessError as error:
        raise HarnessError(f"{error}\n{diagnose(cluster)}") from None
    for pod in operators:
        status = container_status(pod, "operator")
        assert status["restartCount"] == 0, _why_restarted(cluster, pod, status)
        assert status["imageID"].endswith(installed.pushed["logicbundle"].digest), status
    wait_for(lambda: leader(cluster), what="exactly one operator pod labelled leader", timeout=60)


def test_every_pod_is_injected_its_agent_starts_first_and_it_is_ready_only_with_its_bundle(
    installed: Installed,
) -> None:
    cluster = installed.cluster
    found = pods(cluster, SHOP, APP_SELECTOR)
    assert len(found) == PODS
    for pod in found:
        name = pod["metadata"]["name"]
        assert is_ready(pod), name
        (agent,) = [
            c for c in pod["spec"].get("initContainers", []) if c["name"] == names.AGENT_CONTAINER
        ]
        assert agent["restartPolicy"] == "Always", name
        assert agent["image"] == installed.pushed["logicbundle"].reference, name
        # The kubelet started the agent first, and the app only once the agent's
        # startup probe passed (its bundle active).
        agent_status = container_status(pod, names.AGENT_CONTAINER)
        app_status = container_status(pod, "app")
        assert agent_status["started"] is True, name
        agent_started = agent_status["state"]["running"]["startedAt"]
        app_started = app_status["state"]["running"]["startedAt"]
        assert agent_started <= app_started, (name, agent_started, app_started)
        # The pod became Ready no earlier than its readiness gate (the bundle active).
        gate = condition(pod, names.POD_CONDITION_READY)
        ready = condition(pod, "Ready")
        assert gate is not None and gate["status"] == "True", name
        assert ready is not None and gate["lastTransitionTime"] <= ready["lastTransitionTime"]
        assert restart_counts(pod) == {names.AGENT_CONTAINER: 0, "app": 0}, name
    now = served(cluster, SHOP, APP_SELECTOR)
    assert set(now.values()) == {installed.digests["v1"]}, now


def test_a_staged_rollout_changes_every_pods_answers_without_a_restart(
    installed: Installed,
) -> None:
    cluster = installed.cluster
    v1, v2 = installed.digests["v1"], installed.digests["v2"]
    watch = BundleWatch(cluster, SHOP, "pricing")
    try:
        with Traffic(cluster, SHOP, APP_SELECTOR, per_second=40) as traffic:
            installed.set_ref("v2")
            _settled(installed, "v2")
        stages: list[str] = []
        for version in watch.drain():
            stage = (version.get("status") or {}).get("stage")
            if stage and (not stages or stages[-1] != stage):
                stages.append(stage)
    finally:
        watch.stop()
    assert [s for s in stages if s in {"internal", "canary", "everyone"}] == [
        "internal",
        "canary",
        "everyone",
    ], stages
    seen = traffic.digests()
    assert set(seen) <= {v1, v2}, seen  # every answer a whole, known version
    assert seen[v1] and seen[v2], seen
    failed = [a for a in traffic.answers if a.status != 200]
    assert not failed, failed[:5]
    for pod in pods(cluster, SHOP, APP_SELECTOR):
        assert set(restart_counts(pod).values()) == {0}, pod["metadata"]["name"]


def test_status_pods_lists_each_pods_digest_through_the_api_servers_proxy(
    installed: Installed,
) -> None:
    """``logicbundle status NAME --pods`` as a user runs it on a cluster: no port-forward,
    the API server's pod proxy to each distributor replica, a token of the chart's
    status-reader account in the header the proxy passes on."""
    cluster = installed.cluster
    stable = installed.bundle_object()["status"]["stableDigest"]
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "logicbundle.cli",
            "status",
            "pricing",
            "-n",
            SHOP,
            "--pods",
            "-o",
            "json",
            "--operator-namespace",
            OPERATOR_NS,
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    expected = sorted(p["metadata"]["name"] for p in pods(cluster, SHOP, APP_SELECTOR))
    assert sorted(r["pod"] for r in rows) == expected
    assert all(r["active"] == stable and r["healthy"] for r in rows), rows


def test_a_bad_version_is_caught_and_rolled_back_on_every_pod(installed: Installed) -> None:
    cluster = installed.cluster
    v2 = installed.digests["v2"]
    with Traffic(cluster, SHOP, APP_SELECTOR, per_second=40) as traffic:
        installed.set_ref("v3")
        obj = wait_condition(cluster, SHOP, "pricing", "Stalled", "True", timeout=180)
        wait_all_serving(cluster, SHOP, APP_SELECTOR, v2, count=PODS, timeout=60)
    assert obj["status"]["stableDigest"] == v2
    assert installed.digests["v3"] in traffic.digests(), "v3 never served: nothing was judged"
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    for pod in pods(cluster, SHOP, APP_SELECTOR):
        assert set(restart_counts(pod).values()) == {0}, pod["metadata"]["name"]


# -- what the security docs promise ----------------------------------------------------------

PROBE = """\
import json, os
def attempt(path):
    try:
        with open(path, "w"):
            pass
        os.unlink(path)
        return "wrote"
    except OSError as e:
        return e.strerror
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "uid": os.getuid(), "groups": sorted(os.getgroups()),
    "caps": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "root": attempt("/probe"), "etc": attempt("/etc/probe"), "opt": attempt("/opt/probe"),
    "bundles": attempt("/var/run/logicbundle/probe"),
}))
"""


def _probe(cluster: Cluster, ns: str, pod: str, container: str) -> dict[str, Any]:
    done = exec_in(cluster, ns, pod, container, "python3", "-c", PROBE)
    assert done.returncode == 0, (pod, container, done.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_security_promises_hold_inside_the_real_containers(installed: Installed) -> None:
    cluster = installed.cluster
    pod = pods(cluster, SHOP, "deployment=shop")[0]["metadata"]["name"]
    app = _probe(cluster, SHOP, pod, "app")
    agent = _probe(cluster, SHOP, pod, names.AGENT_CONTAINER)
    operator = _probe(
        cluster, OPERATOR_NS, operator_pods(cluster)[0]["metadata"]["name"], "operator"
    )
    assert app["uid"] == APP_UID
    assert agent["uid"] == operator["uid"] == 65532
    read_only = "Read-only file system"
    for who in (app, agent, operator):
        assert who["caps"] == "0000000000000000", who  # no capabilities at all
        assert who["no_new_privs"] == "1", who
        assert who["root"] == who["etc"] == who["opt"] == read_only, who
    # The app sees the bundles read-only; only the agent writes them.
    assert app["bundles"] == read_only, app
    assert agent["bundles"] == "wrote", agent
    # The agent shares the pod's fsGroup, so the app's 0660 SDK socket is reachable.
    assert APP_UID in agent["groups"], agent


# -- faults on the real node -----------------------------------------------------------------


def test_an_agent_killed_in_the_middle_of_a_swap_restarts_as_a_sidecar_and_converges(
    real_cluster: RealCluster, installed: Installed
) -> None:
    cluster = installed.cluster
    v1, v2 = installed.digests["v1"], installed.digests["v2"]
    victim = pods(cluster, SHOP, "deployment=shop")[-1]
    name = victim["metadata"]["name"]
    pause = _pod_volume(real_cluster, victim, "empty-dir", names.VOLUME_BUNDLES) / PAUSE_DIR
    pause.mkdir()
    pause.chmod(0o777)
    agent_id = container_id(victim, names.AGENT_CONTAINER)
    with Traffic(cluster, SHOP, APP_SELECTOR, per_second=40) as traffic:
        installed.set_ref("v1")
        wait_for(
            (pause / KILL_STEP).exists,
            what=f"the agent of {name} stopped at {KILL_STEP}",
            timeout=180,
        )
        _containerd(real_cluster).kill(agent_id)
        _settled(installed, "v1")
    after = cluster.request("GET", f"/api/v1/namespaces/{SHOP}/pods/{name}")
    counts = restart_counts(after)
    assert counts[names.AGENT_CONTAINER] == 1, counts  # restarted by the kubelet, as a sidecar
    assert counts["app"] == 0, counts  # the application never restarted
    assert container_id(after, names.AGENT_CONTAINER) != agent_id
    from_victim = [a for a in traffic.answers if a.pod == name]
    assert from_victim, "no traffic reached the pod"
    assert all(a.status == 200 and a.digest in {v1, v2} for a in from_victim), [
        a for a in from_victim if a.status != 200 or a.digest not in {v1, v2}
    ][:5]
    shutil.rmtree(pause)


def test_the_leader_pod_deleted_mid_rollout_hands_over_and_the_rollout_finishes(
    installed: Installed,
) -> None:
    cluster = installed.cluster
    before = leader(cluster)
    watch = BundleWatch(cluster, SHOP, "pricing")
    try:
        installed.set_ref("v2")

        def in_stage() -> bool:
            return any(
                (v.get("status") or {}).get("stage") in {"internal", "canary"}
                for v in watch.drain()
            )

        with Traffic(cluster, SHOP, APP_SELECTOR, per_second=40):
            wait_for(in_stage, what="the v2 rollout in its first stages", timeout=120)
            cluster.kubectl("delete", "pod", "-n", OPERATOR_NS, before, "--wait=false")
            _settled(installed, "v2")
    finally:
        watch.stop()
    after = wait_for(lambda: leader(cluster), what="a new leader", timeout=120)
    assert after != before
    obj = installed.bundle_object()
    stalled = condition(obj, "Stalled")
    assert stalled is None or stalled["status"] == "False", stalled
    assert obj["status"]["stableDigest"] == installed.digests["v2"]


def test_an_app_container_restart_comes_back_on_its_version_with_its_request_split(
    real_cluster: RealCluster, installed: Installed
) -> None:
    cluster = installed.cluster
    v1, v2 = installed.digests["v1"], installed.digests["v2"]
    split_rollout = {
        "stages": [
            {"name": "split", "requestPercent": 50, "manualGate": True},
            {"name": "everyone", "all": True},
        ],
        "skipAnalysis": True,
    }
    installed.set_ref("v1", rollout=split_rollout)
    victim = pods(cluster, SHOP, "deployment=shop")[0]
    name, ip = victim["metadata"]["name"], victim["status"]["podIP"]
    users = [f"user-{i}" for i in range(40)]

    def routes() -> dict[str, str] | None:
        answers = {u: get_json(f"http://{ip}:{APP_PORT}/price?item=apple&user={u}") for u in users}
        if any(status != 200 for status, _ in answers.values()):
            return None
        return {u: body["digest"] for u, (_, body) in answers.items()}

    def split_live() -> dict[str, str] | None:
        # Two reads in a row that agree: one read can straddle the activation of the split.
        first, second = routes(), routes()
        if first and first == second and set(first.values()) == {v1, v2}:
            return first
        return None

    before = wait_for(split_live, what=f"{name} splitting calls between v2 and v1", timeout=180)
    app_id = container_id(victim, "app")
    _containerd(real_cluster).kill(app_id)

    def restarted() -> bool:
        pod = cluster.request("GET", f"/api/v1/namespaces/{SHOP}/pods/{name}")
        return restart_counts(pod)["app"] == 1 and is_ready(pod)

    wait_for(restarted, what=f"the app of {name} restarted and Ready", timeout=120)
    after = routes()
    if after != before:  # the same version, and the same split, user by user
        status = installed.bundle_object().get("status")
        logs = cluster.kubectl("logs", "-n", SHOP, name, "-c", "app", "--tail=30")
        agent_logs = cluster.kubectl(
            "logs", "-n", SHOP, name, "-c", names.AGENT_CONTAINER, "--tail=30"
        )
        pytest.fail(
            f"the split changed across the restart:\nbefore {before}\nafter {after}\n"
            f"status {json.dumps(status)}\napp:\n{logs}\nagent:\n{agent_logs}"
        )
    pod = cluster.request("GET", f"/api/v1/namespaces/{SHOP}/pods/{name}")
    assert restart_counts(pod)[names.AGENT_CONTAINER] == 0
    installed.request_action("promote")
    _settled(installed, "v1")
    installed.set_ref("v1", rollout=installed.rollout)


def test_with_the_distributor_unreachable_agents_converge_through_the_slow_path(
    real_cluster: RealCluster, installed: Installed, record_property: Any
) -> None:
    """The slow path: the bundle's published state, as the kubelet projects its ConfigMap."""
    cluster = installed.cluster
    service = f"/api/v1/namespaces/{OPERATOR_NS}/services/{RELEASE}-distributor"
    selector = cluster.request("GET", service)["spec"]["selector"]
    cluster.request("PATCH", service, {"spec": {"selector": {"logicbundle.io/nowhere": "x"}}})
    try:
        found = pods(cluster, SHOP, APP_SELECTOR)
        files = {
            p["metadata"]["name"]: _pod_volume(real_cluster, p, "projected", names.VOLUME_STATE)
            / contract.state_file_name("pricing")
            for p in found
        }
        facts = {p["metadata"]["name"]: facts_of(p) for p in found}
        v2 = installed.digests["v2"]

        def gives_v2(pod_name: str, data: bytes) -> bool:
            """Whether the state in ``data`` gives the pod v2 (the agent's own evaluation)."""
            try:
                target = contract.target_of(contract.state_from_bytes(data), facts[pod_name])
            except contract.StateError:
                return False
            return target is not None and target.digest == v2

        projected: dict[str, float] = {}
        configmap = contract.state_configmap_name("pricing")
        with watching(
            cluster,
            f"/api/v1/namespaces/{SHOP}/configmaps",
            {"fieldSelector": f"metadata.name={configmap}"},
        ) as versions:
            # The watch's opening list first, so every later write is seen when it lands.
            wait_for(lambda: len(versions) >= 1, what="the state ConfigMap's listing", timeout=30)
            installed.set_ref(
                "v2", rollout={"stages": [{"name": "all", "all": True}], "skipAnalysis": True}
            )

            def files_give_v2() -> bool:
                # Only local file reads here, so the poll is fine-grained (see wait_for).
                now = time.monotonic()
                for pod_name, path in files.items():
                    if pod_name in projected:
                        continue
                    try:
                        data = path.read_bytes()
                    except FileNotFoundError:
                        continue
                    if gives_v2(pod_name, data):
                        projected[pod_name] = now
                return len(projected) == len(files)

            wait_for(
                files_give_v2,
                what="every pod's projected state giving it v2",
                timeout=300,
                interval=0.02,
            )
        written: dict[str, float] = {}
        for at, obj in versions:
            data = (obj.get("data") or {}).get(contract.STATE_KEY, "").encode()
            for pod_name in files:
                if pod_name not in written and gives_v2(pod_name, data):
                    written[pod_name] = at
        assert set(written) == set(projected), (written, projected)
        wait_all_serving(cluster, SHOP, APP_SELECTOR, v2, count=PODS, timeout=120)
        delays = sorted(projected[p] - written[p] for p in projected)
        record_property("state_projection_delay_median_s", statistics.median(delays))
        record_property("state_projection_delay_max_s", delays[-1])
        print(
            f"\nstate ConfigMap -> projected file delay over {len(delays)} pods: "
            f"median {statistics.median(delays):.2f}s, max {delays[-1]:.2f}s"
        )
    finally:
        # A merge patch: the key it added must be nulled, or it stays and selects nothing.
        restored = {**selector, "logicbundle.io/nowhere": None}
        cluster.request("PATCH", service, {"spec": {"selector": restored}})
    # Once the distributor is back, the agents report and the status catches up.
    _settled(installed, "v2", timeout=180)


# -- the docs ---------------------------------------------------------------------------------


def test_the_quick_start_was_run_as_written(installed: Installed) -> None:
    """The installation of this module ran docs/quickstart.md's commands, every step of it.

    The chart from the OCI registry, a bundle written, pushed and signed with the
    page's key, watched, and a second version aborted (the install waited for every
    pod to be back on the first before it went on).
    """
    run = "\n".join(installed.quickstart_commands)
    for step in (
        "openssl genpkey",
        "helm push ",
        "helm install logicbundle-operator oci://",
        "logicbundle push ./pricing",
        "logicbundle sign ",
        "kubectl apply --namespace shop -f pricing.yaml",
        "kubectl patch deployment shop",
        "kubectl wait ",
        "logicbundle status pricing",
        "logicbundle abort pricing",
    ):
        assert step in run, f"the quick start no longer runs {step!r}"
