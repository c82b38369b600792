"""Benchmark: memory while pulling a large blob does not grow with the blob.

Run from the repository root:  .venv/bin/python -m tests.oci.bench_pull [--mock]

Pushes a 10 MB and a 100 MB blob (streamed from a file), then pulls each into
a file and reports the peak of Python allocations during the pull
(tracemalloc) and the growth of the process's peak RSS.  Uses Debian's
docker-registry (a separate process) when installed, so the registry's own
memory is not counted; ``--mock`` uses the in-process mock instead.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from logicbundle.oci import Reference, RegistryClient

from .mock_registry import MockRegistry
from .test_real_registry import REGISTRY_BINARY, _free_port, _ready

MB = 1024 * 1024


@contextlib.contextmanager
def _real_registry(root: Path) -> Iterator[str]:
    port = _free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        [str(REGISTRY_BINARY), "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while not _ready(f"http://{host}/v2/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("docker-registry did not start")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.05)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def _mock_registry() -> Iterator[str]:
    with MockRegistry() as registry:
        yield registry.host


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bench(client: RegistryClient, host: str, root: Path, size_mb: int) -> None:
    target = Reference(host, f"bench/blob{size_mb}")
    source = root / f"source-{size_mb}"
    with source.open("wb") as output:
        block = os.urandom(MB)
        for _ in range(size_mb):
            output.write(block)
    push_start = time.perf_counter()
    descriptor = client.push_blob(target, source)
    push_seconds = time.perf_counter() - push_start
    destination = root / f"pulled-{size_mb}"
    rss_before = _max_rss_bytes()
    tracemalloc.start()
    pull_start = time.perf_counter()
    client.pull_blob_to(target, descriptor, destination)
    pull_seconds = time.perf_counter() - pull_start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = _max_rss_bytes() - rss_before
    assert destination.stat().st_size == size_mb * MB
    print(
        f"{size_mb:>4} MB blob: push {push_seconds:6.2f}s, pull {pull_seconds:6.2f}s "
        f"({size_mb / pull_seconds:6.1f} MB/s), python peak during pull "
        f"{traced_peak / MB:6.2f} MiB, peak RSS growth during pull {rss_growth / MB:6.2f} MiB"
    )
    source.unlink()
    destination.unlink()


def main() -> None:
    use_mock = "--mock" in sys.argv or not REGISTRY_BINARY.exists()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        registry = _mock_registry() if use_mock else _real_registry(root)
        with registry as host, RegistryClient(insecure=True) as client:
            kind = "in-process mock" if use_mock else "docker-registry 2.8 (separate process)"
            print(f"registry: {kind}; baseline peak RSS {_max_rss_bytes() / MB:.1f} MiB")
            for size_mb in (10, 100):
                _bench(client, host, root, size_mb)


if __name__ == "__main__":
    main()
