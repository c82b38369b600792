"""Prometheus stopped mid-stage: the stage never passes on missing data, and goes on once back.

Issue 11's fault matrix, row "Prometheus stopped mid-stage", against the real
operator, real agents and apps, and a real Prometheus scraping them: the
candidate's stage holds with ``Reconciling=True`` (``InsufficientData``, the
failed query named) for as long as Prometheus is down, nothing is promoted,
and the rollout finishes once the same Prometheus is started again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import KeyPair, condition, events, get_bundle, wait_condition
from e2e.harness.proc import wait_for
from e2e.harness.services import Prometheus, Registry
from e2e.suites.test_rollout import (  # noqa: F401 - fixtures
    INTERNAL,
    digests,
    fleet,
    install,
    key,
    move_to,
    operator,
    ref,
)

ERRORS = (
    'sum(rate(logicbundle_sdk_call_errors_total{bundle="{{bundle}}", digest="{{digest}}"}[15s]))'
    ' / sum(rate(logicbundle_sdk_calls_total{bundle="{{bundle}}", digest="{{digest}}"}[15s]))'
)
PAUSE = 15
"""Seconds the internal stage holds: Prometheus is stopped well inside it."""


@pytest.fixture
def restarted() -> Iterator[list[Prometheus]]:
    """Prometheus instances this test starts again itself; stopped after it."""
    started: list[Prometheus] = []
    yield started
    for prometheus in started:
        prometheus.stop()


def _stage(cluster: Cluster, namespace: str) -> tuple[str | None, str | None, str | None]:
    status = get_bundle(cluster, namespace, "pricing").get("status") or {}
    return status.get("candidateDigest"), status.get("stage"), status.get("stableDigest")


def test_prometheus_stopped_mid_stage_never_promotes_and_the_rollout_goes_on_once_it_is_back(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
    restarted: list[Prometheus],
) -> None:
    manifest = install(cluster, fleet, registry, key, digests)
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "apps",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{p.app_port}" for p in fleet.pods]}
                    ],
                }
            ],
        }
    )
    manifest["spec"]["rollout"] = {
        "stages": [
            {"name": "internal", "internal": {"matchLabels": INTERNAL}, "pause": f"{PAUSE}s"},
            {"name": "everyone", "all": True},
        ],
        "analysis": {
            "provider": "prometheus",
            "interval": "2s",
            "prometheus": {"address": prometheus.url, "timeout": "2s"},
            "metrics": [{"name": "error-ratio", "query": ERRORS, "max": 0.05}],
        },
    }
    with Traffic(fleet):
        stable_query = ERRORS.replace("{{bundle}}", "pricing").replace("{{digest}}", digests["v1"])
        wait_for(
            lambda: prometheus.query(stable_query)["result"],
            what="the stable digest's error ratio in Prometheus",
            timeout=60,
        )
        move_to(cluster, fleet, manifest, ref(registry, "v2"))
        wait_for(
            lambda: _stage(cluster, fleet.namespace)[:2] == (digests["v2"], "internal"),
            what="v2 at stage internal",
            timeout=60,
        )
        prometheus.stop()  # mid-stage: the pause runs PAUSE seconds
        # Well past the pause: the stage would have passed had Prometheus answered.
        obj = wait_condition(
            cluster,
            fleet.namespace,
            "pricing",
            "Reconciling",
            "True",
            reason="InsufficientData",
            timeout=PAUSE + 60,
        )
        assert "query failed" in condition(obj, "Reconciling")["message"]  # type: ignore[index]
        first = obj["status"]["analysis"]["measurements"]

        def held_for_more_measurements() -> bool:
            status = get_bundle(cluster, fleet.namespace, "pricing")["status"]
            assert (status.get("candidateDigest"), status.get("stage")) == (
                digests["v2"],
                "internal",
            ), "promoted without data"
            analysis = status["analysis"]
            assert analysis["verdict"] == "NoData"
            return bool(analysis["measurements"] >= first + 4)

        wait_for(held_for_more_measurements, what="4 more measurements, each NoData", timeout=60)
        reasons = [reason for _, reason in events(cluster, fleet.namespace, "pricing")]
        assert "StageAdvanced" not in reasons and "RolloutSucceeded" not in reasons

        restarted.append(prometheus.restart())
        wait_condition(cluster, fleet.namespace, "pricing", "Ready", "True", timeout=120)
    assert _stage(cluster, fleet.namespace) == (None, None, digests["v2"])
    fleet.wait_serving(digests["v2"])
