"""Memory across 1,000 swaps of a well-behaved bundle: it must stay flat (issue 12).

Run: ``.venv/bin/python -m tests.sdk.bench_leaks`` (about 20 s; ``--swaps N``).

Two versions of a small bundle (a module-level cache, a class, a relative
import) are activated alternately, with calls between swaps; every activation
loads a fresh namespace of the digest it names (a digest is never reloaded in
place), so 1,000 swaps create and retire 1,000 namespaces.  After a warm-up
of 50 swaps the resident set (``/proc/self/statm``) and the Python heap
(``tracemalloc``) are read, and again at the end, once the last retired
version's grace period is over.  The leak detector runs as in production
(grace 0.2 s here; its full collections at most every 30 s) and must report
nothing.  Exits 1 when RSS grows by more than 4 MiB or the traced heap by
more than 1 MiB, or when a leak is reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from logicbundle.sdk import LogicHost
from tests.sdk.conftest import IFACE, RELATIVE, write_bundle_at

_PAGE = os.sysconf("SC_PAGE_SIZE")
WARM_UP = 50
MAX_RSS_GROWTH = 4 << 20
MAX_HEAP_GROWTH = 1 << 20

LOGIC = (
    "from . import table\n"
    "CACHE = {}\n"
    "class Logic:\n"
    "    def ident(self):\n"
    "        CACHE[table.NAME] = [table.NAME] * 100\n"
    "        return table.NAME\n"
    "    def add(self, a, b):\n"
    "        return a + b\n"
    "logic = Logic()\n"
)


def _rss() -> int:
    with Path("/proc/self/statm").open("rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _swaps(host: LogicHost, versions: list[tuple[str, Path]], count: int, start: int) -> None:
    ident = host.function("ident")
    add = host.function("add")
    for i in range(start, start + count):
        digest, path = versions[i % len(versions)]
        host.activate(digest, path)
        for _ in range(10):
            ident()
            add(i, 1)


def _settle(host: LogicHost, digest: str, timeout: float) -> None:
    """Wait until every retired version was judged (collected or leaked)."""
    assert host.wait_released(digest, timeout=timeout)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while host.watched() and not host.leaks() and time.monotonic() < deadline:
        pause.wait(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        versions = []
        for name in ("v1", "v2"):
            files = {**RELATIVE, "logic.py": LOGIC, "table.py": f"NAME = {name!r}\n"}
            written = write_bundle_at(root, files, bundle="flat")
            versions.append((written.digest, written.path))
        host = LogicHost(name="flat", interface=IFACE, root=root, leak_grace=0.2)
        _swaps(host, versions, WARM_UP, 0)
        _settle(host, versions[(WARM_UP - 2) % 2][0], 30)
        tracemalloc.start()
        rss0, heap0 = _rss(), tracemalloc.get_traced_memory()[0]
        started = time.monotonic()
        done = 0
        while done < args.swaps:
            step = min(1000, args.swaps - done)
            _swaps(host, versions, step, WARM_UP + done)
            done += step
            print(
                f"  after {done:6d} swaps: RSS {_rss() / (1 << 20):7.2f} MiB, traced heap "
                f"{tracemalloc.get_traced_memory()[0] / (1 << 20):6.2f} MiB",
                flush=True,
            )
        took = time.monotonic() - started
        last = WARM_UP + args.swaps - 1
        _settle(host, versions[(last - 1) % 2][0], 30)
        rss1, heap1 = _rss(), tracemalloc.get_traced_memory()[0]
        leaks = host.leaks()
        host.close(timeout=10)
    mib = 1 << 20
    print(f"swaps: {args.swaps} in {took:.1f} s (after {WARM_UP} warm-up swaps)")
    print(
        f"RSS:         start {rss0 / mib:7.2f} MiB  end {rss1 / mib:7.2f} MiB  "
        f"growth {(rss1 - rss0) / mib:+.2f} MiB"
    )
    print(
        f"traced heap: start {heap0 / mib:7.2f} MiB  end {heap1 / mib:7.2f} MiB  "
        f"growth {(heap1 - heap0) / mib:+.2f} MiB"
    )
    print(f"retired versions still alive: {len(leaks)}")
    flat = rss1 - rss0 <= MAX_RSS_GROWTH and heap1 - heap0 <= MAX_HEAP_GROWTH and not leaks
    print("flat" if flat else "GROWTH")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
