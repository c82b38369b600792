"""Benchmark a big fleet: many LogicBundles x pods, simulated agents, distributor replicas.

``python -m e2e.bench.bench_fleet [--bundles 1000 --pods-per-bundle 10 --replicas 1,2,4]``
starts the real local control plane (kwok nodes), the harness registry, one
``logicbundle operator`` (the leader: it verifies, publishes each bundle's
state and serves the replicas the verified bytes) and N ``logicbundle
distributor`` replicas, each a process with a real pod-bound token, as
:mod:`e2e.harness.replicas` runs them.  Every pod is a kwok Pod with a real
bound token; its agent is SIMULATED in this process (asyncio + aiohttp): a
long-poll on ``GET /v1/targets`` to one replica (pod i to replica i mod N, as a
Service spreads connections) and, on each new target, one ``POST
/v1/reports``.  That is a real agent minus the swap, which ``python -m
e2e.bench.bench_agent`` measures.

For each replica count, in the same run and on the same pods and
LogicBundles (the operator and the replicas are started afresh each time):

- operator RSS, and each replica's RSS, before and with its share of the
  long-polls (so the cost per 1,000 long-polls reads off);
- one LogicBundle's rollout while the others idle: ``kubectl apply`` of a new
  ref -> each of its pods reported the new digest (p50, p99 over pods and
  rounds);
- every LogicBundle rolled out at once -> every pod reported / every bundle
  ``Ready``;
- the CPU each process used in each phase, the simulator's included, so the
  figures can be read on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from e2e.bench.bench_rollout import (
    CRD_FILE,
    FAST,
    Api,
    bound_token,
    kubectl,
    pod_spec,
    proc_cpu_seconds,
    proc_memory,
    ready_on,
    replica_accounts,
    start_leader_and_replicas,
)
from e2e.harness.cluster import Cluster
from e2e.harness.operator import EXAMPLES, LB_PATH, KeyPair, Operator, logicbundle, push_bundle
from e2e.harness.replicas import (
    Replica,
)
from e2e.harness.services import Registry
from logicbundle import contract
from logicbundle.api import names

SA = "agent"
BUNDLE_DIR = EXAMPLES / "bundles" / "pricing-v1"
PODS_PER_NODE = 250
LONG_POLL = 30
"""Seconds a simulated agent's long-poll waits (the real agent's default)."""


def _now() -> float:
    return time.monotonic()


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantiles(samples: Sequence[float]) -> str:
    ordered = sorted(samples)
    if not ordered:
        return "no samples"
    p99 = ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)]
    return (
        f"p50 {statistics.median(ordered):.3f} s, p99 {p99:.3f} s, "
        f"max {ordered[-1]:.3f} s (n={len(ordered)})"
    )


# -- the simulated agents -------------------------------------------------------------------


@dataclass(slots=True)
class Agent:
    namespace: str
    pod: str
    token: str
    url: str = ""
    version: str | None = None
    active: dict[str, str] = field(default_factory=dict)


class Simulator:
    """Every simulated agent in one event loop; who reported what, and when, in O(1)."""

    def __init__(self) -> None:
        # Long-polls hold one connection each for up to LONG_POLL seconds; reports are
        # short and share a bounded pool, so the process never needs 2 fds per agent.
        self.polls = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=LONG_POLL + 15),
        )
        self.posts = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.agents: list[Agent] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.reported: dict[tuple[str, str, str], dict[str, float]] = {}
        """(namespace, bundle, digest) -> {pod: first report of it active}."""
        self._waiters: dict[tuple[str, str, str], list[tuple[int, asyncio.Future[float]]]] = {}
        self.requests = 0
        self.errors = 0

    async def close(self) -> None:
        await self.stop()
        await self.polls.close()
        await self.posts.close()

    def start(self, urls: Sequence[str]) -> None:
        """(Re)start every agent's loop; agent i talks to ``urls[i % len(urls)]``."""
        for i, agent in enumerate(self.agents):
            agent.url = urls[i % len(urls)]
            agent.version = None
            self.tasks.append(asyncio.create_task(self._run(agent)))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def _run(self, agent: Agent) -> None:
        headers = {"Authorization": f"Bearer {agent.token}"}
        while True:
            url = f"{agent.url}/v1/targets?wait={LONG_POLL}"
            if agent.version:
                url += f"&version={agent.version}"
            self.requests += 1
            try:
                async with self.polls.get(url, headers=headers) as resp:
                    if resp.status == 304:
                        continue
                    if resp.status != 200:
                        self.errors += 1
                        await asyncio.sleep(0.5)
                        continue
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError):
                self.errors += 1
                await asyncio.sleep(0.5)
                continue
            agent.version = body["version"]
            if not body["known"]:
                continue
            changed = False
            for bundle, target in body["targets"].items():
                if agent.active.get(bundle) != target["digest"]:
                    agent.active[bundle] = target["digest"]  # a real agent swaps here
                    changed = True
            if changed or not self._has_reported(agent):
                await self._report(agent, headers)

    def _has_reported(self, agent: Agent) -> bool:
        return all(
            agent.pod in self.reported.get((agent.namespace, bundle, digest), {})
            for bundle, digest in agent.active.items()
        )

    async def _report(self, agent: Agent, headers: Mapping[str, str]) -> None:
        body = {
            "bundles": {
                bundle: {"active": digest, "target": digest, "healthy": True}
                for bundle, digest in agent.active.items()
            },
            "agent": {"version": "bench-sim"},
        }
        for _ in range(10):
            self.requests += 1
            try:
                async with self.posts.post(
                    f"{agent.url}/v1/reports", json=body, headers=headers
                ) as resp:
                    if resp.status == 204:
                        break
                    self.errors += 1
            except (aiohttp.ClientError, TimeoutError):
                self.errors += 1
            await asyncio.sleep(0.2)
        else:
            return
        at = _now()
        for bundle, digest in agent.active.items():
            key = (agent.namespace, bundle, digest)
            seen = self.reported.setdefault(key, {})
            if agent.pod in seen:
                continue
            seen[agent.pod] = at
            waiters = self._waiters.get(key)
            if waiters:
                for want, fut in [w for w in waiters if w[0] <= len(seen)]:
                    if not fut.done():
                        fut.set_result(max(seen.values()))
                    waiters.remove((want, fut))

    def forget(self, namespace: str, bundle: str) -> None:
        for key in [k for k in self.reported if k[:2] == (namespace, bundle)]:
            del self.reported[key]

    def forget_all(self) -> None:
        self.reported.clear()

    async def wait_reported(
        self, namespace: str, bundle: str, digest: str, pods: int, *, within: float
    ) -> float:
        """When the ``pods``-th pod of the bundle reported ``digest`` (monotonic time)."""
        key = (namespace, bundle, digest)
        seen = self.reported.get(key, {})
        if len(seen) >= pods:
            return max(seen.values())
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append((pods, fut))
        try:
            return await asyncio.wait_for(fut, within)
        except TimeoutError:
            got = len(self.reported.get(key, {}))
            raise TimeoutError(
                f"{namespace}/{bundle}: {got}/{pods} pods reported {digest}"
            ) from None


# -- the fleet on the API server ------------------------------------------------------------


@dataclass
class Layout:
    bundles: int
    per_bundle: int
    namespaces: int

    def apps(self) -> dict[str, list[str]]:
        per_ns = math.ceil(self.bundles / self.namespaces)
        out: dict[str, list[str]] = {}
        for i in range(self.bundles):
            out.setdefault(f"fleet-{i // per_ns}", []).append(f"b{i}")
        return out


async def create_pods(api: Api, layout: Layout, nodes: int, sim: Simulator) -> tuple[float, float]:
    """Every opted-in pod (bound to a kwok node, as the scheduler would) and its token."""
    sem = asyncio.Semaphore(48)
    index = 0
    started = _now()

    async def one(namespace: str, app: str, k: int, node: int) -> Agent:
        name = f"{app}-{k}"
        async with sem:
            body = await api.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "labels": {"app": app, names.LABEL_INJECT: names.LABEL_INJECT_ENABLED},
                        # What the webhook stamps at admission.
                        "annotations": {
                            contract.ANNOTATION_COHORT_KEY: f"{namespace}/{name}",
                            contract.ANNOTATION_ADMITTED_AT: str(int(time.time() * 1000)),
                        },
                    },
                    "spec": {"nodeName": f"kwok-node-{node}", **pod_spec()},
                },
            )
            token = await bound_token(api, namespace, body, seconds=3 * 3600)
        return Agent(namespace=namespace, pod=name, token=token)

    jobs = []
    for namespace, apps in layout.apps().items():
        await api.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        )
        await api.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
        )
        for app in apps:
            for k in range(layout.per_bundle):
                jobs.append(one(namespace, app, k, index % nodes))
                index += 1
    sim.agents.extend(await asyncio.gather(*jobs))
    return started, _now()


def bundle_manifest(registry: Registry, key: KeyPair, app: str, tag: str) -> dict[str, Any]:
    return logicbundle(
        app,
        ref=f"{registry.host}/bench/fleet:{tag}",
        key=key,
        selector={"app": app},
        rollout=FAST,
        interval="1h",  # a spec change is resolved at once; no tag polling meanwhile
    )


async def apply_all(
    cluster: Cluster, registry: Registry, key: KeyPair, layout: Layout, tag: str
) -> float:
    """``kubectl apply`` of every LogicBundle with ``tag``, one call per namespace, at once."""

    async def one(namespace: str, apps: list[str]) -> None:
        doc = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [bundle_manifest(registry, key, app, tag) for app in apps],
        }
        await kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=json.dumps(doc))

    started = _now()
    await asyncio.gather(*(one(ns, apps) for ns, apps in layout.apps().items()))
    return started


async def all_ready(api: Api, layout: Layout, digest: str, *, within: float) -> float:
    """When every LogicBundle was ``Ready`` on ``digest`` (one list per namespace a round)."""
    deadline = _now() + within
    pending = {ns: set(apps) for ns, apps in layout.apps().items()}
    while pending:
        for ns in list(pending):
            items = (await api.call("GET", LB_PATH.format(namespace=ns)))["items"]
            for obj in items:
                if ready_on(digest)(dict(obj.get("status") or {})):
                    pending[ns].discard(obj["metadata"]["name"])
            if not pending[ns]:
                del pending[ns]
        if not pending:
            break
        if _now() > deadline:
            left = sum(len(v) for v in pending.values())
            raise TimeoutError(f"{left} LogicBundles not Ready on {digest[:19]}")
        await asyncio.sleep(0.5)
    return _now()


# -- one replica count ----------------------------------------------------------------------


@dataclass
class Stack:
    operator: Operator
    replicas: list[Replica]

    def stop(self) -> None:
        for replica in self.replicas:
            replica.process.stop()
        self.operator.stop()

    def memory(self) -> dict[str, float]:
        out = {"operator": proc_memory(self.operator.process.pid)[0]}
        for i, replica in enumerate(self.replicas):
            out[f"replica-{i}"] = proc_memory(replica.process.pid)[0]
        return out

    def cpu(self) -> dict[str, float]:
        out = {"operator": proc_cpu_seconds(self.operator.process.pid)}
        for i, replica in enumerate(self.replicas):
            out[f"replica-{i}"] = proc_cpu_seconds(replica.process.pid)
        return out


def start_stack(cluster: Cluster, work: Path, count: int, tokens: dict[str, Path]) -> Stack:
    operator, replicas = start_leader_and_replicas(cluster, work, count, tokens, tag=f"-{count}")
    return Stack(operator, replicas)


async def long_polls_open(session: aiohttp.ClientSession, replica: Replica) -> float:
    async with session.get(f"{replica.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("logicbundle_distributor_long_polls_open "):
            return float(line.split()[-1])
    return 0.0


async def measure(
    *,
    count: int,
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    api: Api,
    sim: Simulator,
    layout: Layout,
    work: Path,
    tokens: dict[str, Path],
    digests: dict[str, str],
    current: str,
    next_tags: list[str],
    rounds: int,
    rows: list[tuple[str, str, str]],
    install: bool,
) -> str:
    """Everything for ``count`` replicas; returns the tag every pod runs at the end."""
    label = f"{count} replica{'s' if count > 1 else ''}"
    print(f"\n== {label} ==", flush=True)
    apps = layout.apps()
    agents = len(sim.agents)
    stack = start_stack(cluster, work, count, tokens)
    try:
        # The replicas list bundles and pods, then serve.  On the first count every
        # LogicBundle is installed now (the agents are connected, with nothing to run);
        # on the others the operator, restarted, lists them and publishes nothing new.
        before = stack.memory()
        sim.forget_all()
        if install:
            sim.start([r.url for r in stack.replicas])
            await wait_async(
                lambda: _polls_settled(stack, sim, agents),
                what=f"{agents} long-polls open",
                within=600,
            )
        cpu0, self0 = stack.cpu(), _self_cpu()
        if install:
            started = await apply_all(cluster, registry, key, layout, current)
        else:
            started = _now()
            sim.start([r.url for r in stack.replicas])
        waits = [
            sim.wait_reported(ns, app, digests[current], layout.per_bundle, within=900)
            for ns, names_ in apps.items()
            for app in names_
        ]
        connected = max(await asyncio.gather(*waits)) - started
        what = (
            f"install of all {layout.bundles} at once"
            if install
            else f"{agents} agents reconnect to fresh replicas"
        )
        # every long-poll re-armed after the reports
        await wait_async(
            lambda: _polls_settled(stack, sim, agents),
            what=f"{agents} long-polls open",
            within=300,
        )
        held = stack.memory()
        cpu1, self1 = stack.cpu(), _self_cpu()
        print(
            f"  {what}: every pod reported in {connected:.1f} s; "
            f"simulator CPU {self1 - self0:.1f} s; "
            + ", ".join(f"{k} CPU {cpu1[k] - cpu0[k]:.1f} s" for k in cpu1),
            flush=True,
        )
        per_replica = agents / count
        for i in range(count):
            name = f"replica-{i}"
            print(
                f"  {name}: RSS {before[name]:.0f} MiB before, {held[name]:.0f} MiB with "
                f"{per_replica:.0f} long-polls",
                flush=True,
            )
        replica_growth = [
            (held[f"replica-{i}"] - before[f"replica-{i}"]) / (per_replica / 1000)
            for i in range(count)
        ]
        rows.append(
            (
                f"[{label}] {what} -> every pod reported",
                f"{connected:.1f} s",
                f"simulator CPU {self1 - self0:.1f} s",
            )
        )
        base = statistics.median([before[f"replica-{i}"] for i in range(count)])
        rows.append(
            (
                f"[{label}] replica RSS with {per_replica:.0f} long-polls each",
                ", ".join(f"{held[f'replica-{i}']:.0f}" for i in range(count)) + " MiB",
                f"{statistics.median(replica_growth):.1f} MiB per 1,000 long-polls "
                f"(median over replicas; {base:.0f} MiB before)",
            )
        )

        # one bundle at a time, the others idle: once the operator is (a restarted operator
        # checks every LogicBundle's source again first)
        quiet = await settled(stack)
        print(f"  operator idle {quiet:.0f} s after the (re)connect", flush=True)
        ns0 = next(iter(apps))
        app0 = apps[ns0][0]
        per_pod: list[float] = []
        whole: list[float] = []
        cpu0, self0 = stack.cpu(), _self_cpu()
        for i in range(rounds):
            tag = next_tags[i % len(next_tags)] if i % 2 == 0 else current
            digest = digests[tag]
            sim.forget(ns0, app0)
            manifest = bundle_manifest(registry, key, app0, tag)
            started = _now()
            await kubectl(cluster, "apply", "-n", ns0, "-f", "-", input=json.dumps(manifest))
            done = await sim.wait_reported(ns0, app0, digest, layout.per_bundle, within=120)
            per_pod.extend(t - started for t in sim.reported[(ns0, app0, digest)].values())
            whole.append(done - started)
        # leave it where the others are
        if rounds % 2 == 1:
            sim.forget(ns0, app0)
            manifest = bundle_manifest(registry, key, app0, current)
            await kubectl(cluster, "apply", "-n", ns0, "-f", "-", input=json.dumps(manifest))
            await sim.wait_reported(ns0, app0, digests[current], layout.per_bundle, within=120)
        cpu1, self1 = stack.cpu(), _self_cpu()
        print(f"  one bundle: each pod {quantiles(per_pod)}; all its pods {quantiles(whole)}")
        rows.append(
            (
                f"[{label}] one of {layout.bundles} rolled out: apply -> each of its "
                f"{layout.per_bundle} pods reported",
                quantiles(per_pod),
                f"all {layout.per_bundle}: {quantiles(whole)}",
            )
        )

        # all at once
        tag = next_tags[0]
        digest = digests[tag]
        sim.forget_all()
        cpu0, self0 = stack.cpu(), _self_cpu()
        started = await apply_all(cluster, registry, key, layout, tag)
        waits = [
            sim.wait_reported(ns, app, digest, layout.per_bundle, within=1800)
            for ns, names_ in apps.items()
            for app in names_
        ]
        done = max(await asyncio.gather(*waits))
        ready = await all_ready(api, layout, digest, within=1800)
        cpu1, self1 = stack.cpu(), _self_cpu()
        after = stack.memory()
        cpu_text = ", ".join(f"{k} {cpu1[k] - cpu0[k]:.1f}" for k in cpu1)
        print(
            f"  all {layout.bundles} at once: every pod reported {done - started:.1f} s, every "
            f"bundle Ready {ready - started:.1f} s; CPU s: simulator {self1 - self0:.1f}, "
            f"{cpu_text}",
            flush=True,
        )
        rows.append(
            (
                f"[{label}] all {layout.bundles} rolled out at once -> all {agents} pods "
                "reported / all Ready",
                f"{done - started:.1f} s / {ready - started:.1f} s",
                f"CPU s: simulator {self1 - self0:.1f}, {cpu_text}",
            )
        )
        await asyncio.sleep(3)  # let the last status writes land before reading memory
        after = stack.memory()
        rows.append(
            (
                f"[{label}] operator RSS, {layout.bundles} LogicBundles, {agents} pods",
                f"{after['operator']:.0f} MiB",
                f"{proc_memory(stack.operator.process.pid)[1]:.0f} MiB peak",
            )
        )
        await sim.stop()
        return tag
    finally:
        await sim.stop()
        stack.stop()


async def settled(stack: Stack, *, within: float = 600) -> float:
    """Seconds until the operator used under 10 % of a core over 3 s (a deadline, no sleep
    standing in for it)."""
    started = _now()
    pid = stack.operator.process.pid
    while _now() - started < within:
        before = proc_cpu_seconds(pid)
        await asyncio.sleep(3)
        if proc_cpu_seconds(pid) - before < 0.3:
            return _now() - started
    raise TimeoutError(f"the operator was still busy after {within:.0f} s")


def _polls_settled(stack: Stack, sim: Simulator, agents: int) -> Any:
    async def check() -> bool:
        total = 0.0
        for replica in stack.replicas:
            total += await long_polls_open(sim.posts, replica)
        return total >= agents

    return check()


async def wait_async(make: Any, *, what: str, within: float) -> None:
    deadline = _now() + within
    while not await make():
        if _now() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


# -- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: Path) -> list[tuple[str, str, str]]:
    layout = Layout(args.bundles, args.pods_per_bundle, args.namespaces)
    counts = [int(x) for x in args.replicas.split(",") if x]
    pods = layout.bundles * layout.per_bundle
    nodes = max(2, math.ceil((pods + 20) / PODS_PER_NODE) + 1)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"{layout.bundles} LogicBundles x {layout.per_bundle} pods = {pods} pods in "
        f"{layout.namespaces} namespaces; {nodes} kwok nodes; replicas {counts}; "
        f"open files {hard}",
        flush=True,
    )
    rows: list[tuple[str, str, str]] = []
    with (
        Cluster.start(work / "cluster", nodes=nodes) as cluster,
        Registry.start(work / "registry") as registry,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.wait_established("logicbundles.logicbundle.io")
        tokens = replica_accounts(cluster, work, max(counts))
        key = KeyPair.generate()
        tags = ["s0", "s1", "s2"]
        digests = {
            tag: push_bundle(
                registry.host,
                BUNDLE_DIR,
                repository="bench/fleet",
                tag=tag,
                version="1.0.0",
                key=key,
                labels={"bench-round": tag},
            )
            for tag in tags
        }
        api = Api(cluster)
        sim = Simulator()
        try:
            cpu0 = _self_cpu()
            started, done = await create_pods(api, layout, nodes, sim)
            print(
                f"{pods} pods and bound tokens in {done - started:.0f} s "
                f"(simulator CPU {_self_cpu() - cpu0:.0f} s)",
                flush=True,
            )
            # install every LogicBundle on s0 with the first stack up
            current = "s0"
            for n, count in enumerate(counts):
                current = await measure(
                    count=count,
                    cluster=cluster,
                    registry=registry,
                    key=key,
                    api=api,
                    sim=sim,
                    layout=layout,
                    work=work,
                    tokens=tokens,
                    digests=digests,
                    current=current,
                    next_tags=[t for t in tags if t != current],
                    rounds=args.rounds,
                    rows=rows,
                    install=n == 0,
                )
                one, five, _ = os.getloadavg()
                print(f"  load average {one:.2f} (1 min), {five:.2f} (5 min)", flush=True)
        finally:
            await sim.close()
            await api.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_fleet", description=__doc__)
    parser.add_argument("--bundles", type=int, default=1000, help="LogicBundles")
    parser.add_argument("--pods-per-bundle", type=int, default=10, help="pods of each")
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces they spread over")
    parser.add_argument("--replicas", default="1,2,4", help="distributor replica counts")
    parser.add_argument("--rounds", type=int, default=10, help="single-bundle rollouts")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    started = _now()
    rows = asyncio.run(run(args, work))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'what':<{width}}  figure")
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure}" + (f"   [{note}]" if note else ""))
    print(f"whole run {_now() - started:.0f} s; run directory {work}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
