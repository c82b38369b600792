"""SDK call overhead against a direct call, and call latency during swaps.

Run: ``.venv/bin/python -m tests.sdk.bench_sdk`` (about 10 s; keep the machine quiet).

* Overhead: batches of calls to a trivial bundle function (``add(a, b)``),
  through the routed proxy (per-version accounting on) and directly to the
  same bound method, interleaved batch by batch in the same process run so
  that both see the same machine.  The per-call time of each batch is one
  sample; the figures are the median and p99 over batches of
  ``proxy - direct`` (paired by batch).
* During a swap: one thread activates alternately two versions in a loop
  while four threads call the proxy and record each call's latency; reported
  against the same threads calling with no swap going on.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from logicbundle.sdk import LogicHost, Split
from tests.sdk.conftest import BUNDLE, IFACE, simple, write_bundle_at

BATCH = 2_000
BATCHES = 300


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overhead(host: LogicHost) -> dict[str, float]:
    proxy = host.function("add")
    keyed = proxy.by_key
    direct = host.versions()[0][3].funcs["add"]
    clock = time.perf_counter_ns

    def run_plain(fn: object) -> float:
        f = fn  # the same loop shape for both
        start = clock()
        for _ in range(BATCH):
            f(1, 2)  # type: ignore[operator]
        return (clock() - start) / BATCH

    def run_keyed() -> float:
        start = clock()
        for _ in range(BATCH):
            keyed("user-42", 1, 2)
        return (clock() - start) / BATCH

    for _ in range(20):  # warm up
        run_plain(proxy), run_plain(direct), run_keyed()
    proxied, directs, keyeds = [], [], []
    for _ in range(BATCHES):
        proxied.append(run_plain(proxy))
        directs.append(run_plain(direct))
        keyeds.append(run_keyed())
    diffs = [p - d for p, d in zip(proxied, directs, strict=True)]
    keyed_diffs = [k - d for k, d in zip(keyeds, directs, strict=True)]
    return {
        "direct_median_ns": statistics.median(directs),
        "proxy_median_ns": statistics.median(proxied),
        "overhead_median_ns": statistics.median(diffs),
        "overhead_p99_ns": _quantile(diffs, 0.99),
        "keyed_overhead_median_ns": statistics.median(keyed_diffs),
        "keyed_overhead_p99_ns": _quantile(keyed_diffs, 0.99),
    }


def during_swap(host: LogicHost, versions: list[tuple[str, Path]]) -> dict[str, float]:
    add = host.function("add")
    clock = time.perf_counter_ns

    def measure(swapping: bool) -> tuple[list[int], int]:
        stop = threading.Event()
        samples: list[list[int]] = [[] for _ in range(4)]

        def caller(out: list[int]) -> None:
            while not stop.is_set():
                start = clock()
                add(1, 2)
                out.append(clock() - start)

        threads = [threading.Thread(target=caller, args=(s,)) for s in samples]
        for thread in threads:
            thread.start()
        swaps = 0
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if swapping:
                digest, path = versions[swaps % 2]
                host.activate(digest, path)
                swaps += 1
            else:
                stop.wait(0.01)
        stop.set()
        for thread in threads:
            thread.join()
        return [x for s in samples for x in s], swaps

    quiet, _ = measure(False)
    busy, swaps = measure(True)
    return {
        "swaps": swaps,
        "quiet_median_ns": statistics.median(quiet),
        "quiet_p99_ns": _quantile([float(x) for x in quiet], 0.99),
        "swapping_median_ns": statistics.median(busy),
        "swapping_p99_ns": _quantile([float(x) for x in busy], 0.99),
        "swapping_max_ns": max(busy),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = write_bundle_at(root, simple("one"))
        two = write_bundle_at(root, simple("two"))
        host = LogicHost(name=BUNDLE, interface=IFACE, root=root)
        # A 5 % split is on, so keyed calls pay the sticky hash too.
        host.activate(one.digest, one.path, split=Split(candidate=two.digest, weight=5))
        figures = overhead(host)
        host.activate(one.digest, one.path)
        print(f"call overhead vs direct ({BATCHES} batches of {BATCH} calls):")
        for key, value in figures.items():
            print(f"  {key:26s} {value:10.1f}")
        # Swapping between two loaded digests reuses nothing: each activation
        # loads a fresh namespace, so alternate between two directories.
        three = write_bundle_at(root, simple("three"))
        swap = during_swap(host, [(three.digest, three.path), (one.digest, one.path)])
        print("call latency, 4 calling threads, with and without back-to-back swaps (2 s each):")
        for key, value in swap.items():
            print(f"  {key:26s} {value:10.1f}")
        host.close(timeout=10)


if __name__ == "__main__":
    main()
