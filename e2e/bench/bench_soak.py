"""Soak: does the operator grow? Issue 11's soak, on the kwok fleet.

``python -m e2e.bench.bench_soak [--rollouts 500 --pods 20] [--rounds 50 --bundles 100
--per-bundle 5]`` starts the real local control plane (kwok nodes), the harness registry
and one ``logicbundle operator`` process (with its embedded distributor), then:

1. rolls ONE LogicBundle out ``--rollouts`` times in a row, each time to a new signed
   digest (a new ref per rollout), to ``--pods`` pods with simulated agents, and waits
   for every pod's report and ``Ready=True`` each time;
2. then rolls ``--bundles`` LogicBundles out all at once, ``--rounds`` times, each
   round to a new digest.

It samples the operator's RSS, open file descriptors and threads along the way and
prints them after warm-up (the first 40 % of each phase, ``--warmup``) and at the end, the growth
between the two, the median growth per 100 rollouts past warm-up, and the
reconcile latency (``logicbundle_reconcile_seconds``, p50 and p99) of each phase.
Growth after warm-up is a bug: the command exits 1 when RSS past warm-up grows by more
than ``--max-growth-mib`` or the open file descriptors by more than 10.

Agents are the simulated ones of ``bench_rollout`` (a long-poll and a report per pod).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.bench.bench_rollout import (
    CRD_FILE,
    FAST,
    Api,
    Fleet,
    Histogram,
    _metrics_up,
    deployment,
    deployment_settled,
    make_namespace,
    pods_of,
    proc_memory,
    ready_on,
    reconcile_histogram,
    wait_until,
)
from e2e.bench.bench_rollout import Bench as _Bench
from e2e.harness.cluster import Cluster
from e2e.harness.operator import KeyPair, Operator, logicbundle
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry

WARMUP = 0.4
"""The share of each phase counted as warm-up.  With 100 bundles at once, RSS and the
open connections settle only after about 20 of the 50 rounds (the first soak runs)."""


@dataclass(frozen=True)
class Sample:
    done: int
    """Rollouts (phase 1) or rounds (phase 2) finished when the sample was taken."""
    rss_mib: float
    fds: int
    threads: int


def sample(pid: int, done: int) -> Sample:
    rss, _ = proc_memory(pid)
    fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    threads = sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())
    return Sample(done=done, rss_mib=rss, fds=fds, threads=threads)


def quantiles(h: Histogram) -> str:
    return (
        f"p50 {h.quantile(0.5) * 1000:.1f} ms, p99 {h.quantile(0.99) * 1000:.1f} ms "
        f"(n={h.count:.0f})"
    )


@dataclass
class Phase:
    name: str
    unit: str
    samples: list[Sample]
    warmup: int
    reconcile: Histogram
    seconds: float

    def after_warmup(self) -> Sample:
        return next(s for s in self.samples if s.done >= self.warmup)

    def growth(self) -> tuple[float, int]:
        first, last = self.after_warmup(), self.samples[-1]
        return last.rss_mib - first.rss_mib, last.fds - first.fds

    def rows(self) -> list[tuple[str, str, str]]:
        first, last = self.after_warmup(), self.samples[-1]
        rss, fds = self.growth()
        per = last.done - first.done
        return [
            (
                f"{self.name}: operator RSS after warm-up ({first.done} {self.unit}) / at the end "
                f"({last.done})",
                f"{first.rss_mib:.0f} / {last.rss_mib:.0f} MiB",
                f"growth {rss:+.1f} MiB over {per} {self.unit}",
            ),
            (
                f"{self.name}: open file descriptors / threads, after warm-up / at the end",
                f"{first.fds} / {last.fds} fds, {first.threads} / {last.threads} threads",
                f"growth {fds:+d} fds",
            ),
            (
                f"{self.name}: reconcile latency (logicbundle_reconcile_seconds)",
                quantiles(self.reconcile),
                f"phase took {self.seconds:.0f} s",
            ),
        ]


class Soak(_Bench):
    async def one_bundle(
        self, *, rollouts: int, pods: int, every: int, warmup: float = WARMUP
    ) -> Phase:
        ns, app, name = "soak-one", "web", "rules"
        print(f"\n== {rollouts} rollouts of one LogicBundle, {pods} pods ==", flush=True)
        await make_namespace(self.api, ns)
        await self.api.call(
            "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(app, pods)
        )
        await wait_until(
            functools.partial(deployment_settled, self.api, ns, app),
            what=f"{pods} pods ready",
            within=300,
        )
        t = time.monotonic()
        tags = [f"r{i}" for i in range(rollouts + 1)]
        digests = await asyncio.to_thread(self.push, ns, tags)
        print(f"  {len(tags)} signed digests pushed in {time.monotonic() - t:.1f} s", flush=True)
        await self.fleet.add(self.api, ns, await pods_of(self.api, ns, app))
        pid = self.operator.process.pid
        started = time.monotonic()
        before = await reconcile_histogram(self.fleet.session, self.operator.metrics_port)
        samples: list[Sample] = []
        for i, tag in enumerate(tags):
            self.fleet.forget_reports(ns, name)
            await self.apply(
                ns, [self.manifest(name, namespace=ns, tag=tag, app=app, rollout=FAST)]
            )
            await self.fleet.wait_reported(ns, name, digests[tag], pods, within=120)
            await self.wait_status(ns, name, ready_on(digests[tag]), what=f"Ready on {tag}")
            if i % every == 0 or i == rollouts:
                samples.append(sample(pid, i))
                s = samples[-1]
                print(
                    f"  {i:4d} rollouts: RSS {s.rss_mib:.1f} MiB, {s.fds} fds, "
                    f"{s.threads} threads ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        after = await reconcile_histogram(self.fleet.session, self.operator.metrics_port)
        await self.fleet.stop()
        return Phase(
            name=f"{rollouts} rollouts of one bundle ({pods} pods)",
            unit="rollouts",
            samples=samples,
            warmup=max(every, int(rollouts * warmup)),
            reconcile=after.minus(before),
            seconds=time.monotonic() - started,
        )

    async def many_bundles(
        self,
        *,
        rounds: int,
        bundles: int,
        per_bundle: int,
        namespaces: int,
        every: int,
        warmup: float = WARMUP,
    ) -> Phase:
        print(
            f"\n== {rounds} rounds of {bundles} LogicBundles at once, {per_bundle} pods each ==",
            flush=True,
        )
        per_ns = math.ceil(bundles / namespaces)
        layout: dict[str, list[str]] = {}
        for i in range(bundles):
            layout.setdefault(f"soak-{i // per_ns}", []).append(f"b{i}")
        for ns, apps in layout.items():
            await make_namespace(self.api, ns)
            for app in apps:
                await self.api.call(
                    "POST",
                    f"/apis/apps/v1/namespaces/{ns}/deployments",
                    deployment(app, per_bundle),
                )
        for ns, apps in layout.items():
            for app in apps:
                await wait_until(
                    functools.partial(deployment_settled, self.api, ns, app),
                    what=f"{ns}/{app} ready",
                    within=600,
                    every=0.5,
                )
        tags = [f"s{i}" for i in range(rounds + 1)]
        digests = await asyncio.to_thread(self.push, "soak-many", tags)
        for ns, apps in layout.items():
            for app in apps:
                await self.fleet.add(self.api, ns, await pods_of(self.api, ns, app))
        pid = self.operator.process.pid

        def manifests(ns: str, tag: str) -> list[dict[str, Any]]:
            return [
                logicbundle(
                    app,
                    ref=f"{self.registry.host}/bench/soak-many:{tag}",
                    key=self.key,
                    selector={"app": app},
                    rollout=FAST,
                    interval="10m",
                )
                for app in layout[ns]
            ]

        started = time.monotonic()
        before = await reconcile_histogram(self.fleet.session, self.operator.metrics_port)
        samples: list[Sample] = []
        for i, tag in enumerate(tags):
            t = time.monotonic()
            for ns, apps in layout.items():
                for app in apps:
                    self.fleet.forget_reports(ns, app)
            await asyncio.gather(*(self.apply(ns, manifests(ns, tag)) for ns in layout))
            await asyncio.gather(
                *(
                    self.fleet.wait_reported(ns, app, digests[tag], per_bundle, within=600)
                    for ns, apps in layout.items()
                    for app in apps
                )
            )
            for ns, apps in layout.items():
                for app in apps:
                    await self.wait_status(ns, app, ready_on(digests[tag]), what=f"Ready on {tag}")
            if i % every == 0 or i == rounds:
                samples.append(sample(pid, i))
                s = samples[-1]
                print(
                    f"  {i:3d} rounds: RSS {s.rss_mib:.1f} MiB, {s.fds} fds, {s.threads} "
                    f"threads; this round {time.monotonic() - t:.1f} s",
                    flush=True,
                )
        after = await reconcile_histogram(self.fleet.session, self.operator.metrics_port)
        return Phase(
            name=f"{rounds} rounds of {bundles} bundles at once ({bundles * per_bundle} pods)",
            unit="rounds",
            samples=samples,
            warmup=max(every, int(rounds * warmup)),
            reconcile=after.minus(before),
            seconds=time.monotonic() - started,
        )


async def run(args: argparse.Namespace, work: Path) -> list[Phase]:
    pods = max(args.pods, args.bundles * args.per_bundle)
    nodes = max(2, math.ceil(pods * 1.3 / 250) + 1)
    with (
        Cluster.start(work / "cluster", nodes=nodes) as cluster,
        Registry.start(work / "registry") as registry,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.wait_established("logicbundles.logicbundle.io")
        operator = Operator.start(cluster, work / "operator")
        wait_for(lambda: _metrics_up(operator.metrics_port), what="metrics", timeout=30)
        api, fleet = Api(cluster), Fleet(operator.distributor_url)
        soak = Soak(cluster, registry, operator, KeyPair.generate(), api, fleet)
        phases = []
        try:
            if args.rollouts:
                phases.append(
                    await soak.one_bundle(
                        rollouts=args.rollouts, pods=args.pods, every=args.every, warmup=args.warmup
                    )
                )
            if args.rounds:
                phases.append(
                    await soak.many_bundles(
                        rounds=args.rounds,
                        bundles=args.bundles,
                        per_bundle=args.per_bundle,
                        namespaces=args.namespaces,
                        every=max(1, args.rounds // 10),
                        warmup=args.warmup,
                    )
                )
        finally:
            await fleet.close()
            await api.close()
            operator.stop()
    return phases


def report(phases: Sequence[Phase], *, max_growth_mib: float) -> int:
    rows = [row for phase in phases for row in phase.rows()]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  figure")
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure}   [{note}]")
    worst = 0
    for phase in phases:
        rss, fds = phase.growth()
        steps = [
            (b.rss_mib - a.rss_mib) / (b.done - a.done) * 100
            for a, b in zip(phase.samples, phase.samples[1:], strict=False)
            if a.done >= phase.warmup
        ]
        if steps:
            print(
                f"{phase.name}: median RSS growth per 100 {phase.unit} past warm-up "
                f"{statistics.median(steps):+.2f} MiB"
            )
        if rss > max_growth_mib or fds > 10:
            print(f"GROWTH: {phase.name}: {rss:+.1f} MiB, {fds:+d} fds after warm-up")
            worst = 1
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_soak", description=__doc__)
    parser.add_argument("--rollouts", type=int, default=500, help="rollouts of one bundle")
    parser.add_argument("--pods", type=int, default=20, help="its pods")
    parser.add_argument("--every", type=int, default=25, help="sample every N rollouts")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of all bundles at once")
    parser.add_argument("--bundles", type=int, default=100, help="LogicBundles per round")
    parser.add_argument("--per-bundle", type=int, default=5, help="pods per LogicBundle")
    parser.add_argument("--namespaces", type=int, default=10, help="namespaces they spread over")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="share of a phase: warm-up")
    parser.add_argument(
        "--max-growth-mib", type=float, default=20.0, help="RSS growth after warm-up tolerated"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    started = time.monotonic()
    phases = asyncio.run(run(args, work))
    code = report(phases, max_growth_mib=args.max_growth_mib)
    print(f"whole run {time.monotonic() - started:.0f} s")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
