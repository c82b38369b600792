"""Benchmark the reload agent: swap, rollback, target propagation, memory and CPU at rest.

``python -m e2e.bench.bench_agent`` prints medians and p99 of:

- swap, from "target known and bytes on disk" to "application acked", for a
  10 KB and a 1 MB bundle (the real worker, the real SDK host over its socket,
  ``current`` swapped durably with symlink + rename + fsync of the directory);
  and for a 10 KB bundle whose ``selftest()`` only returns True, so that the
  mechanism's own cost shows apart from the bundle's work (the example's
  self-test calls ``price()``, which sleeps 1 ms);
- rollback: flip ``current`` back + the application's ack;
- target propagation, target written -> agent knows: the fast path (a write
  of the LogicBundle's ``status.targetState`` on the real control plane, the
  distributor's watch, the rule evaluated for the pod, the long-poll, the
  agent's poller; ``--no-cluster`` skips it) and the slow path
  (the published rollout state's file, as the kubelet swaps it in, polled
  every second by default; the kubelet's own delay is not part of it);
- the agent's RSS and CPU at rest, as a separate process (``python -m
  logicbundle.agent``) with one active bundle, over ``--rest`` seconds;
  with ``--rest-variants`` also with an ``https://`` distributor configured
  (nothing listening: the TLS context is loaded, the slow path followed), and
  that started as ``logicbundle agent``, as the injected container runs it
  (``--rest-only`` skips everything else).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

from e2e.harness.pki import CertificateAuthority
from e2e.harness.proc import free_port, rss_bytes
from examples.sample_app.bundles import EXAMPLES_DIR, INTERFACE, install
from logicbundle import contract
from logicbundle.agent import Agent, Target, _seams, format_annotations, parse_config
from logicbundle.sdk import LogicHost, serve

BUNDLE = "pricing"


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _write_pod(root: Path) -> None:
    """The pod's downward-API files, with the facts the webhook writes at admission."""
    annotations = {
        contract.ANNOTATION_COHORT_KEY: "bench/web-0",
        contract.ANNOTATION_ADMITTED_AT: str(time.time_ns() // 1_000_000),
    }
    _replace(root / "annotations", format_annotations(annotations).encode())
    _replace(root / "labels", format_annotations({"app": "bench"}).encode())


def _publish(root: Path, digest: str) -> Path:
    """The bundle's published state with every pod on ``digest`` (what the ConfigMap holds)."""
    state = contract.RolloutState(bundle=BUNDLE, stable=digest)
    path = root / "state" / contract.state_file_name(BUNDLE)
    _replace(path, json.dumps(contract.state_to_json(state)).encode())
    return path


def _set_on(wanted: str, event: threading.Event, step: str) -> None:
    if step == wanted:
        event.set()


def _stats(label: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {label:<58} median {statistics.median(ordered):8.3f} ms   p99 {p99:8.3f} ms"
        f"   (n={len(ordered)})"
    )


TRIVIAL_SELFTEST = "\n\nPricingLogic.selftest = lambda self: True\n"
"""Appended to the example's code: a self-test that does no work (no ``price()``, no sleep)."""


def _bundle_dir(work: Path, size: int, tag: str, *, trivial_selftest: bool = False) -> Path:
    source = work / f"src-{size}-{tag}{'-trivial' if trivial_selftest else ''}"
    shutil.copytree(EXAMPLES_DIR / "pricing-v2", source)
    with (source / "pricing.py").open("a") as out:
        out.write(f"# {tag}\n")
        if trivial_selftest:
            out.write(TRIVIAL_SELFTEST)
    rng = random.Random(size)  # noqa: S311 - filler bytes, not secrets
    (source / "table.bin").write_bytes(rng.randbytes(max(size - 2000, 0)))
    return source


def _config(root: Path, *, distributor: str = "", token: Path | None = None) -> Any:
    return parse_config(
        json.dumps(
            {
                "root": str(root),
                "distributor": distributor,
                "tokenFile": str(token or root / "token"),
                "annotationsFile": str(root / "annotations"),
                "labelsFile": str(root / "labels"),
                "stateDir": str(root / "state"),
                "socket": str(root / "sdk.sock"),
                "listen": "127.0.0.1:0",
                "bundles": {"pricing": {"source": "registry.invalid/shop/pricing"}},
            }
        )
    )


def bench_swaps(work: Path, *, rounds: int) -> None:
    cases = (
        (10_000, "10 KB", False),
        (1_000_000, "1 MB", False),
        (10_000, "10 KB, trivial selftest", True),
    )
    for size, label, trivial in cases:
        root = Path(tempfile.mkdtemp(prefix="lbb-", dir="/tmp"))
        try:
            a = install(
                _bundle_dir(work, size, "a", trivial_selftest=trivial),
                root=root,
                make_current=True,
            )
            b = install(_bundle_dir(work, size, "b", trivial_selftest=trivial), root=root)
            host = LogicHost(name="pricing", interface=INTERFACE, root=root)
            host.load_current()
            listener = serve(host, path=root / "sdk.sock")
            agent = Agent(_config(root), annotations_interval=3600.0)
            agent.start(serve_http=False)
            worker = agent.workers["pricing"]
            acked = threading.Event()
            _seams.hook = functools.partial(_set_on, "acked", acked)
            worker.assign(Target(digest=a.digest))
            assert acked.wait(30)
            swaps: list[float] = []
            rollbacks: list[float] = []
            parts: list[tuple[float, float]] = []
            for i in range(rounds):
                digest = (b if i % 2 == 0 else a).digest
                acked.clear()
                start = time.perf_counter()
                worker.assign(Target(digest=digest))
                assert acked.wait(30)
                swaps.append((time.perf_counter() - start) * 1000)
                assert host.active_digest == digest
                assert worker.wait_idle(30)
                record = worker.status.last_swap
                assert record is not None
                assert record.to == digest
                parts.append((record.swap_ms, record.notify_ms))
                # A rollback: the application refused the other version (so it still serves
                # `digest`) after `current` was swapped to it; measure the flip back + ack,
                # exactly the worker's path after a refusal.
                other = a.digest if digest == b.digest else b.digest
                worker.store.point_current(other)
                start = time.perf_counter()
                worker.store.point_current(digest)
                worker._tell(Target(digest=digest), first=False)
                rollbacks.append((time.perf_counter() - start) * 1000)
            _seams.hook = None
            agent.stop()
            listener.close()
            _stats(f"swap {label} (known+on disk -> acked)", swaps)
            _stats(f"  of which symlink+rename+fsync {label}", [p[0] for p in parts])
            _stats(f"  of which SDK activate round trip {label}", [p[1] for p in parts])
            _stats(f"rollback {label} (flip back + ack)", rollbacks)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def bench_slow_path(*, rounds: int, interval: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="lbb-", dir="/tmp"))
    try:
        known = threading.Event()
        seen: list[float] = []

        def on_target(path: str, _bundle: str, _target: Target | None) -> None:
            if path == "slow":
                seen.append(time.perf_counter())
                known.set()

        _write_pod(root)
        agent = Agent(_config(root), annotations_interval=interval, on_target=on_target)
        agent.start(serve_http=False)
        samples = []
        for i in range(rounds):
            digest = f"sha256:{i:064x}"
            known.clear()
            start = time.perf_counter()
            _publish(root, digest)
            assert known.wait(interval * 3 + 5)
            samples.append((seen[-1] - start) * 1000)
        agent.stop()
        _stats(f"propagation slow path (state file, poll {interval:g} s)", samples)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_fast_path(*, rounds: int) -> None:
    from e2e.harness.cluster import Cluster
    from e2e.harness.operator import install_crd
    from e2e.suites.test_agent import (
        SA,
        RunningDistributor,
        create_bundle,
        create_pod,
        pod_token,
        set_target,
    )
    from logicbundle.distributor import DistributorSettings

    run_dir = Path(tempfile.mkdtemp(prefix="lbb-cluster-"))
    root = Path(tempfile.mkdtemp(prefix="lbb-", dir="/tmp"))
    try:
        with Cluster.start(run_dir, nodes=1) as cluster:
            install_crd(cluster)
            ns = "bench-agent"
            cluster.request(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            cluster.request(
                "POST",
                f"/api/v1/namespaces/{ns}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
            )
            create_bundle(
                cluster, ns, source="registry.invalid/shop/pricing:v1", stable=f"sha256:{0:064x}"
            )
            pod = create_pod(cluster, ns, "web-0")
            (root / "token").write_text(pod_token(cluster, ns, pod))
            dist = RunningDistributor(
                DistributorSettings(
                    cache_dir=run_dir / "cache",
                    host="127.0.0.1",
                    port=0,
                    insecure_http=True,
                    namespaces=(ns,),
                    kubeconfig=cluster.kubeconfig,
                )
            )
            try:
                latest: dict[str, float] = {}
                changed = threading.Condition()

                def on_target(path: str, _bundle: str, target: Target | None) -> None:
                    if path == "fast" and target is not None:
                        with changed:
                            latest[target.digest] = time.perf_counter()
                            changed.notify_all()

                agent = Agent(
                    _config(root, distributor=dist.url),
                    annotations_interval=3600.0,
                    on_target=on_target,
                    backoff_base=3600.0,
                )
                agent.start(serve_http=False)
                samples = []
                for i in range(1, rounds + 1):
                    digest = f"sha256:{i:064x}"
                    start = time.perf_counter()
                    set_target(cluster, ns, digest)
                    with changed:
                        assert changed.wait_for(functools.partial(latest.__contains__, digest), 30)
                    samples.append((latest[digest] - start) * 1000)
                agent.stop()
                _stats("propagation fast path (targetState written -> agent knows)", samples)
            finally:
                dist.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


REST_VARIANTS: Final = {
    "": (False, False),
    ", https distributor": (True, False),
    ", `logicbundle agent`, https": (True, True),
}
"""Label -> (an unreachable https:// distributor configured, started through the CLI)."""
CLI_ENTRY: Final = "import sys; from logicbundle.cli import main; sys.exit(main())"


def bench_rest(work: Path, *, rest: float, variants: bool = False) -> None:
    bundle = _bundle_dir(work, 10_000, "rest")
    for label, (https, cli) in REST_VARIANTS.items() if variants else [("", (False, False))]:
        _rest_once(bundle, rest=rest, label=label, https=https, cli=cli)


def _rest_once(bundle: Path, *, rest: float, label: str, https: bool, cli: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="lbb-", dir="/tmp"))
    try:
        installed = install(bundle, root=root, make_current=True)
        _write_pod(root)
        _publish(root, installed.digest)
        port = free_port()
        config: dict[str, Any] = {
            "root": str(root),
            "annotationsFile": str(root / "annotations"),
            "labelsFile": str(root / "labels"),
            "stateDir": str(root / "state"),
            "socket": str(root / "sdk.sock"),
            "listen": f"127.0.0.1:{port}",
            "bundles": {"pricing": {"source": "registry.invalid/shop/pricing"}},
        }
        if https:
            # As in the chart: the distributor over TLS with its CA; nothing listens there,
            # so the agent follows the slow path with its TLS context loaded.
            (root / "ca.pem").write_bytes(CertificateAuthority().cert_pem)
            (root / "token").write_text("bench")
            config["distributor"] = f"https://127.0.0.1:{free_port()}"
            config["distributorCA"] = str(root / "ca.pem")
            config["tokenFile"] = str(root / "token")
        (root / "agent.json").write_text(json.dumps(config))
        repo = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": f"{repo / 'operator'}:{repo}"}
        # The injected container runs `logicbundle agent` (the CLI module and its parser).
        entry = ["-c", CLI_ENTRY, "agent"] if cli else ["-m", "logicbundle.agent"]
        proc = subprocess.Popen(
            [sys.executable, *entry, "--config", root / "agent.json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not (root / "pricing" / "current").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(2.0)  # a benchmark, not a test: let start-up settle
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu() -> float:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / ticks

            before, t0 = cpu(), time.monotonic()
            time.sleep(rest)
            used, elapsed = cpu() - before, time.monotonic() - t0
            rss = rss_bytes(proc.pid) / 2**20
            print(f"  {'agent RSS at rest' + label:<58} {rss:8.1f} MiB")
            print(
                f"  {f'agent CPU at rest over {elapsed:.0f} s' + label:<58} "
                f"{used * 1000:8.1f} ms ({100 * used / elapsed:.3f} % of a core)"
            )
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_agent")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--rest", type=float, default=30.0)
    parser.add_argument("--slow-interval", type=float, default=1.0)
    parser.add_argument("--no-cluster", action="store_true", help="skip the fast-path benchmark")
    parser.add_argument(
        "--rest-variants",
        action="store_true",
        help="also measure at rest with an https distributor, and started as `logicbundle agent`",
    )
    parser.add_argument("--rest-only", action="store_true", help="only the at-rest figures")
    args = parser.parse_args(argv)
    logging.getLogger("logicbundle").setLevel(logging.ERROR)  # expected fetch failures
    work = Path(tempfile.mkdtemp(prefix="lbb-work-"))
    try:
        print("agent benchmarks")
        if not args.rest_only:
            bench_swaps(work, rounds=args.rounds)
            bench_slow_path(rounds=max(args.rounds // 10, 10), interval=args.slow_interval)
        if not args.no_cluster and not args.rest_only:
            bench_fast_path(rounds=max(args.rounds // 2, 20))
        bench_rest(work, rest=args.rest, variants=args.rest_variants)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
