"""Benchmark the product on the real node (issue 9, "Measure").

``python -m e2e.harness.netns -- .venv/bin/python -m e2e.bench.bench_real_node
[--rounds 8] [--admissions 5] [--repetitions 3] [--json FILE]`` (also ``make
bench-real-node``) starts, inside the harness network namespace, the registry on
the node's address, the control plane, the real kubelet node, and installs the
product by the commands of ``docs/quickstart.md`` (two operator pods; 10 + 1 shop
pods with the agent injected). Then it measures, in real containers:

1. swap and rollback of a 10 KB bundle: the agents' own ``lastSwap`` record
   (``GET http://<pod>:9901/status``) after each ``kubectl apply`` of a new digest,
   and after the apply back to the one served before;
2. pod admission -> Ready for a bare pod opted in (the webhook injects the agent,
   and the readiness gate waits for the bundle) against the same pod not opted in;
3. ``kubectl apply`` of a new bundle -> every pod serving it, against ``kubectl
   rollout restart`` -> every new pod Ready (same run, same node), and one staged
   rollout (internal -> 5 % -> everyone, with its analysis) under light traffic;
4. memory of the agent and app containers (cgroup usage, the kubelet's working set,
   the process's RSS) and of the operator pods;
5. the harness's own times (registry + images, control plane, node, install).

Everything is printed as a report; ``--json FILE`` writes the same figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from e2e.harness import node_images, product
from e2e.harness.cluster import Cluster
from e2e.harness.netns import NODE_IP, in_harness_netns
from e2e.harness.node import RealNode
from e2e.harness.operator import EXAMPLES, push_bundle
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.product import APP_SELECTOR, OPERATOR_NS, SHOP, Installed
from e2e.harness.realpods import (
    Containerd,
    Traffic,
    cgroup_memory_bytes,
    cgroup_memory_working_set,
    container_id,
    get_json,
    is_ready,
    pods,
    served,
)
from e2e.harness.services import Registry
from logicbundle.api import names

COMMAND = "python -m e2e.harness.netns -- .venv/bin/python -m e2e.bench.bench_real_node"
AGENT_PORT = 9901
REPLICAS = 10
PODS = REPLICAS + 1  # plus the internal pod
ALL_AT_ONCE: dict[str, Any] = {"stages": [{"name": "all", "all": True}], "skipAnalysis": True}
PAD_BYTES = 10 * 1024
MIB = 1024 * 1024

# Published host-process figures (docs/benchmarks.md, "The data plane", second run, n = 200).
HOST_SWAP_10KB = {"median": 3.13, "p99": 4.40}
HOST_ROLLBACK_10KB = {"median": 0.55, "p99": 0.90}
# kwok, 20 pods (docs/benchmarks.md, "Rollouts", current code).
KWOK_APPLY_20 = 0.24
KWOK_RESTART_20 = 0.70


def log(msg: str) -> None:
    print(f"[bench-real-node] {msg}", file=sys.stderr, flush=True)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (p99 of fewer than 100 samples is the maximum or next to it)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": quantile(values, 0.99),
        "max": max(values),
        "min": min(values),
    }


# ---------------------------------------------------------------------------------- bundles


class Variants:
    """Fresh ~10 KB variants of pricing-v2, each with its own digest, pushed on demand."""

    def __init__(self, installed: Installed, work: Path) -> None:
        self.installed = installed
        self.work = work
        self.count = 0

    def push(self) -> tuple[str, str]:
        """Push the next variant; its ``(tag, digest)``."""
        self.count += 1
        tag = f"bench-{self.count}"
        source = self.work / tag
        shutil.copytree(EXAMPLES / "bundles" / "pricing-v2", source)
        size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        line = f"variant {self.count} of the benchmark's pricing bundle, padding text\n"
        padding = (line * (PAD_BYTES // len(line) + 1))[: PAD_BYTES - size]
        (source / "padding.txt").write_text(padding)
        digest = push_bundle(
            self.installed.registry_host,
            source,
            repository=f"{SHOP}/pricing",
            tag=tag,
            version=f"2.1.{self.count}",
            key=self.installed.key,
        )
        return tag, digest


def wait_serving(cluster: Cluster, digest: str, *, timeout: float, interval: float = 0.1) -> float:
    """Poll every pod's app until all ``PODS`` serve ``digest``; the monotonic time seen."""
    deadline = time.monotonic() + timeout
    while True:
        now = served(cluster, SHOP, APP_SELECTOR)
        seen = time.monotonic()
        if len(now) == PODS and all(d == digest for d in now.values()):
            return seen
        if seen > deadline:
            raise HarnessError(f"not every pod serves {digest[:19]} after {timeout}s: {now}")
        time.sleep(interval)


def last_swaps(cluster: Cluster, digest: str, *, timeout: float = 30) -> list[dict[str, Any]]:
    """Every shop pod's agent's ``lastSwap`` of the bundle, once it names ``digest``."""
    found: dict[str, dict[str, Any]] = {}

    def done() -> bool:
        for pod in pods(cluster, SHOP, APP_SELECTOR):
            name = pod["metadata"]["name"]
            ip = (pod.get("status") or {}).get("podIP")
            if name in found or not ip:
                continue
            status, body = get_json(f"http://{ip}:{AGENT_PORT}/status")
            swap = ((body or {}).get("bundles") or {}).get("pricing", {}).get("lastSwap")
            if status == 200 and swap and swap.get("to") == digest:
                found[name] = swap
        return len(found) == PODS

    wait_for(done, what=f"{PODS} agents' lastSwap to {digest[:19]}", timeout=timeout)
    return list(found.values())


# ---------------------------------------------------------------------------- measurements


def measure_swaps(installed: Installed, variants: Variants, rounds: int) -> dict[str, Any]:
    cluster = installed.cluster
    records: dict[str, list[dict[str, Any]]] = {"swap": [], "rollback": []}
    previous_tag, previous_digest = "v1", installed.digests["v1"]
    for round_ in range(rounds):
        tag, digest = variants.push()
        installed.set_ref(tag, rollout=ALL_AT_ONCE)
        wait_serving(cluster, digest, timeout=120)
        records["swap"] += last_swaps(cluster, digest)
        installed.set_ref(previous_tag, rollout=ALL_AT_ONCE)
        wait_serving(cluster, previous_digest, timeout=120)
        records["rollback"] += last_swaps(cluster, previous_digest)
        log(f"swap round {round_ + 1}/{rounds} done")
        # The next round swaps from this round's bundle and rolls back to it.
        installed.set_ref(tag, rollout=ALL_AT_ONCE)
        wait_serving(cluster, digest, timeout=120)
        last_swaps(cluster, digest)
        previous_tag, previous_digest = tag, digest
    out: dict[str, Any] = {}
    for kind, swaps in records.items():
        out[kind] = {
            "outcomes": sorted({str(s.get("outcome")) for s in swaps}),
            "totalMs": summary([float(s["totalMs"]) for s in swaps]),
            "swapPartMs": summary(
                [float(s["swapMs"]) + float(s["notifyMs"]) + float(s["healthMs"]) for s in swaps]
            ),
            **{
                field: summary([float(s[field]) for s in swaps])
                for field in ("fetchMs", "unpackMs", "swapMs", "notifyMs", "healthMs")
            },
        }
    return out


def bare_pod(name: str, image: str, *, injected: bool) -> dict[str, Any]:
    """The shop Deployment's pod, bare, startable without the agent (see the module doc)."""
    template = product.shop_deployment(
        "unused", image=image, replicas=1, labels={"app": "shop"}, opt_in=injected
    )["spec"]["template"]
    labels = dict(template["metadata"]["labels"])
    labels.pop("deployment")  # a Deployment's ReplicaSet would adopt the pod
    if not injected:
        labels.pop("app")
    spec = template["spec"]
    (app,) = spec["containers"]
    app["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    app["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    if not injected:
        # Set only here: the webhook keeps a container's own LOGICBUNDLE_* env, so in the
        # injected pod these would point the app away from the agent's volume and socket.
        app["env"] = [
            {"name": "LOGICBUNDLE_ROOT", "value": "/tmp/lb"},
            {"name": "LOGICBUNDLE_SOCKET", "value": "/tmp/sdk.sock"},
        ]
    spec["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def time_admission(cluster: Cluster, manifest: dict[str, Any], *, timeout: float = 180) -> float:
    name = manifest["metadata"]["name"]
    path = f"/api/v1/namespaces/{SHOP}/pods"
    started = time.monotonic()
    cluster.request("POST", path, manifest)
    while True:
        pod = cluster.request("GET", f"{path}/{name}")
        if is_ready(pod):
            took = time.monotonic() - started
            break
        if time.monotonic() - started > timeout:
            raise HarnessError(f"pod {name} not Ready after {timeout}s: {pod.get('status')}")
        time.sleep(0.05)
    cluster.request("DELETE", f"{path}/{name}")

    def gone() -> bool:
        try:
            cluster.request("GET", f"{path}/{name}")
        except HarnessError as error:
            return "HTTP 404" in str(error)
        return False

    wait_for(gone, what=f"pod {name} deleted", timeout=120)
    return took


def measure_admission(installed: Installed, repetitions: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"injected": [], "plain": []}
    for i in range(repetitions):
        for kind in ("injected", "plain"):
            manifest = bare_pod(
                f"bench-admit-{kind}-{i}", installed.app_image, injected=kind == "injected"
            )
            times[kind].append(time_admission(installed.cluster, manifest))
            log(f"admission {kind} {i + 1}/{repetitions}: {times[kind][-1]:.2f} s")
    out: dict[str, Any] = {kind: summary(values) for kind, values in times.items()}
    out["ratio_injected_plain"] = out["injected"]["median"] / out["plain"]["median"]
    out["samples"] = times
    return out


def time_apply(installed: Installed, variants: Variants) -> float:
    tag, digest = variants.push()
    started = time.monotonic()
    installed.set_ref(tag, rollout=ALL_AT_ONCE)
    return wait_serving(installed.cluster, digest, timeout=180) - started


def time_restart(installed: Installed, *, timeout: float = 300) -> float:
    cluster = installed.cluster
    old = {p["metadata"]["name"] for p in pods(cluster, SHOP, APP_SELECTOR)}
    deployments = ("deployment/shop", "deployment/shop-internal")
    started = time.monotonic()
    cluster.kubectl("rollout", "restart", *deployments, "-n", SHOP)
    for deployment in deployments:
        cluster.kubectl("rollout", "status", deployment, "-n", SHOP, f"--timeout={timeout}s")
    deadline = started + timeout
    while True:
        now = pods(cluster, SHOP, APP_SELECTOR)
        seen = time.monotonic()
        names_now = {p["metadata"]["name"] for p in now}
        if len(now) == PODS and not names_now & old and all(is_ready(p) for p in now):
            digests = served(cluster, SHOP, APP_SELECTOR)
            if len(digests) == PODS and all(digests.values()):
                return seen - started
        if seen > deadline:
            raise HarnessError(f"restart not done after {timeout}s: {sorted(names_now)}")
        time.sleep(0.1)


def time_staged(installed: Installed, variants: Variants) -> dict[str, Any]:
    tag, digest = variants.push()
    with Traffic(installed.cluster, SHOP, APP_SELECTOR, per_second=40) as traffic:
        started = time.monotonic()
        installed.set_ref(tag, rollout=product.ROLLOUT)
        took = wait_serving(installed.cluster, digest, timeout=300) - started
    errors = sum(1 for a in traffic.answers if a.status != 200)
    return {"seconds": took, "requests": len(traffic.answers), "non200": errors}


def measure_apply_restart(
    installed: Installed, variants: Variants, repetitions: int
) -> dict[str, Any]:
    apply: list[float] = []
    restart: list[float] = []
    for i in range(repetitions):
        apply.append(time_apply(installed, variants))
        log(f"apply {i + 1}/{repetitions}: {apply[-1]:.2f} s")
        restart.append(time_restart(installed))
        log(f"restart {i + 1}/{repetitions}: {restart[-1]:.2f} s")
    staged = time_staged(installed, variants)
    log(f"staged rollout: {staged['seconds']:.2f} s")
    a, r = summary(apply), summary(restart)
    return {
        "apply": a,
        "restart": r,
        "ratio_restart_apply": r["median"] / a["median"],
        "samples": {"apply": apply, "restart": restart},
        "staged": staged,
    }


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``RssAnon``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise HarnessError(f"no {field} for pid {pid}")


def measure_memory(installed: Installed, node: RealNode) -> dict[str, Any]:
    containerd = Containerd(socket=node.containerd_socket)
    samples: dict[str, dict[str, list[float]]] = {}
    groups: list[tuple[str, str, str]] = [
        (SHOP, APP_SELECTOR, names.AGENT_CONTAINER),
        (SHOP, APP_SELECTOR, "app"),
        (OPERATOR_NS, "app.kubernetes.io/component=operator", "operator"),
    ]
    for namespace, selector, container in groups:
        kind = samples.setdefault(
            container, {"usage": [], "workingSet": [], "rss": [], "rssAnon": []}
        )
        for pod in pods(installed.cluster, namespace, selector):
            pid = containerd.pid(container_id(pod, container))
            kind["usage"].append(cgroup_memory_bytes(pid) / MIB)
            kind["workingSet"].append(cgroup_memory_working_set(pid) / MIB)
            kind["rss"].append(proc_status(pid, "VmRSS") / MIB)
            kind["rssAnon"].append(proc_status(pid, "RssAnon") / MIB)
    return {
        container: {measure: summary(values) for measure, values in kind.items()}
        for container, kind in samples.items()
    }


# ---------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    h = results["harness"]
    add(f"load average (1 min) at start {results['load'][0]:.2f}, at end {results['load'][1]:.2f}")
    add("== harness (seconds)")
    add(
        f"registry + image push {h['registry_and_images']:.1f} | control plane "
        f"{h['control_plane']:.1f} | node {h['node']:.1f} | install (quick start -> every pod "
        f"serves v1) {h['install']:.1f} | total {sum(h.values()):.1f}"
    )
    if "swaps" in results:
        add("")
        rounds = results["args"]["rounds"]
        add(
            f"== swap and rollback in real containers, 10 KB bundle ({rounds} rounds x {PODS} pods)"
        )
        for kind, host in (("swap", HOST_SWAP_10KB), ("rollback", HOST_ROLLBACK_10KB)):
            s = results["swaps"][kind]
            part, total = s["swapPartMs"], s["totalMs"]
            add(
                f"{kind:8s} n={total['n']}  total median {total['median']:.2f} ms p99 "
                f"{total['p99']:.2f} max {total['max']:.2f} | swap part (swap+notify+health) "
                f"median "
                f"{part['median']:.2f} ms p99 {part['p99']:.2f} | outcomes {s['outcomes']}"
            )
            add(
                f"{'':8s} fetch {s['fetchMs']['median']:.2f} unpack {s['unpackMs']['median']:.2f} "
                f"swap {s['swapMs']['median']:.2f} notify {s['notifyMs']['median']:.2f} health "
                f"{s['healthMs']['median']:.2f} (medians, ms)"
            )
            add(
                f"{'':8s} host process, published (bench_agent, n=200): median {host['median']} ms "
                f"p99 {host['p99']} ms -> real/host p99 {part['p99'] / host['p99']:.1f}x, median "
                f"{part['median'] / host['median']:.1f}x"
            )
    if "admission" in results:
        a = results["admission"]
        add("")
        add(f"== pod admission -> Ready (bare pod, n={a['plain']['n']} each)")
        for kind in ("plain", "injected"):
            add(
                f"{kind:8s} median {a[kind]['median']:.2f} s max {a[kind]['max']:.2f} s "
                f"samples {[round(x, 2) for x in a['samples'][kind]]}"
            )
        add(f"ratio injected / plain: {a['ratio_injected_plain']:.2f}x")
    if "rollouts" in results:
        r = results["rollouts"]
        add("")
        add(f"== kubectl apply -> all {PODS} serve vs rollout restart -> all new pods Ready")
        add(
            f"apply   median {r['apply']['median']:.2f} s max {r['apply']['max']:.2f} s "
            f"samples {[round(x, 2) for x in r['samples']['apply']]}"
        )
        add(
            f"restart median {r['restart']['median']:.2f} s max {r['restart']['max']:.2f} s "
            f"samples {[round(x, 2) for x in r['samples']['restart']]}"
        )
        add(
            f"ratio restart / apply: {r['ratio_restart_apply']:.1f}x (kwok, 20 pods, published: "
            f"{KWOK_RESTART_20} / {KWOK_APPLY_20} s = {KWOK_RESTART_20 / KWOK_APPLY_20:.1f}x)"
        )
        st = r["staged"]
        add(
            f"staged rollout (internal -> 5 % -> everyone, analysis) under 40 req/s: "
            f"{st['seconds']:.1f} s, {st['requests']} requests, {st['non200']} not 200"
        )
    if "memory" in results:
        add("")
        add("== memory (MiB): median / max")
        for container, kind in results["memory"].items():
            add(
                f"{container:18s} n={kind['usage']['n']}  cgroup usage "
                f"{kind['usage']['median']:.1f} / {kind['usage']['max']:.1f} | working set "
                f"{kind['workingSet']['median']:.1f} / {kind['workingSet']['max']:.1f} | RSS "
                f"{kind['rss']['median']:.1f} / {kind['rss']['max']:.1f} (anonymous "
                f"{kind['rssAnon']['median']:.1f} / {kind['rssAnon']['max']:.1f})"
            )
    return "\n".join(lines)


def timed(what: str, timings: dict[str, float], call: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = call()
    timings[what] = time.monotonic() - started
    log(f"{what}: {timings[what]:.1f} s")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8, help="swap + rollback rounds")
    parser.add_argument("--admissions", type=int, default=5, help="pods of each kind")
    parser.add_argument("--repetitions", type=int, default=3, help="applies and restarts")
    parser.add_argument("--skip", default="", help="comma list: swaps,admission,rollouts,memory")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not in_harness_netns():
        print(
            "error: the real-node benchmark runs only inside the harness network namespace:\n"
            f"  {COMMAND}",
            file=sys.stderr,
        )
        return 2
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {
        "args": {"rounds": args.rounds, "admissions": args.admissions, "reps": args.repetitions}
    }
    timings: dict[str, float] = {}
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench-real-node-"))
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(Registry.start(work / "registry", address=NODE_IP))
        started = time.monotonic()
        images = node_images.push(registry.host)
        timings["registry_and_images"] = time.monotonic() - started
        cluster = timed(
            "control_plane",
            timings,
            lambda: stack.enter_context(Cluster.start(work / "cluster", nodes=0, real_node=True)),
        )
        node = timed(
            "node",
            timings,
            lambda: stack.enter_context(
                RealNode.start(
                    work / "node",
                    cluster,
                    registry_host=registry.host,
                    sandbox_image=images["pause"],
                )
            ),
        )
        installed: Installed = timed(
            "install",
            timings,
            lambda: product.install(
                cluster, registry.host, work / "product", replicas=REPLICAS, timeout=300
            ),
        )
        results["harness"] = timings
        wait_serving(cluster, installed.digests["v1"], timeout=60)
        variants = Variants(installed, work / "variants")
        if "swaps" not in skip:
            results["swaps"] = measure_swaps(installed, variants, args.rounds)
        if "admission" not in skip:
            results["admission"] = measure_admission(installed, args.admissions)
        if "memory" not in skip:
            # Before the restarts: the agents that made every swap above.
            results["memory"] = measure_memory(installed, node)
        if "rollouts" not in skip:
            results["rollouts"] = measure_apply_restart(installed, variants, args.repetitions)
    results["load"] = [load_start, os.getloadavg()[0]]
    print(report(results), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
