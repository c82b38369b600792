"""Benchmark the harness: cold build times, warm start time, memory at rest.

``python -m e2e.bench.bench_cluster`` (or ``make bench``) prints:

- the cold build time of each component, as recorded when it was built
  (the ``.complete`` marker of its cache folder);
- the warm start time of the control plane (median of several starts, from
  the first process started to ready);
- the resident memory of every control-plane process at rest, after the
  cluster has been idle for a while.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from e2e.harness import build
from e2e.harness.cluster import Cluster
from e2e.harness.proc import rss_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.bench_cluster")
    parser.add_argument("--starts", type=int, default=5, help="warm starts to time (default 5)")
    parser.add_argument(
        "--rest", type=float, default=30.0, help="seconds idle before measuring RSS"
    )
    args = parser.parse_args(argv)

    print("cold build (recorded when each component was built):")
    total = 0.0
    for component in build.ALL.values():
        marker = component.dir / ".complete"
        if marker.exists():
            seconds = float(marker.read_text())
            total += seconds
            print(f"  {component.name:<12} {component.version:<9} {seconds:7.0f} s")
        else:
            print(f"  {component.name:<12} {component.version:<9}   (not built)")
    print(f"  {'total':<22} {total:7.0f} s")

    for component in (build.ETCD, build.KUBERNETES, build.KWOK):
        component.ensure()
    starts = []
    for i in range(args.starts):
        run_dir = Path(tempfile.mkdtemp(prefix="logicbundle-bench-"))
        try:
            with Cluster.start(run_dir, nodes=2) as cluster:
                starts.append(cluster.started_in)
                if i == args.starts - 1:
                    time.sleep(args.rest)  # a benchmark, not a test: let it settle
                    print(f"\nmemory at rest after {args.rest:.0f} s idle (RSS):")
                    for proc in cluster.processes:
                        print(f"  {proc.name:<24} {rss_bytes(proc.pid) / 2**20:7.1f} MiB")
                    print(f"  {'total':<24} {cluster.rss_bytes() / 2**20:7.1f} MiB")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"\nwarm start to ready ({len(starts)} starts): median {statistics.median(starts):.2f} s, "
        f"min {min(starts):.2f} s, max {max(starts):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
