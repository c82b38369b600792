"""The application process's health, from the SDK's stats through the agent's report to a summary.

The path the builtin ``residentMemory``, ``threadCount`` and ``gcPauseFraction``
metrics read: the SDK samples its process when the agent asks for stats, the
agent gives the figures to the version the process serves (its primary one),
each distributor replica sums them per digest over the window, and the
operator adds the replicas' sums up.
"""

from __future__ import annotations

from typing import Any

from logicbundle.agent import versions_from_stats
from logicbundle.distributor import ReportStore
from logicbundle.distributor._models import Report
from logicbundle.distributor._summary import Counters, combine, summary_from_json
from tests.distributor.conftest import POD_A

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
MiB = 2**20


def sdk_stats(*, primary: str, draining: str | None, rss: int, gc_ns: int, wall_ns: int) -> Any:
    """What the agent's ``sdk_stats`` holds for one bundle: versions, and the process."""
    versions = [{"digest": primary, "role": "primary", "calls": 10, "errors": 0}]
    if draining is not None:
        versions.append({"digest": draining, "role": "draining", "calls": 5, "errors": 0})
    return {
        "versions": versions,
        "process": {
            "rssBytes": rss,
            "threads": 12,
            "gcPauseNs": gc_ns,
            "gcCollections": 3,
            "wallNs": wall_ns,
        },
    }


def report_of(stats: Any) -> Report:
    return Report.model_validate(
        {
            "bundles": {
                "pricing": {"active": D2, "healthy": True, "versions": versions_from_stats(stats)}
            }
        }
    )


def test_the_agent_gives_the_process_figures_to_the_primary_version_only() -> None:
    versions = versions_from_stats(
        sdk_stats(primary=D2, draining=D1, rss=300 * MiB, gc_ns=5, wall_ns=10)
    )
    assert versions[D2]["rssBytes"] == 300 * MiB and versions[D2]["threads"] == 12
    assert (versions[D2]["gcPauseNs"], versions[D2]["wallNs"]) == (5, 10)
    assert "rssBytes" not in versions[D1]


def test_a_summary_sums_the_levels_and_the_gc_increase_of_the_pods_serving_a_digest() -> None:
    now = [0.0]
    store = ReportStore(window_seconds=600, clock=lambda: now[0])
    other = POD_A.__class__(namespace="shop", name="web-b", uid="uid-b", service_account="web")
    for pod, rss in ((POD_A, 300 * MiB), (other, 100 * MiB)):
        stats = sdk_stats(primary=D2, draining=D1, rss=rss, gc_ns=1_000_000, wall_ns=10**9)
        store.record(pod, report_of(stats), targets=None)
    now[0] = 30.0
    since = 15.0
    for pod, rss in ((POD_A, 320 * MiB), (other, 100 * MiB)):
        stats = sdk_stats(primary=D2, draining=D1, rss=rss, gc_ns=4_000_000, wall_ns=31 * 10**9)
        store.record(pod, report_of(stats), targets=None)
    summary = store.summary("shop", "pricing", since=since, assigned=lambda _: True)
    served = summary.versions[D2]
    assert (served.process_pods, served.rss_bytes, served.threads) == (2, 420 * MiB, 24)
    assert (served.gc_pause_ns, served.wall_ns) == (2 * 3_000_000, 2 * 30 * 10**9)
    drained = summary.versions[D1]
    assert drained.process_pods == 0 and drained.rss_bytes == 0  # the draining version's
    # The wire form between a replica and the operator keeps them; replicas add up.
    read = summary_from_json(summary.to_json())
    assert read.versions[D2] == served
    assert combine([read, read]).versions[D2].rss_bytes == 840 * MiB


def test_a_replica_older_than_the_process_figures_reports_none() -> None:
    wire = {"versions": {D1: {"calls": 3, "errors": 0, "latencyBuckets": [], "pods": 1}}}
    assert summary_from_json(wire).versions[D1] == Counters(calls=3, pods=1)


def test_an_sdk_without_the_process_figures_counts_no_process_pod() -> None:
    store = ReportStore()
    stats = {"versions": [{"digest": D2, "role": "primary", "calls": 1, "errors": 0}]}
    store.record(POD_A, report_of(stats), targets=None)
    counters = store.summary("shop", "pricing", since=None, assigned=lambda _: True).versions[D2]
    assert counters.process_pods == 0 and counters.pods == 1
