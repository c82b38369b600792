"""Benchmark rollouts: apply -> every pod serving, rollback, and the operator at scale.

``python -m e2e.bench.bench_rollout [--pods 20,200] [--bundles 100 --fleet 2000]`` starts the
real local control plane (kwok nodes), the harness registry and ``logicbundle operator``
(a real process with its embedded distributor), and prints medians (p99 where there are
enough samples) of:

- ``kubectl apply`` of a LogicBundle with a new ref -> every pod's agent has REPORTED the
  new digest active (and, separately, -> ``Ready=True`` for that digest), for a Deployment
  of N pods, with analysis off and a single ``all`` stage without pause; against a
  rolling restart of the same Deployment on the same control plane (``kubectl rollout
  restart`` + ``kubectl rollout status``), the lower bound of a restart-based reloader
  (kwok pods start instantly);
- a failed verdict -> every pod reported back on stable, for the builtin analysis (the
  agents report errors for the candidate) and for an agent's own health failure;
- operator RSS and ``logicbundle_reconcile_seconds`` with many LogicBundles and pods.

The agents are SIMULATED, all in this process (asyncio + aiohttp): per pod, a pod-bound
token from the TokenRequest API, a long-poll on ``GET /v1/targets`` and, on each new
target, an immediate ``POST /v1/reports`` saying it is active and healthy. That is a real
agent minus the swap itself, which ``python -m e2e.bench.bench_agent`` measures.

Every rollout applies a spec change (a new ref naming a digest pushed for that round):
the operator resolves a spec change at once, whereas a moved tag is only seen at the
next ``source.interval``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from e2e.harness.cluster import Cluster
from e2e.harness.operator import EXAMPLES, LB_PATH, KeyPair, Operator, logicbundle, push_bundle
from e2e.harness.proc import free_port, wait_for
from e2e.harness.replicas import (
    OPERATOR_ACCOUNT,
    READER_ACCOUNT,
    REPLICA_ACCOUNT,
    Replica,
    stand_in,
)
from e2e.harness.services import Registry
from logicbundle.api import names

SA = "agent"
BUNDLE_DIR = EXAMPLES / "bundles" / "pricing-v1"
FAST: dict[str, Any] = {"skipAnalysis": True, "stages": [{"name": "all", "all": True}]}
"""No analysis, one stage without pause: the fastest possible rollout."""
ANALYSED: dict[str, Any] = {
    "analysis": {"interval": "1s", "minSamples": 20},
    "stages": [{"name": "all", "all": True, "pause": "10m"}],
}
"""Builtin analysis every second, every pod on the candidate, held: for the rollback runs."""
POLL = 0.02
"""Seconds between status polls while waiting for a condition."""


def _now() -> float:
    return time.monotonic()


# -- the API server, asynchronously ---------------------------------------------------------


class Api:
    """Admin requests to the harness API server (the same credentials as ``Cluster.request``)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=64),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        async with self.session.request(
            method, self.cluster.server + path, data=data, headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {text[:300]}")
            return json.loads(text) if text else None


async def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(cluster.kubectl_path),
        f"--kubeconfig={cluster.kubeconfig}",
        *args,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(input.encode() if input is not None else None)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


def deployment(name: str, replicas: int) -> dict[str, Any]:
    """Opted-in pods carrying the agent sidecar, as the webhook would have injected it."""
    labels = {"app": name, names.LABEL_INJECT: names.LABEL_INJECT_ENABLED}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec(),
            },
        },
    }


def pod_spec() -> dict[str, Any]:
    """An opted-in pod's spec: the agent sidecar as the webhook injects it, and the app."""
    return {
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
    }


async def bound_token(api: Api, namespace: str, pod: Mapping[str, Any], *, seconds: int) -> str:
    """A token of the pod's ServiceAccount bound to it, for the distributor's audience."""
    body = await api.call(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{SA}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [names.DISTRIBUTOR_AUDIENCE],
                "expirationSeconds": seconds,
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


async def make_namespace(api: Api, namespace: str) -> None:
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


async def deployment_settled(api: Api, namespace: str, name: str) -> bool:
    dep = await api.call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    want = dep["spec"]["replicas"]
    st = dep.get("status") or {}
    return bool(
        st.get("observedGeneration") == dep["metadata"]["generation"]
        and st.get("updatedReplicas") == want
        and st.get("readyReplicas") == want
        and st.get("replicas") == want
    )


async def wait_until(
    check: Callable[[], Any], *, what: str, within: float, every: float = POLL
) -> float:
    """Await ``check()`` (a coroutine function) until truthy; the monotonic time it was."""
    deadline = _now() + within
    while True:
        if await check():
            return _now()
        if _now() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def pods_of(api: Api, namespace: str, app: str) -> list[dict[str, Any]]:
    items = (
        await api.call("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{app}")
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


# -- the simulated agents -------------------------------------------------------------------


@dataclass
class SimAgent:
    namespace: str
    pod: str
    uid: str
    token: str
    distributor: str = ""
    """The distributor (replica) this agent talks to."""
    active: dict[str, str] = field(default_factory=dict)
    errors_for: dict[str, str] = field(default_factory=dict)
    """bundle -> digest whose SDK counters say 50% of calls fail."""
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """bundle -> (candidate that failed the health check, digest flipped back to)."""
    swaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    """bundle -> the ``lastSwap`` reported, when the target carried a ``traceparent``
    (the operator traces rollouts): the swap as the real agent reports it, its step
    timings zero (this simulated agent does not swap)."""


class Fleet:
    """Every simulated agent in one event loop, and who reported what when."""

    def __init__(self, distributor: str | Sequence[str]) -> None:
        self.distributors = [distributor] if isinstance(distributor, str) else list(distributor)
        """Agent i long-polls and reports to distributor i mod N (the replicas, or the
        operator's own)."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=45),
        )
        self.agents: list[SimAgent] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.reported: dict[tuple[str, str, str], dict[tuple[str, str], float]] = {}
        """(namespace, bundle, digest) -> {(namespace, pod): first report of it active}."""
        self.first_target: dict[tuple[str, str, str], float] = {}
        """(namespace, bundle, digest) -> when the first agent learned it as its target."""
        self.told: dict[tuple[str, str, str], dict[tuple[str, str], float]] = {}
        """(namespace, bundle, digest) -> {pod: when it learned it} (then a real agent swaps)."""
        self._changed = asyncio.Event()
        self.report_errors = 0

    async def add(self, api: Api, namespace: str, pods: Sequence[Mapping[str, Any]]) -> None:
        sem = asyncio.Semaphore(32)

        async def one(pod: Mapping[str, Any]) -> SimAgent:
            async with sem:
                token = await bound_token(api, namespace, pod, seconds=3600)
            return SimAgent(
                namespace=namespace,
                pod=pod["metadata"]["name"],
                uid=pod["metadata"]["uid"],
                token=token,
            )

        agents = await asyncio.gather(*(one(p) for p in pods))
        for agent in agents:
            agent.distributor = self.distributors[len(self.agents) % len(self.distributors)]
            self.agents.append(agent)
            self.tasks.append(asyncio.create_task(self._run(agent)))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.agents.clear()

    async def close(self) -> None:
        await self.stop()
        await self.session.close()

    def _headers(self, agent: SimAgent) -> dict[str, str]:
        return {"Authorization": f"Bearer {agent.token}"}

    async def _run(self, agent: SimAgent) -> None:
        version: str | None = None
        while True:
            url = f"{agent.distributor}/v1/targets?wait=30" + (
                f"&version={version}" if version else ""
            )
            try:
                async with self.session.get(url, headers=self._headers(agent)) as resp:
                    if resp.status == 304:
                        continue
                    if resp.status != 200:
                        await asyncio.sleep(0.2)
                        continue
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            version = body["version"]
            if not body["known"]:
                continue
            changed = False
            for bundle, target in body["targets"].items():
                digest = target["digest"]
                self.first_target.setdefault((agent.namespace, bundle, digest), _now())
                told = self.told.setdefault((agent.namespace, bundle, digest), {})
                told.setdefault((agent.namespace, agent.pod), _now())
                if agent.active.get(bundle) != digest:
                    if target.get("traceparent"):
                        agent.swaps[bundle] = _sim_swap(
                            agent.active.get(bundle), digest, target["traceparent"]
                        )
                    agent.active[bundle] = digest  # the swap a real agent does goes here
                    agent.failed.pop(bundle, None)
                    changed = True
            if changed:
                await self.report(agent)

    def _report_body(self, agent: SimAgent) -> dict[str, Any]:
        bundles: dict[str, Any] = {}
        for bundle, digest in agent.active.items():
            entry: dict[str, Any] = {"active": digest, "target": digest, "healthy": True}
            swap = agent.swaps.get(bundle)
            if swap is not None and swap["to"] == digest:
                entry["lastSwap"] = swap
            failing = agent.errors_for.get(bundle)
            if failing == digest:
                buckets = [0] * 21 + [100]  # every call ~1-2 ms
                entry["versions"] = {
                    digest: {"calls": 100, "errors": 50, "latencyBuckets": buckets}
                }
            if bundle in agent.failed:
                candidate, _ = agent.failed[bundle]
                entry["lastError"] = {
                    "reason": "HealthCheckFailed",
                    "message": "simulated: the application refused the candidate",
                    "digest": candidate,
                    "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                }
                entry["target"] = candidate
            bundles[bundle] = entry
        return {"bundles": bundles, "agent": {"version": "bench-sim"}}

    async def report(self, agent: SimAgent) -> None:
        body = self._report_body(agent)
        for _ in range(5):
            try:
                async with self.session.post(
                    f"{agent.distributor}/v1/reports", json=body, headers=self._headers(agent)
                ) as resp:
                    if resp.status == 204:
                        break
                    self.report_errors += 1
            except (aiohttp.ClientError, TimeoutError):
                self.report_errors += 1
            await asyncio.sleep(0.1)
        at = _now()
        for bundle, digest in agent.active.items():
            seen = self.reported.setdefault((agent.namespace, bundle, digest), {})
            seen.setdefault((agent.namespace, agent.pod), at)
        self._changed.set()

    def forget_reports(self, namespace: str, bundle: str) -> None:
        """Start a fresh measurement: earlier reports of any digest no longer count."""
        for key in [k for k in self.reported if k[:2] == (namespace, bundle)]:
            del self.reported[key]
        for key in [k for k in self.first_target if k[:2] == (namespace, bundle)]:
            del self.first_target[key]
        for key in [k for k in self.told if k[:2] == (namespace, bundle)]:
            del self.told[key]

    def all_told(self, namespace: str, bundle: str, digest: str) -> float:
        return max(self.told.get((namespace, bundle, digest), {0: 0.0}).values())

    def all_reported(self, namespace: str, bundle: str, digest: str, pods: int) -> float | None:
        seen = self.reported.get((namespace, bundle, digest), {})
        return max(seen.values()) if len(seen) >= pods else None

    async def wait_reported(
        self, namespace: str, bundle: str, digest: str, pods: int, *, within: float
    ) -> float:
        deadline = _now() + within
        while (at := self.all_reported(namespace, bundle, digest, pods)) is None:
            self._changed.clear()
            remaining = deadline - _now()
            if remaining <= 0:
                got = len(self.reported.get((namespace, bundle, digest), {}))
                raise TimeoutError(f"{namespace}/{bundle}: {got}/{pods} pods reported {digest}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
        return at

    async def inject_errors(self, namespace: str, bundle: str, digest: str) -> None:
        """Every pod running ``digest`` reports SDK counters with 50% errors for it."""
        agents = [a for a in self.agents if a.namespace == namespace]
        for agent in agents:
            agent.errors_for[bundle] = digest
        await asyncio.gather(*(self.report(a) for a in agents if a.active.get(bundle) == digest))

    async def fail_health(self, namespace: str, bundle: str, candidate: str, stable: str) -> None:
        """One pod's agent flips back to ``stable`` and reports the candidate failed."""
        agent = next(a for a in self.agents if a.namespace == namespace)
        agent.failed[bundle] = (candidate, stable)
        agent.active[bundle] = stable
        await self.report(agent)

    def clear_faults(self) -> None:
        for agent in self.agents:
            agent.errors_for.clear()
            agent.failed.clear()


# -- the operator ---------------------------------------------------------------------------


def _sim_swap(previous: str | None, digest: str, traceparent: str) -> dict[str, Any]:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    steps = ("fetchMs", "unpackMs", "swapMs", "notifyMs", "healthMs", "totalMs")
    return {
        "from": previous,
        "to": digest,
        "outcome": "activated",
        "at": at,
        **dict.fromkeys(steps, 0.0),
        "traceparent": traceparent,
    }


def proc_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MiB."""
    values = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in values:
            values[parts[0]] = int(parts[1]) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count)
    total: float
    count: float

    def minus(self, other: Histogram) -> Histogram:
        return Histogram(
            buckets=tuple(
                (le, c - o) for (le, c), (_, o) in zip(self.buckets, other.buckets, strict=True)
            ),
            total=self.total - other.total,
            count=self.count - other.count,
        )

    def quantile(self, q: float) -> float:
        """Prometheus' histogram_quantile: linear within the bucket."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 0)
            lower, below = le, cumulative
        return lower


async def reconcile_histogram(session: aiohttp.ClientSession, port: int) -> Histogram:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    name = "logicbundle_reconcile_seconds"
    buckets = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            match = re.search(r'le="([^"]+)"\}\s+(\S+)', line)
            if match:
                buckets.append((float(match.group(1)), float(match.group(2))))
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
        elif line.startswith(f"{name}_count"):
            count = float(line.split()[-1])
    return Histogram(buckets=tuple(sorted(buckets)), total=total, count=count)


# -- LogicBundles -----------------------------------------------------------------------------


@dataclass
class Bench:
    cluster: Cluster
    registry: Registry
    operator: Operator
    key: KeyPair
    api: Api
    fleet: Fleet
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def manifest(
        self, name: str, *, namespace: str, tag: str, app: str, rollout: Mapping[str, Any]
    ) -> dict[str, Any]:
        return logicbundle(
            name,
            ref=f"{self.registry.host}/bench/{namespace}:{tag}",
            key=self.key,
            selector={"app": app},
            rollout=rollout,
            interval="10m",  # a spec change is resolved at once; no tag polling meanwhile
        )

    def push(self, namespace: str, tags: Iterable[str]) -> dict[str, str]:
        """A distinct signed digest per tag (the tag goes into the bundle's labels)."""
        return {
            tag: push_bundle(
                self.registry.host,
                BUNDLE_DIR,
                repository=f"bench/{namespace}",
                tag=tag,
                version="1.0.0",
                key=self.key,
                labels={"bench-round": tag},
            )
            for tag in tags
        }

    async def apply(self, namespace: str, objs: Sequence[Mapping[str, Any]]) -> float:
        """``kubectl apply`` (one call); the monotonic time just before it was started."""
        doc = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
        started = _now()
        await kubectl(self.cluster, "apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
        return started

    async def status(self, namespace: str, name: str) -> dict[str, Any]:
        obj = await self.api.call("GET", LB_PATH.format(namespace=namespace) + f"/{name}")
        return dict(obj.get("status") or {})

    async def wait_status(
        self, namespace: str, name: str, pred: Callable[[dict[str, Any]], bool], *, what: str
    ) -> float:
        last: dict[str, Any] = {}

        async def check() -> bool:
            last.clear()
            last.update(await self.status(namespace, name))
            return pred(last)

        try:
            return await wait_until(check, what=f"{namespace}/{name}: {what}", within=120)
        except TimeoutError as exc:
            brief = {k: v for k, v in last.items() if k not in ("history", "pods")}
            raise TimeoutError(f"{exc}; status: {json.dumps(brief)[:1500]}") from None


def cond(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in status.get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return {}


def ready_on(digest: str) -> Callable[[dict[str, Any]], bool]:
    def pred(status: dict[str, Any]) -> bool:
        return (
            status.get("stableDigest") == digest
            and not status.get("candidateDigest")
            and cond(status, "Ready").get("status") == "True"
        )

    return pred


def holding(candidate: str) -> Callable[[dict[str, Any]], bool]:
    def pred(status: dict[str, Any]) -> bool:
        return (
            status.get("candidateDigest") == candidate
            and cond(status, "Reconciling").get("status") == "True"
        )

    return pred


def rolled_back(status: dict[str, Any]) -> bool:
    return cond(status, "Stalled").get("status") == "True"


# -- the scenarios ------------------------------------------------------------------------------


def stats(samples_s: Sequence[float]) -> str:
    ordered = sorted(samples_s)
    text = f"median {statistics.median(ordered):.3f} s"
    if len(ordered) >= 20:
        text += f", p99 {ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]:.3f} s"
    else:
        text += f", min {ordered[0]:.3f}, max {ordered[-1]:.3f}"
    return text + f" (n={len(ordered)})"


async def scenario_pods(b: Bench, n: int, *, rounds: int, rollbacks: int, restarts: int) -> None:
    ns, app, name = f"bench-{n}", "web", "pricing"
    print(f"\n== {n} pods (namespace {ns}) ==", flush=True)
    await make_namespace(b.api, ns)
    await b.api.call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(app, n))
    t = _now()
    await wait_until(
        functools.partial(deployment_settled, b.api, ns, app),
        what=f"{n} pods ready",
        within=300,
        every=0.2,
    )
    print(f"  deployment of {n} pods ready in {_now() - t:.1f} s", flush=True)
    tags = [f"r{i}" for i in range(1 + rounds + 2 * rollbacks)]
    digests = await asyncio.to_thread(b.push, ns, tags)
    pods = await pods_of(b.api, ns, app)
    t = _now()
    await b.fleet.add(b.api, ns, pods)
    print(f"  {len(pods)} simulated agents (tokens minted) in {_now() - t:.1f} s", flush=True)

    def lb(tag: str, rollout: Mapping[str, Any]) -> dict[str, Any]:
        return b.manifest(name, namespace=ns, tag=tag, app=app, rollout=rollout)

    # install: the first digest goes to every pod directly
    started = await b.apply(ns, [lb("r0", FAST)])
    reported = await b.fleet.wait_reported(ns, name, digests["r0"], n, within=120)
    print(f"  install r0: every pod reported in {reported - started:.3f} s", flush=True)
    await b.wait_status(ns, name, ready_on(digests["r0"]), what="Ready on r0")

    # hot reloads: apply a new ref -> every agent reported it; -> Ready=True
    serving, ready, reaction, told = [], [], [], []
    for i in range(1, rounds + 1):
        tag = f"r{i}"
        digest = digests[tag]
        b.fleet.forget_reports(ns, name)
        started = await b.apply(ns, [lb(tag, FAST)])
        agents_task = asyncio.create_task(b.fleet.wait_reported(ns, name, digest, n, within=120))
        ready_at = await b.wait_status(ns, name, ready_on(digest), what=f"Ready on {tag}")
        reported = await agents_task
        serving.append(reported - started)
        ready.append(ready_at - started)
        reaction.append(b.fleet.first_target[(ns, name, digest)] - started)
        told.append(b.fleet.all_told(ns, name, digest) - started)
        print(
            f"  rollout {tag}: first agent told {reaction[-1]:.3f} s, every agent told "
            f"{told[-1]:.3f} s, every pod reported {serving[-1]:.3f} s, Ready {ready[-1]:.3f} s",
            flush=True,
        )
    b.rows.append((f"apply -> first pod told its new target, {n} pods", stats(reaction), ""))
    b.rows.append(
        (
            f"apply -> every pod told (serving it after the agent's swap), {n} pods",
            stats(told),
            "",
        )
    )
    b.rows.append((f"apply -> every pod reported it active, {n} pods", stats(serving), ""))
    b.rows.append((f"apply -> Ready=True on the new digest, {n} pods", stats(ready), ""))
    stable_tag = f"r{rounds}"

    # rollbacks: builtin analysis fails (50% errors), and an agent's health check fails
    verdict_to_stable, trigger_to_stable, health_to_stable = [], [], []
    next_tag = rounds + 1
    for _ in range(rollbacks):
        for kind in ("analysis", "health"):
            tag = f"r{next_tag}"
            next_tag += 1
            candidate, stable = digests[tag], digests[stable_tag]
            await b.apply(ns, [lb(tag, ANALYSED)])
            await b.fleet.wait_reported(ns, name, candidate, n, within=120)
            await b.wait_status(
                ns, name, holding(candidate), what="holding every pod on the candidate"
            )
            b.fleet.forget_reports(ns, name)
            triggered = _now()
            if kind == "analysis":
                await b.fleet.inject_errors(ns, name, candidate)
            else:
                await b.fleet.fail_health(ns, name, candidate, stable)
            back = await b.fleet.wait_reported(ns, name, stable, n, within=120)
            first = b.fleet.first_target.get((ns, name, stable), triggered)
            await b.wait_status(ns, name, rolled_back, what="Stalled after the rollback")
            b.fleet.clear_faults()
            if kind == "analysis":
                verdict_to_stable.append(back - first)
                trigger_to_stable.append(back - triggered)
                print(
                    f"  rollback {tag} (analysis): errors reported -> verdict (first pod told) "
                    f"{first - triggered:.3f} s, verdict -> every pod reported stable "
                    f"{back - first:.3f} s",
                    flush=True,
                )
            else:
                health_to_stable.append(back - triggered)
                print(
                    f"  rollback {tag} (health): one agent flipped back -> every pod reported "
                    f"stable {back - triggered:.3f} s",
                    flush=True,
                )
    if rollbacks:
        b.rows.append(
            (f"failed verdict -> every pod reported stable, {n} pods", stats(verdict_to_stable), "")
        )
        b.rows.append(
            (
                f"errors reported -> every pod stable (incl. waiting for the verdict), {n} pods",
                stats(trigger_to_stable),
                "",
            )
        )
        b.rows.append(
            (
                f"one agent's health check fails -> every pod stable, {n} pods",
                stats(health_to_stable),
                "",
            )
        )

    # the baseline: a rolling restart of the same Deployment, operator idle
    await b.fleet.stop()
    await kubectl(b.cluster, "delete", "lb", name, "-n", ns, "--wait=true", "--timeout=60s")
    restart = []
    for _ in range(restarts):
        started = _now()
        await kubectl(b.cluster, "rollout", "restart", f"deployment/{app}", "-n", ns)
        await kubectl(
            b.cluster, "rollout", "status", f"deployment/{app}", "-n", ns, "--timeout=600s"
        )
        # rollout status returns once the new pods are available; wait for old ones too
        await wait_until(
            functools.partial(deployment_settled, b.api, ns, app),
            what="restart settled",
            within=600,
        )
        restart.append(_now() - started)
        print(f"  rolling restart: {restart[-1]:.3f} s", flush=True)
    if restart:  # --restarts 0: the rollback figures only
        ratio = statistics.median(restart) / statistics.median(serving)
        b.rows.append(
            (
                f"BASELINE rolling restart -> every new pod Ready, {n} pods",
                stats(restart),
                f"hot reload {ratio:.1f}x faster",
            )
        )
    await b.api.call("DELETE", f"/api/v1/namespaces/{ns}")


async def scenario_scale(
    b: Bench, *, bundles: int, fleet: int, namespaces: int, rounds: int
) -> None:
    per_bundle = fleet // bundles
    per_ns = math.ceil(bundles / namespaces)
    print(
        f"\n== {bundles} LogicBundles x {per_bundle} pods = {bundles * per_bundle} pods "
        f"in {namespaces} namespace(s) ==",
        flush=True,
    )
    pid = b.operator.process.pid
    rss0, _ = proc_memory(pid)
    layout: dict[str, list[str]] = {}
    for i in range(bundles):
        layout.setdefault(f"scale-{i // per_ns}", []).append(f"b{i}")
    for ns, apps in layout.items():
        await make_namespace(b.api, ns)
        for app in apps:
            await b.api.call(
                "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(app, per_bundle)
            )
    t = _now()
    for ns, apps in layout.items():
        for app in apps:
            await wait_until(
                functools.partial(deployment_settled, b.api, ns, app),
                what=f"{ns}/{app} ready",
                within=600,
                every=0.5,
            )
    print(f"  {bundles * per_bundle} pods ready in {_now() - t:.1f} s", flush=True)
    # one repository for all: every LogicBundle rolls out the same digests
    digests = await asyncio.to_thread(b.push, "scale", [f"s{i}" for i in range(2 + rounds)])
    t = _now()
    for ns, apps in layout.items():
        for app in apps:
            await b.fleet.add(b.api, ns, await pods_of(b.api, ns, app))
    print(f"  {len(b.fleet.agents)} simulated agents in {_now() - t:.1f} s", flush=True)

    def lbs(ns: str, tag: str) -> list[dict[str, Any]]:
        out = []
        for app in layout[ns]:
            obj = logicbundle(
                app,
                ref=f"{b.registry.host}/bench/scale:{tag}",
                key=b.key,
                selector={"app": app},
                rollout=FAST,
                interval="10m",
            )
            out.append(obj)
        return out

    async def every_pod(digest: str) -> float:
        waits = [
            b.fleet.wait_reported(ns, app, digest, per_bundle, within=600)
            for ns, apps in layout.items()
            for app in apps
        ]
        return max(await asyncio.gather(*waits))

    for phase, tag in (("install", "s0"), ("rollout", "s1")):
        cpu0 = proc_cpu_seconds(pid)
        before = await reconcile_histogram(b.fleet.session, b.operator.metrics_port)
        started = _now()
        await asyncio.gather(*(b.apply(ns, lbs(ns, tag)) for ns in layout))
        done = await every_pod(digests[tag])
        for ns, apps in layout.items():
            for app in apps:
                await b.wait_status(ns, app, ready_on(digests[tag]), what=f"Ready on {tag}")
        ready = _now()
        after = await reconcile_histogram(b.fleet.session, b.operator.metrics_port)
        cpu = proc_cpu_seconds(pid) - cpu0
        rss, hwm = proc_memory(pid)
        h = after.minus(before)
        print(
            f"  {phase} of all {bundles}: every pod reported {done - started:.2f} s, all Ready "
            f"{ready - started:.2f} s; operator CPU {cpu:.1f} s; RSS {rss:.0f} MiB "
            f"(peak {hwm:.0f});"
            f" reconciles {h.count:.0f}, p50 {h.quantile(0.5) * 1000:.1f} ms, p99 "
            f"{h.quantile(0.99) * 1000:.1f} ms, mean {h.total / max(h.count, 1) * 1000:.1f} ms",
            flush=True,
        )
        b.rows.append(
            (
                f"{phase} of {bundles} LogicBundles at once -> all {bundles * per_bundle} pods "
                "reported / all Ready",
                f"{done - started:.2f} s / {ready - started:.2f} s",
                f"operator CPU {cpu:.1f} s",
            )
        )
        b.rows.append(
            (
                f"reconcile latency during the {phase} (logicbundle_reconcile_seconds)",
                f"p50 {h.quantile(0.5) * 1000:.1f} ms, p99 {h.quantile(0.99) * 1000:.1f} ms",
                f"mean {h.total / max(h.count, 1) * 1000:.1f} ms, n={h.count:.0f}",
            )
        )
    # one bundle rolled out while the other 99 (and their pods) sit there
    ns0 = next(iter(layout))
    app0 = layout[ns0][0]
    single = []
    before = await reconcile_histogram(b.fleet.session, b.operator.metrics_port)
    for i in range(rounds):
        tag = f"s{2 + i}"
        b.fleet.forget_reports(ns0, app0)
        started = _now()
        obj = logicbundle(
            app0,
            ref=f"{b.registry.host}/bench/scale:{tag}",
            key=b.key,
            selector={"app": app0},
            rollout=FAST,
            interval="10m",
        )
        await b.apply(ns0, [obj])
        done = await b.fleet.wait_reported(ns0, app0, digests[tag], per_bundle, within=120)
        single.append(done - started)
    after = await reconcile_histogram(b.fleet.session, b.operator.metrics_port)
    h = after.minus(before)
    b.rows.append(
        (
            f"one of the {bundles} rolled out: apply -> its {per_bundle} pods reported",
            stats(single),
            f"reconciles meanwhile p50 {h.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {h.quantile(0.99) * 1000:.1f} ms",
        )
    )
    await asyncio.sleep(5)
    rss, hwm = proc_memory(pid)
    b.rows.append(
        (
            f"operator RSS, {bundles} LogicBundles + {len(b.fleet.agents)} pods + long-polls",
            f"{rss:.0f} MiB (peak {hwm:.0f} MiB)",
            f"{rss0:.0f} MiB before the first of them",
        )
    )
    print(f"  one bundle of {bundles}: {stats(single)}; RSS {rss:.0f} MiB", flush=True)


# -- main -----------------------------------------------------------------------------------


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


async def run(args: argparse.Namespace, work: Path) -> list[tuple[str, str, str]]:
    sizes = [int(x) for x in args.pods.split(",") if x] if args.pods else []
    biggest = max([*sizes, args.fleet if args.bundles else 0, 1])
    nodes = max(2, math.ceil(biggest * 1.3 / 250) + 1)
    print(f"starting the control plane ({nodes} kwok nodes), registry, operator...", flush=True)
    loads = [_load()]
    with (
        Cluster.start(work / "cluster", nodes=nodes) as cluster,
        Registry.start(work / "registry") as registry,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.wait_established("logicbundles.logicbundle.io")
        key = KeyPair.generate()
        rows: list[tuple[str, str, str]] = []
        if sizes:
            replicas: list[Replica] = []
            if args.replicas:
                operator, replicas = start_replicas(cluster, work, args.replicas)
                urls = [r.url for r in replicas]
                print(f"  {len(replicas)} distributor replicas; agent i -> replica i mod N")
            else:
                operator = Operator.start(cluster, work / "operator")
                urls = [operator.distributor_url]
            api, fleet = Api(cluster), Fleet(urls)
            bench = Bench(cluster, registry, operator, key, api, fleet, rows=rows)
            try:
                for n in sizes:
                    await scenario_pods(
                        bench,
                        n,
                        rounds=args.rounds,
                        rollbacks=args.rollbacks,
                        restarts=args.restarts,
                    )
                    loads.append(_load())
            finally:
                await fleet.close()
                await api.close()
                for replica in replicas:
                    replica.process.stop()
                operator.stop()
        if args.bundles:
            # A fresh operator, so its memory is that of the scale test alone.
            operator = Operator.start(cluster, work / "operator-scale", name="operator-scale")
            wait_for(lambda: _metrics_up(operator.metrics_port), what="metrics", timeout=30)
            api, fleet = Api(cluster), Fleet(operator.distributor_url)
            bench = Bench(cluster, registry, operator, key, api, fleet, rows=rows)
            try:
                await scenario_scale(
                    bench,
                    bundles=args.bundles,
                    fleet=args.fleet,
                    namespaces=args.namespaces,
                    rounds=args.rounds,
                )
                loads.append(_load())
            finally:
                await fleet.close()
                await api.close()
                operator.stop()
    print("\nmachine: " + "; ".join(loads))
    return rows


SYSTEM = "lb-system"


def replica_accounts(cluster: Cluster, work: Path, count: int) -> dict[str, Path]:
    """The operator's and ``count`` replicas' pod-bound tokens (files under ``work``), their
    accounts in ``SYSTEM`` as the chart makes them, with the status reader's."""
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}},
    )
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{SYSTEM}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": READER_ACCOUNT}},
    )
    tokens = {"operator": work / "operator.token"}
    stand_in(cluster, SYSTEM, "operator-0", OPERATOR_ACCOUNT, tokens["operator"])
    for i in range(count):
        tokens[f"replica-{i}"] = work / f"replica-{i}.token"
        stand_in(cluster, SYSTEM, f"distributor-{i}", REPLICA_ACCOUNT, tokens[f"replica-{i}"])
    return tokens


def start_leader_and_replicas(
    cluster: Cluster, work: Path, count: int, tokens: dict[str, Path], *, tag: str = ""
) -> tuple[Operator, list[Replica]]:
    """The operator (the leader, reading the replicas' sums) and ``count`` ``logicbundle
    distributor`` processes, each with its token from :func:`replica_accounts`; ``tag``
    tells apart the run directories and names of successive starts."""
    ports = [free_port() for _ in range(count)]
    operator = Operator.start(
        cluster,
        work / f"operator{tag}",
        name=f"operator{tag}",
        extra=(
            "--operator-namespace",
            SYSTEM,
            *[f"--distributor-replica=http://127.0.0.1:{port}" for port in ports],
            f"--distributor-service-account={SYSTEM}:{REPLICA_ACCOUNT}",
            f"--replica-token-file={tokens['operator']}",
        ),
    )
    replicas = [
        Replica.start(
            cluster,
            work / f"replicas{tag}",
            name=f"replica-{i}{tag}",
            namespace=None,
            upstream=operator.distributor_url,
            token_file=tokens[f"replica-{i}"],
            operator_namespace=SYSTEM,
            port=ports[i],
        )
        for i in range(count)
    ]
    return operator, replicas


def start_replicas(cluster: Cluster, work: Path, count: int) -> tuple[Operator, list[Replica]]:
    """:func:`start_leader_and_replicas` with fresh accounts (as bench_fleet runs them)."""
    return start_leader_and_replicas(cluster, work, count, replica_accounts(cluster, work, count))


def _metrics_up(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "logicbundle.io_logicbundles.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_rollout", description=__doc__)
    parser.add_argument("--pods", default="20,200", help="Deployment sizes, comma separated")
    parser.add_argument("--rounds", type=int, default=5, help="rollouts measured per size")
    parser.add_argument("--rollbacks", type=int, default=3, help="rollbacks per size and kind")
    parser.add_argument("--restarts", type=int, default=3, help="rolling restarts per size")
    parser.add_argument("--bundles", type=int, default=100, help="LogicBundles (0: skip)")
    parser.add_argument("--fleet", type=int, default=2000, help="pods over all LogicBundles")
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces they spread over")
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="logicbundle distributor processes the agents spread over, for --pods "
        "(0: the operator's embedded distributor serves them)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    started = _now()
    rows = asyncio.run(run(args, work))
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'what':<{width}}  figure")
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure}" + (f"   [{note}]" if note else ""))
    print(
        "\nAgents are simulated (no swap): add the real agent's swap, "
        "`python -m e2e.bench.bench_agent` (a few ms per pod, in parallel across pods)."
    )
    print(f"whole run {_now() - started:.0f} s; run directory {work}")
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
