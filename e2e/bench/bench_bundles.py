"""Benchmark pack + push and pull + unpack of logic bundles against the real registry.

``python -m e2e.bench.bench_bundles`` starts Debian's registry on 127.0.0.1, makes
a 1 MB and a 50 MB bundle directory (half random bytes, half text, so the
layer compresses like real content), and prints the median over several
runs of: pack + push to a fresh repository (nothing can be skipped), and
fetch + pull + unpack into a fresh directory.  A run of ``pack`` alone in
the same process is the baseline the push is compared with.

First, while the process is still small, it pulls a 10 MB and a 100 MB
bundle and prints the peak of Python
allocations (tracemalloc) and the growth of the process's peak RSS during
fetch + pull + unpack: memory must not grow with the bundle.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from e2e.harness.services import Registry
from logicbundle.artifact import fetch_bundle, pull_bundle, push_directory
from logicbundle.bundle import pack_directory_to
from logicbundle.oci import Reference, RegistryClient

INTERFACE = {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}}


def _make_source(root: Path, size: int) -> Path:
    rng = random.Random(size)  # noqa: S311 - benchmark filler, not secrets
    root.mkdir(parents=True)
    files = max(1, size // (512 * 1024))
    per_file = size // files
    words = [b"price", b"rule", b"discount", b"tier", b"region", b"customer", b"\n"]
    for i in range(files):
        half = per_file // 2
        text = b" ".join(rng.choice(words) for _ in range(half // 6))[:half]
        (root / f"part_{i:04d}.dat").write_bytes(os.urandom(per_file - half) + text)
    (root / "rules.py").write_text("def price(item):\n    return 1.0\n")
    return root


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.1f} ms"


def _memory(client: RegistryClient, registry: Registry, work: Path) -> None:
    """Peak memory of fetch + pull + unpack, for bundles of two sizes."""
    print(f"{'bundle':>8} {'python peak':>12} {'peak RSS growth':>16}  (fetch+pull+unpack)")
    for size in (10, 100):
        source = _make_source(work / f"mem{size}", size << 20)
        target = Reference(registry.host, f"bench/mem{size}", "v1")
        push_directory(client, target, source, name="bench", version="1.0.0", interface=INTERFACE)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        pull_bundle(client, fetch_bundle(client, target), work / "pulled" / f"mem{size}")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        print(f"{size:>5} MB {peak / 2**20:>9.2f} MiB {growth / 1024:>13.2f} MiB")


def _timings(client: RegistryClient, registry: Registry, work: Path, runs: int) -> None:
    """Median pack, pack + push and fetch + pull + unpack times."""
    print(f"\n{'bundle':>8} {'pack only':>12} {'pack+push':>12} {'fetch+pull+unpack':>18}")
    for label, size in (("1 MB", 1 << 20), ("50 MB", 50 << 20)):
        source = _make_source(work / label.replace(" ", ""), size)
        packs, pushes, pulls = [], [], []
        for run in range(runs):
            t0 = time.perf_counter()
            pack_directory_to(
                source, io.BytesIO(), name="bench", version="1.0.0", interface=INTERFACE
            )
            packs.append(time.perf_counter() - t0)
            target = Reference(registry.host, f"bench/{label[:-3]}mb-{run}", "v1")
            t0 = time.perf_counter()
            push_directory(
                client, target, source, name="bench", version="1.0.0", interface=INTERFACE
            )
            pushes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            remote = fetch_bundle(client, target)
            pull_bundle(client, remote, work / "pulled" / f"{label[:-3]}-{run}")
            pulls.append(time.perf_counter() - t0)
        print(
            f"{label:>8} {_median_ms(packs):>12} {_median_ms(pushes):>12} {_median_ms(pulls):>18}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_bundles")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="logicbundle-bench-"))
    try:
        with Registry.start(work / "registry") as registry, RegistryClient(insecure=True) as client:
            # Memory first, while the process is still small (peak RSS never goes down).
            _memory(client, registry, work)
            _timings(client, registry, work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
