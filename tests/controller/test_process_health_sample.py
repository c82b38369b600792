"""The operator turns the replicas' process figures into the sample the analysis judges."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from logicbundle.controller._reconcile import _builtin_sample
from logicbundle.distributor._summary import BundleSummary, Counters

D2 = "sha256:" + "2" * 64
MiB = 2**20


def test_the_builtin_sample_carries_the_process_figures_of_the_digest() -> None:
    rt: Any = SimpleNamespace(restarts=SimpleNamespace(restarts=lambda **_: 0))
    counters = Counters(
        calls=10,
        pods=2,
        process_pods=2,
        rss_bytes=600 * MiB,
        threads=24,
        gc_pause_ns=6_000_000,
        wall_ns=60 * 10**9,
    )
    summary = BundleSummary(reporting=2, versions={D2: counters})
    sample = _builtin_sample(
        rt, namespace="shop", bundle="rules", digest=D2, since=0, summary=summary
    )
    assert (sample.process_pods, sample.rss_bytes, sample.threads) == (2, 600 * MiB, 24)
    assert (sample.gc_pause_ns, sample.wall_ns) == (6_000_000, 60 * 10**9)
