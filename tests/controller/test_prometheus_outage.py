"""A Prometheus outage mid-stage, through whole reconciles: never a promotion, and on once back.

Issue 11, defect 1 and the fault matrix's "Prometheus stopped mid-stage" row, at
the controller: ``reconcile`` -> ``_analysis_step`` (a real HTTP server speaking
the Prometheus query API, failing for one or both digests) -> the rollout core ->
the one status write.  The stage holds with ``Reconciling`` saying which query
failed, and advances at the first passing measurement once the queries answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from logicbundle.api import conditions
from logicbundle.api.conditions import find_condition
from logicbundle.api.v1alpha1 import LogicBundleSpec, LogicBundleStatus
from logicbundle.controller._reconcile import Runtime, reconcile
from tests.controller.test_prometheus_analysis import FakePrometheus
from tests.controller.test_reconcile import (  # noqa: F401 - the runtime fixture
    FakeKube,
    _agents_report,
    _body,
    _in_flight_at_internal,
    _merge,
    _snapshots,
    _source_checked_just_now,
    runtime,
)
from tests.rollout._fixtures import D1, D2, INTERNAL, T0, make_spec


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus(0.01)
    yield server
    server.close()


def _spec(address: str) -> LogicBundleSpec:
    return make_spec(
        stages=[{**INTERNAL}, {"name": "everyone", "all": True}],
        analysis={
            "provider": "prometheus",
            "prometheus": {"address": address, "timeout": "2s"},
            "interval": "1s",
            "metrics": [
                {
                    "name": "error-ratio",
                    "query": 'errors{digest="{{digest}}"}',
                    "maxRatioToStable": 1.5,
                }
            ],
        },
    )


class Driver:
    """Reconciles one bundle again and again, reading back what the last one wrote."""

    def __init__(self, rt: Runtime, kube: FakeKube, spec: LogicBundleSpec) -> None:
        self.rt, self.kube, self.spec = rt, kube, spec
        self.status, self.reports = _in_flight_at_internal()
        kube.spec = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        _source_checked_just_now(rt)
        _agents_report(rt, self.reports, self.status)

    def reconcile(self, now: datetime) -> LogicBundleStatus:
        self.kube.calls.clear()
        asyncio.run(
            reconcile(
                self.rt,
                body=_body(self.spec, self.status),
                pods=_snapshots(self.reports),
                now=now,
            )
        )
        written = [call for kind, (call, *_) in self.kube.calls if kind == "status"]
        if written:
            dumped = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)
            self.status = LogicBundleStatus.model_validate(_merge(dumped, written[-1]))
        return self.status


def _reconciling(status: LogicBundleStatus) -> tuple[str, str]:
    found = find_condition(status.conditions, conditions.RECONCILING)
    assert found is not None
    return found.reason, found.message


@pytest.mark.parametrize("down", ["stable", "both"])
def test_prometheus_down_mid_stage_never_promotes_and_the_stage_proceeds_once_it_is_back(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
    prometheus: FakePrometheus,
    down: str,
) -> None:
    rt, kube, events = runtime
    driver = Driver(rt, kube, _spec(prometheus.address))
    prometheus.failing = {D1} if down == "stable" else {D1, D2}
    now = T0 + timedelta(seconds=3)
    for _ in range(12):
        status = driver.reconcile(now)
        assert (status.candidate_digest, status.stage) == (D2, "internal")
        assert status.stable_digest == D1
        now += timedelta(seconds=2)
    reason, message = _reconciling(status)
    assert reason == conditions.INSUFFICIENT_DATA
    assert "query failed" in message and "503" in message
    assert status.analysis is not None and status.analysis.verdict == "NoData"
    assert status.analysis.no_data_since is not None
    assert not [e for e in events if e[1] in ("StageAdvanced", "RolloutSucceeded")]

    prometheus.failing = set()
    status = driver.reconcile(now)
    assert status.stage == "everyone", _reconciling(status)
    advanced = [e for e in events if e[1] == "StageAdvanced"]
    assert advanced and "error-ratio 0.01 (n=" in advanced[0][2]


def test_the_figures_of_a_verdict_reach_the_analysis_gauges(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
    prometheus: FakePrometheus,
) -> None:
    rt, kube, _ = runtime
    driver = Driver(rt, kube, _spec(prometheus.address))
    driver.reconcile(T0 + timedelta(seconds=3))
    registry = rt.metrics.registry

    def sample(name: str, **labels: Any) -> float | None:
        return registry.get_sample_value(
            name, {"namespace": "shop", "bundle": "rules", "metric": "error-ratio", **labels}
        )

    assert sample("logicbundle_analysis_value", cohort="candidate") == 0.01
    assert sample("logicbundle_analysis_value", cohort="stable") == 0.01
    assert sample("logicbundle_analysis_ratio_to_stable") == 1.0
    assert sample("logicbundle_analysis_threshold", threshold="maxRatioToStable") == 1.5
    assert sample("logicbundle_analysis_metric_verdict", verdict="Passed") == 1.0
    # The stable query fails: its value is gone (no data is no series, not 0).
    prometheus.failing = {D1}
    driver.reconcile(T0 + timedelta(seconds=5))
    assert sample("logicbundle_analysis_value", cohort="stable") is None
    assert sample("logicbundle_analysis_ratio_to_stable") is None
    assert sample("logicbundle_analysis_metric_verdict", verdict="NoData") == 1.0
    assert sample("logicbundle_analysis_metric_verdict", verdict="Passed") == 0.0
    rt.forget(("shop", "rules"))
    assert sample("logicbundle_analysis_value", cohort="candidate") is None
