"""The demo on the real node: ``make demo ARGS=--real-node``.

The same story as :mod:`e2e.demo`, in real containers: the harness's real
kubelet (containerd, runc, CNI, kube-proxy, CoreDNS) inside its network
namespace, the project's image and the sample app's image built with buildah,
the chart installed by the commands of docs/quickstart.md, and a Deployment of
10 pods plus an internal one whose agents the webhook injected. v2 goes
internal -> 5 % -> everyone under traffic, a bad v3 is caught and rolled back,
and no container restarts.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from e2e import versions
from e2e.demo import BOLD, RESET, LiveView, say, until
from e2e.harness import netns, node_images
from e2e.harness.cluster import Cluster
from e2e.harness.node import RealNode
from e2e.harness.operator import condition, get_bundle
from e2e.harness.proc import HarnessError
from e2e.harness.product import APP_SELECTOR, SHOP, install, operator_pods
from e2e.harness.realpods import (
    Containerd,
    Traffic,
    cgroup_memory_working_set,
    container_id,
    pods,
    restart_counts,
    served,
)
from e2e.harness.services import Registry
from logicbundle.api import names

PODS = 11


class _Served:
    """What LiveView asks a fleet: digest -> pods serving it (from the pods' own answers)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def served(self) -> dict[str, int]:
        now = served(self.cluster, SHOP, APP_SELECTOR)
        return dict(Counter(d for d in now.values() if d))


def _memory(cluster: Cluster, node: RealNode) -> str:
    runtime = Containerd(socket=node.containerd_socket)
    agents = sorted(
        cgroup_memory_working_set(runtime.pid(container_id(p, names.AGENT_CONTAINER)))
        for p in pods(cluster, SHOP, APP_SELECTOR)
    )
    operators = [
        cgroup_memory_working_set(runtime.pid(container_id(p, "operator")))
        for p in operator_pods(cluster)
    ]
    return (
        f"memory (cgroup working set): agent containers median "
        f"{agents[len(agents) // 2] / 2**20:.1f} MiB (max {agents[-1] / 2**20:.1f} MiB), "
        f"operator pods {', '.join(f'{m / 2**20:.0f} MiB' for m in operators)}"
    )


def run(*, check: bool, keep: bool) -> int:
    if not netns.in_harness_netns():
        print(
            "the real-node demo runs inside the harness network namespace: make demo "
            "ARGS=--real-node (or python -m e2e.harness.netns -- .venv/bin/python -m e2e.demo "
            "--real-node)",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="logicbundle-demo-real-"))
    summary: list[str] = []
    say(f"starting Kubernetes {versions.KUBERNETES} with a real node (kubelet, containerd, runc)")
    try:
        with contextlib.ExitStack() as stack:
            registry = stack.enter_context(Registry.start(work / "registry", address=netns.NODE_IP))
            images = node_images.push(registry.host)
            cluster = stack.enter_context(Cluster.start(work / "cluster", nodes=0, real_node=True))
            node = stack.enter_context(
                RealNode.start(
                    work / "node",
                    cluster,
                    registry_host=registry.host,
                    sandbox_image=images["pause"],
                )
            )
            say(
                f"control plane ready in {cluster.started_in:.1f}s, node {node.name} Ready in "
                f"{node.started_in:.1f}s; registry at {registry.host}"
            )
            say("the quick start (docs/quickstart.md): helm install, apply, opt in, wait")
            started = time.monotonic()
            installed = install(cluster, registry.host, work / "product")
            summary.append(
                f"installed with helm from the built image; {PODS} pods injected and serving v1 "
                f"in {time.monotonic() - started:.1f}s"
            )
            label = {d: t for t, d in installed.digests.items()}
            view = LiveView(cluster, SHOP, _Served(cluster), label)
            try:
                with Traffic(cluster, SHOP, APP_SELECTOR, per_second=40):
                    say("v2: internal -> 5 % -> everyone, judged on the error rate")
                    installed.set_ref("v2")
                    v2 = installed.digests["v2"]
                    took = until(
                        view,
                        "v2 everywhere",
                        lambda: (
                            _Served(cluster).served().get(v2, 0) == PODS
                            and (
                                condition(get_bundle(cluster, SHOP, "pricing"), "Ready") or {}
                            ).get("status")
                            == "True"
                        ),
                    )
                    summary.append(f"v2 rolled out in stages to {PODS} real pods in {took:.1f}s")
                    say("v3: a bad version; the analysis should catch it")
                    installed.set_ref("v3")
                    took = until(
                        view,
                        "v3 rolled back",
                        lambda: (
                            (condition(get_bundle(cluster, SHOP, "pricing"), "Stalled") or {}).get(
                                "status"
                            )
                            == "True"
                            and _Served(cluster).served().get(v2, 0) == PODS
                        ),
                    )
                    summary.append(f"v3 caught and rolled back on every pod in {took:.1f}s")
                restarts = sum(
                    sum(restart_counts(p).values()) for p in pods(cluster, SHOP, APP_SELECTOR)
                )
                summary.append(f"container restarts in the {PODS} pods: {restarts}")
                summary.append(_memory(cluster, node))
                v2_stages = view.stages_of(v2)
                assert v2_stages == ["internal", "canary", "everyone"], v2_stages
                assert restarts == 0, restarts
                assert _Served(cluster).served() == {v2: PODS}
                print()
                say("what happened:")
                for line in summary:
                    print(f"  - {line}")
                say(f"everything up and done in {time.monotonic() - t0:.0f}s")
                if check:
                    say("check passed")
                    return 0
                if not keep:
                    say("run `make demo ARGS='--real-node --keep'` to leave it running")
                    return 0
                ns = netns.enter_prefix()
                say("still running; look around (Ctrl-C stops everything):")
                print(f"    export KUBECONFIG={cluster.kubeconfig}")
                print(f"    {ns}{cluster.kubectl_path} get lb,pods -n {SHOP} -o wide")
                print(f"    {ns}{cluster.kubectl_path} get pods -n logicbundle-system")
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                while not stop.wait(1.0):
                    view.show()
                return 0
            finally:
                view.close()
    except KeyboardInterrupt:
        return 130
    except (HarnessError, AssertionError) as exc:
        print(f"{BOLD}demo failed{RESET}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        say("stopped")
