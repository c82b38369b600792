"""SDK call overhead against a direct call, call latency during swaps, swap latency.

Run: ``.venv/bin/python -m tests.sdk.bench_sdk`` (about 50 s; keep the machine quiet).

* Overhead: batches of calls to a trivial bundle function (``add(a, b)``),
  through the routed proxy (per-version accounting on) and directly to the
  same bound method, interleaved batch by batch in the same process run so
  that both see the same machine.  The per-call time of each batch is one
  sample; the figures are the median and p99 over batches of
  ``proxy - direct`` (paired by batch).
* During swaps: one thread activates alternately two versions in a loop
  (each activation a new namespace, so each one imports and runs the
  bundle's modules) while four threads call the proxy; against the same
  threads with no swap going on (the baseline, "quiet").  Two kinds of
  callers: *spinning* (call after call, each call timed; the callers also
  wait on each other for the GIL, up to Python's 5 ms switch interval and
  longer, so their worst call is long even when quiet) and *paced* (a
  0.2 ms sleep before each call, like request threads woken by I/O; timed
  from when the sleep was due to end, so the wait for the GIL after waking
  counts).  The swaps get their bytecode three ways: compiled in the
  application (the old compile step, everything else new), from the
  compile worker on every swap, and from the cache (the worker compiled
  each digest once).  Garbage collections are timed (``gc.callbacks``); the
  last paced run freezes the heap first (``gc.freeze()``), which shows what
  the longest call is made of.  Running this script on the old code gives
  the before figures (it then has only the first way).
* Swap latency: ``activate`` of the example bundles (``pricing-v1`` and
  ``pricing-v2``; their self-test sleeps 1 ms) one after the other, timed
  end to end and per phase, the three ways.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from logicbundle.sdk import LogicHost, Split
from tests.sdk.conftest import BUNDLE, IFACE, simple, write_bundle_at

try:  # absent before the compile worker; the bench then measures the old path only
    from logicbundle.sdk import _compile
except ImportError:  # pragma: no cover
    _compile = None  # type: ignore[assignment]

BATCH = 2_000
BATCHES = 300
CALLERS = 4
PACE_SECONDS = 0.0002


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


# --- the old path, for the before figures ---------------------------------------------


class InProcessSource:
    """The old compile step: every module compiled inside the application, on every activation.

    Everything else is the new code's, so this isolates what compiling in
    process costs the request threads; the old code as a whole is measured by
    running this script on it.
    """

    def tree(self, *, digest: str, root: str) -> Any:
        import marshal
        import os

        dirs: list[str] = []
        codes: dict[str, bytes] = {}
        for here, subdirs, files in os.walk(root):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            dirs.append(here)
            for name in files:
                if name.endswith(".py"):
                    path = f"{here}/{name}"
                    code = compile(Path(path).read_bytes(), path, "exec", dont_inherit=True)
                    codes[path] = marshal.dumps(code)
        return _compile.CompiledTree(root=root, dirs=frozenset(dirs), codes=codes, failures={})


def code_paths() -> dict[str, Callable[[], AbstractContextManager[Any]]]:
    """How each run gets its bytecode: compiled in-process (before), or by the worker."""
    if _compile is None:
        return {"before (old code)": nullcontext}
    uncached = _compile.WorkerCodeSource(worker=_compile.WORKER, cache=_compile.BytecodeCache(0))
    return {
        "compiled in-process": lambda: _compile.using(InProcessSource()),
        "worker, every swap compiled": lambda: _compile.using(uncached),
        "worker, digests cached": nullcontext,
    }


# --- call latency during swaps -------------------------------------------------------


@contextmanager
def gc_pauses() -> Iterator[list[tuple[int, int]]]:
    """(generation, ns) of every collection within the block."""
    pauses: list[tuple[int, int]] = []
    started = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        else:
            pauses.append((info["generation"], time.perf_counter_ns() - started[0]))

    gc.callbacks.append(callback)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(callback)


def measure_calls(
    host: LogicHost,
    versions: list[tuple[str, Path]],
    *,
    swapping: bool,
    paced: bool,
    seconds: float = 2.0,
) -> dict[str, Any]:
    add = host.function("add")
    clock = time.perf_counter_ns
    stop = threading.Event()
    samples: list[list[int]] = [[] for _ in range(CALLERS)]

    def caller(out: list[int]) -> None:
        while not stop.is_set():
            start = clock()
            add(1, 2)
            out.append(clock() - start)

    def paced_caller(out: list[int]) -> None:
        # A request thread woken by I/O: the latency runs from when the sleep was due
        # to end to when the call returned, so it includes the wait for the GIL after
        # waking (which a timer started after the sleep would not see), plus the
        # sleep's own overshoot, which the quiet run shows.
        sleep, pace_ns = time.sleep, int(PACE_SECONDS * 1e9)
        while not stop.is_set():
            due = clock() + pace_ns
            sleep(PACE_SECONDS)
            add(1, 2)
            out.append(clock() - due)

    target = paced_caller if paced else caller
    threads = [threading.Thread(target=target, args=(s,)) for s in samples]
    totals: list[float] = []
    with gc_pauses() as pauses:
        for thread in threads:
            thread.start()
        swaps = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if swapping:
                digest, path = versions[swaps % 2]
                totals.append(host.activate(digest, path).timings["total"])
                swaps += 1
            else:
                stop.wait(0.01)
        stop.set()
        for thread in threads:
            thread.join()
    calls = [x / 1000 for s in samples for x in s]
    return {"calls_us": calls, "swaps": swaps, "swap_ms": totals, "gc_ns": pauses}


def _row(label: str, calls: list[float], baseline: list[float] | None) -> str:
    med, p99, p999, top = (
        statistics.median(calls),
        _quantile(calls, 0.99),
        _quantile(calls, 0.999),
        max(calls),
    )
    over = sum(1 for c in calls if c > 2000)
    text = (
        f"  {label:28s} n={len(calls):8d} median {med:7.2f} p99 {p99:8.2f} "
        f"p99.9 {p999:9.2f} max {top:9.1f} >2ms {over:4d}"
    )
    if baseline is not None:
        text += (
            f" | vs quiet: median {med / statistics.median(baseline):4.2f}x"
            f" p99 {p99 / _quantile(baseline, 0.99):5.2f}x max {top / max(baseline):5.2f}x"
        )
    return text


def calls_during_swaps(host: LogicHost, versions: list[tuple[str, Path]]) -> None:
    for paced in (False, True):
        kind = (
            f"paced (a {PACE_SECONDS * 1e3:g} ms sleep before each call; latency from when "
            "the sleep was due to end)"
            if paced
            else "spinning (latency of each call)"
        )
        print(f"call latency (µs), {CALLERS} calling threads, {kind}, 2 s per run:")
        quiet = measure_calls(host, versions, swapping=False, paced=paced)
        print(_row("quiet (baseline)", quiet["calls_us"], None))
        print(f"  {'':28s} {_gc_text(quiet)}")
        runs = list(code_paths().items())
        if paced and _compile is not None:
            runs.append(("cached, gc.freeze() first", _frozen_heap))
        for name, path in runs:
            with path():
                run = measure_calls(host, versions, swapping=True, paced=paced)
            swap_ms = run["swap_ms"]
            print(_row(name, run["calls_us"], quiet["calls_us"]))
            print(
                f"  {'':28s} {run['swaps']} swaps, activate median "
                f"{statistics.median(swap_ms):.2f} ms, p99 {_quantile(swap_ms, 0.99):.2f} ms, "
                f"max {max(swap_ms):.2f} ms; {_gc_text(run)}"
            )


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """What an application can do once started: keep its heap out of full collections."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _gc_text(run: dict[str, Any]) -> str:
    pauses = run["gc_ns"]
    if not pauses:
        return "gc: none"
    worst = max(pauses, key=lambda p: p[1])
    full = sum(1 for gen, _ in pauses if gen == 2)
    return (
        f"gc: {len(pauses)} collections ({full} full), longest {worst[1] / 1e6:.2f} ms "
        f"(generation {worst[0]})"
    )


# --- swap latency with the example bundle ---------------------------------------------


def swap_latency(rounds: int) -> None:
    from examples.sample_app.bundles import EXAMPLES_DIR, INTERFACE, install

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = install(EXAMPLES_DIR / "pricing-v1", root=root)
        two = install(EXAMPLES_DIR / "pricing-v2", root=root)
        host = LogicHost(name="pricing", interface=INTERFACE, root=root)
        host.activate(one.digest, one.path)
        print(
            f"swap latency, example bundle pricing-v1 <-> v2 (self-test sleeps 1 ms), n={rounds}:"
        )
        for label, path in code_paths().items():
            totals: list[float] = []
            phases: dict[str, list[float]] = {}
            with path():
                for index in range(rounds):
                    target = (two, one)[index % 2]
                    timings = host.activate(target.digest, target.path).timings
                    totals.append(timings["total"])
                    for phase, value in timings.items():
                        phases.setdefault(phase, []).append(value)
            detail = ", ".join(
                f"{phase} {statistics.median(values):.2f}"
                for phase, values in phases.items()
                if phase != "total"
            )
            print(
                f"  {label:36s} median {statistics.median(totals):6.2f} ms  "
                f"p99 {_quantile(totals, 0.99):6.2f} ms  max {max(totals):6.2f} ms  "
                f"({detail}; medians, ms)"
            )
        host.close(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-calls", action="store_true", help="no call latency during swaps")
    parser.add_argument("--rounds", type=int, default=200, help="swaps per swap-latency case")
    parser.add_argument(
        "--gc-threshold", type=int, default=0, help="gc.set_threshold(N) first (generation 0)"
    )
    args = parser.parse_args()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    print(f"Python {sys.version.split()[0]}, switch interval {sys.getswitchinterval() * 1e3} ms")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one = write_bundle_at(root, simple("one"))
        two = write_bundle_at(root, simple("two"))
        host = LogicHost(name=BUNDLE, interface=IFACE, root=root)
        if not args.skip_overhead:
            # A 5 % split is on, so keyed calls pay the sticky hash too.
            host.activate(one.digest, one.path, split=Split(candidate=two.digest, weight=5))
            figures = overhead(host)
            print(f"call overhead vs direct ({BATCHES} batches of {BATCH} calls):")
            for key, value in figures.items():
                print(f"  {key:26s} {value:10.1f}")
        host.activate(one.digest, one.path)
        # Swapping between two loaded digests reuses nothing: each activation
        # loads a fresh namespace, so alternate between two directories.
        three = write_bundle_at(root, simple("three"))
        if not args.skip_calls:
            calls_during_swaps(host, [(three.digest, three.path), (one.digest, one.path)])
        host.close(timeout=10)
    swap_latency(args.rounds)
    if _compile is not None and _compile.WORKER.pid is not None:
        pid = _compile.WORKER.pid
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        rss = next(
            (line.split(":", 1)[1].strip() for line in status if line.startswith("VmRSS")), "?"
        )
        print(f"compile worker: pid {pid}, {_compile.WORKER.requests} requests, RSS {rss}")


if __name__ == "__main__":
    main()
