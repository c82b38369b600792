"""Benchmark: median time to pack a 1 MB and a 50 MB bundle directory (not a test).

Run from the repository root::

    .venv/bin/python -m tests.bundle.bench_pack [--runs N]

The content is "random-ish": a mix of incompressible random bytes and
repetitive text, in files of 4 KiB to 1 MiB, generated from a fixed seed.
Prints the median (and min/max) of N runs of ``pack_directory`` per size, plus
the layer size and the unpack time of one run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from logicbundle.bundle import pack_directory, unpack_bundle

_WORDS = b"allow deny price limit rule match region tier discount quota ".split()


def make_tree(root: Path, total: int, seed: int) -> int:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    written = 0
    index = 0
    while written < total:
        size = min(total - written, rng.choice((4096, 16_384, 65_536, 262_144, 1 << 20)))
        if rng.random() < 0.5:
            data = rng.randbytes(size)
        else:
            data = b" ".join(rng.choice(_WORDS) for _ in range(size // 5))[:size]
        path = root / f"dir{index % 7}" / f"file{index:05}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += len(data)
        index += 1
    return index


def bench(total: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "src"
        count = make_tree(root, total, seed=total)
        times = []
        bundle = None
        for _ in range(runs):
            start = time.perf_counter()
            bundle = pack_directory(
                root, name="bench", version="1", interface={"jsonSchema": {"type": "object"}}
            )
            times.append(time.perf_counter() - start)
        assert bundle is not None
        start = time.perf_counter()
        unpack_bundle(
            bundle.layer, manifest=bundle.manifest, destination=Path(tmp) / "out", fsync=False
        )
        unpack = time.perf_counter() - start
        median_ms = statistics.median(times) * 1e3
        print(
            f"{total / 1e6:6.1f} MB in {count:4} files: pack median {median_ms:8.1f} ms"
            f" (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}, {runs} runs);"
            f" layer {bundle.layer_size / 1e6:.1f} MB; unpack {unpack * 1e3:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for total in (1_000_000, 50_000_000):
        bench(total, args.runs)


if __name__ == "__main__":
    main()
