"""The application processes' health per version cohort, as Prometheus series (issue 12, part 3).

Every reconcile turns the distributors' per-digest figures into
``logicbundle_version_*`` gauges labelled with the cohort (stable, candidate)
and the digest: at most two digests per bundle, a digest's series gone when
pods stop being told to run it, and all of them when a replica does not
answer.  A bundle at rest is refreshed between reconciles.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from logicbundle.api import conditions
from logicbundle.api.conditions import find_condition
from logicbundle.controller import _handlers
from logicbundle.controller._handlers import ControllerSettings, Memo
from logicbundle.controller._health import refresh_health
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._reconcile import Runtime, reconcile
from logicbundle.distributor import Counters
from logicbundle.distributor._models import BundleReport, PodIdentity, Report, VersionCounters
from tests.controller.test_prometheus_outage import Driver
from tests.controller.test_reconcile import (  # noqa: F401 - the runtime fixture
    SPEC,
    FakeKube,
    _agents_report,
    _body,
    _snapshots,
    _source_checked_just_now,
    runtime,
)
from tests.rollout._fixtures import BUNDLE, D1, D2, INTERNAL, NS, T0, installed, make_spec
from tests.rollout._fixtures import pods as pod_reports

MiB = 2**20
SERIES = (
    "logicbundle_version_process_pods",
    "logicbundle_version_resident_memory_bytes",
    "logicbundle_version_threads",
    "logicbundle_version_gc_pause_ratio",
)


def _value(metrics: OperatorMetrics, name: str, cohort: str, digest: str) -> float | None:
    labels = {"namespace": NS, "bundle": BUNDLE, "cohort": cohort, "digest": digest}
    return metrics.registry.get_sample_value(name, labels)


def _exported(metrics: OperatorMetrics) -> set[tuple[str, str, str]]:
    """(series, cohort, digest) of every version health sample in the registry."""
    return {
        (s.name, s.labels["cohort"], s.labels["digest"])
        for family in metrics.registry.collect()
        if family.name in SERIES
        for s in family.samples
    }


def _report_process(
    rt: Runtime, pod: str, *, digest: str, rss_mib: int, threads: int, seconds: int
) -> None:
    """``pod``'s agent reports its process serving ``digest``, ``seconds`` after it started.

    The process has spent 1 ms of every second paused by the garbage collector.
    """
    rt.agents.reports.record(
        PodIdentity(namespace=NS, name=pod, uid=f"uid-{pod}", service_account="default"),
        Report(
            bundles={
                BUNDLE: BundleReport(
                    active=digest,
                    healthy=True,
                    versions={
                        digest: VersionCounters(
                            calls=0,
                            errors=0,
                            rss_bytes=rss_mib * MiB,
                            threads=threads,
                            gc_pause_ns=seconds * 1_000_000,
                            wall_ns=seconds * 10**9,
                        )
                    },
                )
            }
        ),
        targets=None,
    )


HEALTH = {
    "interval": "1s",
    "metrics": [
        {"name": "threads", "builtin": "threadCount", "maxRatioToStable": 2, "minSamples": 1}
    ],
}


def test_a_candidate_grown_in_threads_shows_per_cohort_and_its_series_go_with_the_rollback(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
) -> None:
    rt, kube, _ = runtime
    spec = make_spec(stages=[{**INTERNAL}, {"name": "everyone", "all": True}], analysis=HEALTH)
    driver = Driver(rt, kube, spec)
    # p000 (internal) serves the candidate, p001 the stable digest; each reports twice (the
    # GC pause time is judged by its increase).
    for seconds in (1, 2):
        _report_process(rt, "p000", digest=D2, rss_mib=300, threads=40, seconds=seconds)
        _report_process(rt, "p001", digest=D1, rss_mib=100, threads=8, seconds=seconds)

    status = driver.reconcile(T0 + timedelta(seconds=3))

    stalled = find_condition(status.conditions, conditions.STALLED)
    assert stalled is not None and stalled.reason == conditions.ROLLED_BACK, status.conditions
    assert "threads: 40 is 5x stable 8" in stalled.message
    # Rolled back in this very reconcile: the status holds the candidate, but no pod is told
    # to run it any more, and only the stable digest is left.
    assert status.candidate_digest == D2 and status.stage is None
    assert _exported(rt.metrics) == {(name, "stable", D1) for name in SERIES}
    assert _value(rt.metrics, "logicbundle_version_threads", "stable", D1) == 8
    assert _value(rt.metrics, "logicbundle_version_resident_memory_bytes", "stable", D1) == (
        100 * MiB
    )
    assert _value(rt.metrics, "logicbundle_version_process_pods", "stable", D1) == 1


def test_both_cohorts_are_exported_while_the_candidate_is_in_flight(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
) -> None:
    rt, kube, _ = runtime
    held = {**INTERNAL, "pause": "1h"}
    spec = make_spec(stages=[held, {"name": "everyone", "all": True}], skip_analysis=True)
    driver = Driver(rt, kube, spec)
    for seconds in (1, 2):
        _report_process(rt, "p000", digest=D2, rss_mib=300, threads=40, seconds=seconds)
        _report_process(rt, "p001", digest=D1, rss_mib=100, threads=8, seconds=seconds)

    status = driver.reconcile(T0 + timedelta(seconds=3))

    assert (status.stage, status.candidate_digest) == ("internal", D2)
    assert _exported(rt.metrics) == {
        (name, cohort, digest) for name in SERIES for cohort, digest in _COHORTS
    }
    assert _value(rt.metrics, "logicbundle_version_threads", "candidate", D2) == 40
    assert _value(rt.metrics, "logicbundle_version_threads", "stable", D1) == 8
    assert _value(rt.metrics, "logicbundle_version_resident_memory_bytes", "candidate", D2) == (
        300 * MiB
    )
    assert _value(rt.metrics, "logicbundle_version_gc_pause_ratio", "candidate", D2) == 0.001


_COHORTS = (("stable", D1), ("candidate", D2))


def _counters(*, pods: int, rss_mib: int, threads: int, gc_ms: int = 30) -> Counters:
    return Counters(
        pods=pods,
        process_pods=pods,
        rss_bytes=pods * rss_mib * MiB,
        threads=pods * threads,
        gc_pause_ns=pods * gc_ms * 10**6,
        wall_ns=pods * 60 * 10**9,
    )


def test_the_figures_are_means_per_pod_and_the_gc_pause_a_fraction_of_wall_time() -> None:
    metrics = OperatorMetrics()
    versions = {
        D1: _counters(pods=4, rss_mib=100, threads=10),
        D2: _counters(pods=2, rss_mib=250, threads=45, gc_ms=600),
    }

    metrics.observe_versions(namespace=NS, name=BUNDLE, stable=D1, candidate=D2, versions=versions)

    assert _value(metrics, "logicbundle_version_process_pods", "stable", D1) == 4
    assert _value(metrics, "logicbundle_version_resident_memory_bytes", "stable", D1) == 100 * MiB
    assert _value(metrics, "logicbundle_version_resident_memory_bytes", "candidate", D2) == (
        250 * MiB
    )
    assert _value(metrics, "logicbundle_version_threads", "candidate", D2) == 45
    assert _value(metrics, "logicbundle_version_gc_pause_ratio", "stable", D1) == 0.0005
    assert _value(metrics, "logicbundle_version_gc_pause_ratio", "candidate", D2) == 0.01


def test_a_digest_that_leaves_the_status_takes_its_series_with_it() -> None:
    metrics = OperatorMetrics()
    versions = {
        D1: _counters(pods=4, rss_mib=100, threads=10),
        D2: _counters(pods=2, rss_mib=100, threads=10),
    }
    metrics.observe_versions(namespace=NS, name=BUNDLE, stable=D1, candidate=D2, versions=versions)
    # Promoted: the candidate is the stable digest now, the old stable digest is gone.
    metrics.observe_versions(
        namespace=NS, name=BUNDLE, stable=D2, candidate=None, versions=versions
    )

    assert _exported(metrics) == {(name, "stable", D2) for name in SERIES}


def test_no_data_is_an_absent_series_and_a_silent_replica_removes_them_all() -> None:
    metrics = OperatorMetrics()
    # No pod reports the candidate's process yet: a pod count of 0, no made-up figures.
    versions = {D1: _counters(pods=4, rss_mib=100, threads=10)}
    metrics.observe_versions(namespace=NS, name=BUNDLE, stable=D1, candidate=D2, versions=versions)
    assert _value(metrics, "logicbundle_version_process_pods", "candidate", D2) == 0
    assert _value(metrics, "logicbundle_version_threads", "candidate", D2) is None
    assert ("logicbundle_version_threads", "stable", D1) in _exported(metrics)

    metrics.observe_versions(namespace=NS, name=BUNDLE, stable=D1, candidate=D2, versions=None)
    assert _exported(metrics) == set()


def test_a_deleted_bundle_forgets_its_version_series() -> None:
    metrics = OperatorMetrics()
    versions = {D1: _counters(pods=4, rss_mib=100, threads=10)}
    metrics.observe_versions(
        namespace=NS, name=BUNDLE, stable=D1, candidate=None, versions=versions
    )
    metrics.observe_versions(
        namespace=NS, name="other", stable=D1, candidate=None, versions=versions
    )

    metrics.forget(namespace=NS, name=BUNDLE)

    remaining = {
        s.labels["bundle"]
        for family in metrics.registry.collect()
        if family.name in SERIES
        for s in family.samples
    }
    assert remaining == {"other"}


# -- a bundle at rest, between reconciles ------------------------------------------------------


def _at_rest(rt: Runtime, kube: FakeKube) -> None:
    """Two pods on D1, nothing in flight, reconciled once with p000 at 8 threads."""
    status, reports = installed(SPEC, pod_reports(2))
    kube.spec = SPEC.model_dump(mode="json", by_alias=True, exclude_none=True)
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    _report_process(rt, "p000", digest=D1, rss_mib=100, threads=8, seconds=1)
    asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))
    kube.calls.clear()


def test_a_bundle_at_rest_has_its_series_refreshed_between_reconciles_without_a_write(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
) -> None:
    rt, kube, _ = runtime
    _at_rest(rt, kube)
    assert _value(rt.metrics, "logicbundle_version_threads", "stable", D1) == 8
    _report_process(rt, "p000", digest=D1, rss_mib=100, threads=20, seconds=2)

    asyncio.run(refresh_health(rt, namespace=NS, name=BUNDLE))

    assert _value(rt.metrics, "logicbundle_version_threads", "stable", D1) == 20
    assert kube.calls == []


def test_a_rollout_in_flight_is_refreshed_by_its_reconciles_only(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
) -> None:
    rt, kube, _ = runtime
    held = {**INTERNAL, "pause": "1h"}
    spec = make_spec(stages=[held, {"name": "everyone", "all": True}], skip_analysis=True)
    driver = Driver(rt, kube, spec)
    _report_process(rt, "p000", digest=D2, rss_mib=300, threads=40, seconds=1)
    driver.reconcile(T0 + timedelta(seconds=3))
    _report_process(rt, "p000", digest=D2, rss_mib=300, threads=50, seconds=2)

    asyncio.run(refresh_health(rt, namespace=NS, name=BUNDLE))

    assert _value(rt.metrics, "logicbundle_version_threads", "candidate", D2) == 40


def test_a_bundle_never_reconciled_is_not_refreshed(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
) -> None:
    rt, _, _ = runtime
    asyncio.run(refresh_health(rt, namespace=NS, name=BUNDLE))
    assert _exported(rt.metrics) == set()


class _NeverStopped:
    """A kopf.DaemonStopped that never fires."""

    def __bool__(self) -> bool:
        return False

    async def wait(self) -> None:
        await asyncio.Event().wait()


def test_a_resting_daemon_refreshes_every_health_refresh_until_woken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=object())  # type: ignore[arg-type]
    refreshed: list[tuple[str, str]] = []

    async def main() -> None:
        wake = asyncio.Event()

        async def refresh(_rt: object, *, namespace: str, name: str) -> None:
            refreshed.append((namespace, name))
            if len(refreshed) == 3:
                wake.set()  # a report: the daemon reconciles at once

        monkeypatch.setattr(_handlers, "refresh_health", refresh)
        monkeypatch.setattr(_handlers, "HEALTH_REFRESH", 0.01)
        await asyncio.wait_for(
            _handlers._rest(memo, (NS, BUNDLE), wake, _NeverStopped(), 3600),  # type: ignore[arg-type]
            timeout=30,
        )

    asyncio.run(main())
    assert refreshed == [(NS, BUNDLE)] * 3


def test_a_rest_shorter_than_health_refresh_refreshes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=object())  # type: ignore[arg-type]
    refreshed: list[str] = []

    async def refresh(_rt: object, *, namespace: str, name: str) -> None:
        refreshed.append(name)

    monkeypatch.setattr(_handlers, "refresh_health", refresh)
    asyncio.run(_handlers._rest(memo, (NS, BUNDLE), asyncio.Event(), _NeverStopped(), 0.01))  # type: ignore[arg-type]
    assert refreshed == []
