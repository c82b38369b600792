"""The local demo: a staged hot reload and an automatic rollback on the embedded control plane.

``make demo`` (the README's first command) builds what is missing, then:

1. starts Kubernetes (etcd, apiserver, controller-manager, scheduler, kwok),
   an OCI registry, Prometheus and the operator, all on 127.0.0.1;
2. creates 10 opted-in pods (2 of them ``internal``), each with a real reload
   agent and a real sample pricing app as local processes, and traffic;
3. packs, pushes and signs v1 and rolls it out;
4. rolls v2 through internal -> 5 % -> everyone, with a live view;
5. rolls a bad v3 (20 % of its calls fail), which the analysis catches and
   rolls back on every pod, without a restart;
6. prints what happened and how to look around.

``--real-node`` tells the same story on the harness's real node instead: the
project's image and the sample app's image (built with buildah), the chart
installed by the quick start's commands (docs/quickstart.md), a Deployment of
10 pods plus an internal one, each a real container with its injected agent
(:mod:`e2e.demo_real_node`). About a minute and a half when warm, against 35 s
for the kwok demo, which is why it is a flag: the default shows the product in
the time a newcomer gives it, the flag shows it in real containers.

``--keep`` leaves everything running until Ctrl-C; ``--check`` is the
non-interactive mode for CI: it asserts the outcome and exits non-zero when
the story did not happen.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from e2e import versions
from e2e.harness import netns
from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import (
    EXAMPLES,
    BundleWatch,
    KeyPair,
    Operator,
    apply,
    condition,
    get_bundle,
    logicbundle,
    push_bundle,
)
from e2e.harness.proc import HarnessError, rss_bytes, wait_for
from e2e.harness.services import Prometheus, Registry
from logicbundle.api import names

PODS = 10
INTERNAL = {names.LABEL_COHORT: names.COHORT_INTERNAL}
BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


def say(msg: str) -> None:
    print(f"{BOLD}[demo]{RESET} {msg}", flush=True)


def short(digest: str | None) -> str:
    if not digest or not digest.startswith("sha256:"):
        return "-"
    return digest[7:19]


class Serving(Protocol):
    """What the live view asks of the pods: digest -> how many serve it."""

    def served(self) -> dict[str, int]: ...


class LiveView:
    """Prints one line per change: stage, condition, pods per digest, last analysis.

    The LogicBundle's versions come from a watch, so a status that lived for
    less than one refresh (a last stage whose pods all switch at once) is still
    shown; the pods per digest are what the apps serve when the line is printed.
    """

    def __init__(
        self, cluster: Cluster, namespace: str, fleet: Serving, names_: dict[str, str]
    ) -> None:
        self.cluster, self.namespace, self.fleet, self.names = cluster, namespace, fleet, names_
        self.watch = BundleWatch(cluster, namespace, "pricing")
        self.stages: list[tuple[str | None, str]] = []
        """(candidate digest, stage) in the order the status entered them."""
        self._obj: dict[str, Any] = {}
        self._last = ""

    def line(self, obj: Mapping[str, Any]) -> str:
        status = obj.get("status") or {}
        reconciling = condition(obj, "Reconciling") or {}
        stalled = condition(obj, "Stalled") or {}
        ready = condition(obj, "Ready") or {}
        state = (
            f"Stalled/{stalled.get('reason')}"
            if stalled.get("status") == "True"
            else "Ready"
            if ready.get("status") == "True"
            else f"Reconciling/{reconciling.get('reason', '?')}"
        )
        served = self.fleet.served()
        pods = ", ".join(f"{self.names.get(d, short(d))}:{n}" for d, n in sorted(served.items()))
        analysis = status.get("analysis") or {}
        figures = "; ".join(
            f"{m['name']} {m.get('candidate', '-')}"
            + (f" vs {m['stable']}" if m.get("stable") is not None else "")
            for m in analysis.get("metrics", [])
        )
        stage = status.get("stage") or "-"
        return f"stage {stage:<9} {state:<36} serving [{pods}]" + (
            f"  {DIM}{analysis.get('verdict')}: {figures}{RESET}" if figures else ""
        )

    def _print(self, obj: Mapping[str, Any]) -> None:
        text = self.line(obj)
        if text != self._last:
            print(f"  {time.strftime('%H:%M:%S')}  {text}", flush=True)
            self._last = text

    def show(self) -> None:
        versions = self.watch.drain()
        for obj in versions:
            status = obj.get("status") or {}
            stage = status.get("stage")
            seen = (status.get("candidateDigest"), str(stage))
            if stage and (not self.stages or self.stages[-1] != seen):
                self.stages.append(seen)
            self._print(obj)
        if versions:
            self._obj = versions[-1]
        elif self._obj:
            self._print(self._obj)  # the pods may have moved without a status change

    def stages_of(self, digest: str) -> list[str]:
        return [stage for candidate, stage in self.stages if candidate == digest]

    def close(self) -> None:
        self.watch.stop()


def until(view: LiveView, what: str, done: Callable[[], bool], timeout: float = 180) -> float:
    started = time.monotonic()

    def check() -> bool:
        view.show()
        return done()

    wait_for(check, what=what, timeout=timeout, interval=0.25)
    view.show()  # the state that ended the wait, even when it came between two refreshes
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="non-interactive: assert and exit")
    mode.add_argument("--keep", action="store_true", help="leave it running until Ctrl-C")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="real containers on the harness's real kubelet, installed with helm",
    )
    args = parser.parse_args(argv)
    if args.real_node:
        from e2e.demo_real_node import run

        return run(check=args.check, keep=args.keep)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="logicbundle-demo-"))
    summary: list[str] = []
    say(
        f"starting Kubernetes {versions.KUBERNETES} on 127.0.0.1 (the first run builds it "
        "from the Go module proxy: 12 to 16 minutes on 2 cores; then seconds)"
    )
    try:
        with (
            Cluster.start(work / "cluster", nodes=1) as cluster,
            Registry.start(work / "registry") as registry,
        ):
            say(f"control plane ready in {cluster.started_in:.1f}s; registry at {registry.host}")
            cluster.kubectl(
                "apply", "--server-side", "-f", str(Path(__file__).resolve().parent.parent / "crds")
            )
            cluster.wait_established("logicbundles.logicbundle.io")
            operator = Operator.start(cluster, work / "operator")
            say(f"operator running (log {operator.process.log_path})")
            namespace = "shop"
            cluster.kubectl("create", "namespace", namespace)

            key = KeyPair.generate()
            (work / "cosign.pub").write_text(key.public_pem)
            digests = {}
            for tag, source in (
                ("v1", "pricing-v1"),
                ("v2", "pricing-v2"),
                ("v3", "pricing-flaky"),
            ):
                digests[tag] = push_bundle(
                    registry.host,
                    EXAMPLES / "bundles" / source,
                    repository="shop/pricing",
                    tag=tag,
                    version=f"{tag[1]}.0.0",
                    key=key,
                )
            say("packed, pushed and signed v1, v2 and v3 (v3 fails 20 % of its calls)")
            label = {d: t for t, d in digests.items()}

            fleet = Fleet(
                cluster=cluster,
                namespace=namespace,
                work=work / "pods",
                distributor_url=operator.distributor_url,
                bundles={"pricing": {"source": f"{registry.host}/shop/pricing", "insecure": True}},
                labels={"app": "checkout"},
            )
            view: LiveView | None = None
            try:
                fleet.add(2, extra_labels=INTERNAL)
                fleet.add(PODS - 2)
                manifest = logicbundle(
                    "pricing",
                    ref=f"{registry.host}/shop/pricing:v1",
                    key=key,
                    selector={"app": "checkout"},
                    interval="1h",
                    rollout={
                        "stages": [
                            {
                                "name": "internal",
                                "internal": {"matchLabels": INTERNAL},
                                "pause": "3s",
                            },
                            {"name": "canary", "percent": 5, "pause": "3s"},
                            {"name": "everyone", "all": True},
                        ],
                        "analysis": {
                            "provider": "builtin",
                            "interval": "2s",
                            "minSamples": 20,
                            "metrics": [
                                {"name": "error-rate", "builtin": "errorRate", "max": 0.05}
                            ],
                        },
                    },
                )
                view = LiveView(cluster, namespace, fleet, label)
                say(f"kubectl apply -f pricing.yaml (v1) on {PODS} pods with reload agents")
                apply(cluster, namespace, manifest)
                took = until(
                    view,
                    "v1 installed",
                    lambda: (
                        (condition(get_bundle(cluster, namespace, "pricing"), "Ready") or {}).get(
                            "status"
                        )
                        == "True"
                    ),
                )
                fleet.start_apps()
                fleet.wait_serving(digests["v1"])
                summary.append(f"v1 installed on {PODS} pods in {took:.1f}s")
                prometheus = Prometheus.start(
                    work / "prometheus",
                    config={
                        "global": {"scrape_interval": "2s"},
                        "scrape_configs": [
                            {
                                "job_name": "apps",
                                "static_configs": [
                                    {"targets": [f"127.0.0.1:{p.app_port}" for p in fleet.pods]}
                                ],
                            },
                            {
                                "job_name": "operator",
                                "static_configs": [
                                    {"targets": [f"127.0.0.1:{operator.metrics_port}"]}
                                ],
                            },
                        ],
                    },
                )
                with prometheus, Traffic(fleet, per_second=60):
                    say("v2: internal -> 5 % -> everyone, judged on the error rate")
                    manifest["spec"]["source"]["ref"] = f"{registry.host}/shop/pricing:v2"
                    apply(cluster, namespace, manifest)
                    took = until(
                        view,
                        "v2 everywhere",
                        lambda: (
                            fleet.served().get(digests["v2"], 0) == PODS
                            and (
                                condition(get_bundle(cluster, namespace, "pricing"), "Ready") or {}
                            ).get("status")
                            == "True"
                        ),
                    )
                    summary.append(
                        f"v2 rolled out in stages to {PODS} pods in {took:.1f}s, no restart"
                    )
                    say("v3: a bad version; the analysis should catch it")
                    manifest["spec"]["source"]["ref"] = f"{registry.host}/shop/pricing:v3"
                    apply(cluster, namespace, manifest)
                    took = until(
                        view,
                        "v3 rolled back",
                        lambda: (
                            (
                                condition(get_bundle(cluster, namespace, "pricing"), "Stalled")
                                or {}
                            ).get("status")
                            == "True"
                            and fleet.served().get(digests["v2"], 0) == PODS
                        ),
                    )
                    stalled = condition(get_bundle(cluster, namespace, "pricing"), "Stalled")
                    summary.append(
                        f"v3 caught and rolled back after {took:.1f}s: "
                        f"{(stalled or {}).get('message', '')}"
                    )
                    agents = sorted(rss_bytes(p.agent.pid) for p in fleet.pods if p.agent)
                    summary.append(
                        f"memory: operator {rss_bytes(operator.process.pid) / 2**20:.0f} MiB, "
                        f"agents median {agents[len(agents) // 2] / 2**20:.1f} MiB "
                        f"(max {agents[-1] / 2**20:.1f} MiB), control plane "
                        f"{cluster.rss_bytes() / 2**20:.0f} MiB"
                    )
                    status = get_bundle(cluster, namespace, "pricing")["status"]
                    assert status["stableDigest"] == digests["v2"], status
                    v2_stages = view.stages_of(digests["v2"])
                    assert v2_stages == ["internal", "canary", "everyone"], v2_stages
                    assert fleet.served() == {digests["v2"]: PODS}
                    print()
                    say("what happened:")
                    for line in summary:
                        print(f"  - {line}")
                    say(f"everything up and done in {time.monotonic() - t0:.0f}s")
                    if args.check:
                        say("check passed")
                        return 0
                    if not args.keep:
                        say(
                            "run `make demo ARGS=--keep` (or python -m e2e.demo --keep) to "
                            "leave it running and look around"
                        )
                        return 0
                    say("still running; look around (Ctrl-C stops everything):")
                    # Under `make demo` all of it lives in the harness's network namespace.
                    ns = netns.enter_prefix()
                    print(f"    export KUBECONFIG={cluster.kubeconfig}")
                    print(f"    {ns}{cluster.kubectl_path} get lb,pods -n shop")
                    print(f"    {ns}{cluster.kubectl_path} describe lb pricing -n shop")
                    print(f"    {ns}.venv/bin/logicbundle status pricing -n shop")
                    app = fleet.pods[0].app_port
                    print(f"    {ns}curl 'http://127.0.0.1:{app}/price?item=apple&qty=2'")
                    print(f"    Prometheus: {ns}curl '{prometheus.url}/api/v1/query?query=up'")
                    signal.signal(signal.SIGINT, lambda *_: stop.set())
                    while not stop.wait(1.0):
                        view.show()
                    return 0
            finally:
                if view is not None:
                    view.close()
                fleet.stop()
                operator.stop()
    except KeyboardInterrupt:
        return 130
    except (HarnessError, AssertionError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        say("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
