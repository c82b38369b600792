"""Reports are validated, stored per pod, and their active digests handed to the operator once."""

from __future__ import annotations

import json
from typing import Any

from logicbundle.distributor import BundleTarget, ReportStore, VersionCounters
from logicbundle.distributor._models import BundleReport, Report
from tests.distributor.conftest import AUTH_A, POD_A, Harness, run

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def report(active: str | None = D1, **extra: Any) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "active": active,
        "healthy": True,
        "lastSwap": {"to": D1, "from": None, "outcome": "activated", "totalMs": 1.5},
        "versions": {D1: {"calls": 10, "errors": 1, "latencyBuckets": [0, 0, 10]}},
    }
    bundle.update(extra)
    return {"bundles": {"pricing": bundle}, "agent": {"version": "0.1.0"}}


def test_a_valid_report_is_stored_and_its_active_digest_handed_over_once(
    harness: Harness,
) -> None:
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            for _ in range(2):
                resp = await client.post("/v1/reports", json=report(), headers=AUTH_A)
                assert resp.status == 204
        stored = harness.reports.latest("shop", "web-a")
        assert stored is not None
        assert stored.report.bundles["pricing"].last_swap is not None
        assert stored.report.bundles["pricing"].last_swap.total_ms == 1.5
        assert len(harness.activities) == 1
        activity = harness.activities[0]
        assert (activity.name, activity.uid, dict(activity.active)) == (
            "web-a",
            "uid-a",
            {"pricing": D1},
        )
        assert (activity.ready, activity.ready_changed) == (True, True)
        accepted = {"outcome": "accepted"}
        assert harness.metric("logicbundle_distributor_reports_received_total", accepted) == 2

    run(scenario)


def test_a_failed_hand_over_is_retried_by_the_next_report(harness: Harness) -> None:
    harness.fail_activity = True

    async def scenario() -> None:
        async with harness.client() as client:
            assert (await client.post("/v1/reports", json=report(), headers=AUTH_A)).status == 204
            harness.fail_activity = False
            assert (await client.post("/v1/reports", json=report(), headers=AUTH_A)).status == 204
        assert len(harness.activities) == 1
        assert harness.activities[0].ready is None  # the assignment is unknown

    run(scenario)


def test_garbage_is_refused_with_400_and_a_message_naming_the_field(harness: Harness) -> None:
    cases: list[tuple[bytes, str]] = [
        (b"not json", "body"),
        (json.dumps({"bundles": {"pricing": {"active": "latest"}}}).encode(), "active"),
        (json.dumps(report(versions={D1: {"calls": -1, "errors": 0}})).encode(), "calls"),
        (json.dumps({"bundles": {"Not_A_Name": {"active": None}}}).encode(), "bundles"),
    ]

    async def scenario() -> None:
        async with harness.client() as client:
            for body, field in cases:
                resp = await client.post(
                    "/v1/reports",
                    data=body,
                    headers={**AUTH_A, "Content-Type": "application/json"},
                )
                assert resp.status == 400, body
                error = (await resp.json())["error"]
                assert error["reason"] == "InvalidReport"
                assert field in error["message"], (field, error["message"])
            wrong_type = await client.post("/v1/reports", data=b"x", headers=AUTH_A)
            assert wrong_type.status == 415
        assert harness.reports.latest("shop", "web-a") is None
        rejected = {"outcome": "rejected"}
        assert harness.metric("logicbundle_distributor_reports_received_total", rejected) == 5

    run(scenario)


def test_a_report_over_the_size_limit_is_refused_with_413(harness: Harness) -> None:
    harness.max_report_bytes = 1024

    async def scenario() -> None:
        async with harness.client() as client:
            big = report(lastError={"reason": "Boom", "message": "x" * 1000})
            big["padding"] = "y" * 2000
            resp = await client.post("/v1/reports", json=big, headers=AUTH_A)
            assert resp.status == 413

    run(scenario)


def test_readiness_waits_for_every_assigned_bundle(harness: Harness) -> None:
    harness.targets.set_targets(
        "shop",
        "web-a",
        {"pricing": BundleTarget(digest=D1), "routing": BundleTarget(digest=D2)},
        uid="uid-a",
    )

    async def scenario() -> None:
        async with harness.client() as client:
            await client.post("/v1/reports", json=report(), headers=AUTH_A)
            both = report()
            both["bundles"]["routing"] = {"active": D2}
            await client.post("/v1/reports", json=both, headers=AUTH_A)
        first, second = harness.activities
        assert (first.ready, "routing" in first.message) == (False, True)
        assert (second.ready, second.ready_changed) == (True, True)

    run(scenario)


def test_the_counter_window_sums_increases_over_pods_and_survives_a_restart() -> None:
    now = [0.0]
    store = ReportStore(window_seconds=60, clock=lambda: now[0])
    other = POD_A.__class__(namespace="shop", name="web-b", uid="uid-b", service_account="web")

    def send(identity: Any, calls: int, errors: int) -> None:
        counters = VersionCounters(calls=calls, errors=errors, latency_buckets=[calls])
        bundle = BundleReport(active=D1, versions={D1: counters})
        store.record(identity, Report(bundles={"pricing": bundle}), targets=None)

    send(POD_A, 100, 1)
    send(other, 50, 0)
    now[0] = 10
    send(POD_A, 150, 2)
    send(other, 5, 5)  # restarted: counts from zero again
    window = store.version_window("pricing", D1)
    assert (window.calls, window.errors, window.pods) == (55, 6, 2)
    assert window.latency_buckets == (55,)
    now[0] = 65
    assert store.version_window("pricing", D1).pods == 2
    now[0] = 100
    assert store.version_window("pricing", D1).pods == 0


def test_a_bundles_summary_counts_the_pods_that_report_it_and_follows_a_dropped_bundle() -> None:
    store = ReportStore()
    other = POD_A.__class__(namespace="shop", name="web-b", uid="uid-b", service_account="web")
    elsewhere = POD_A.__class__(namespace="lab", name="web-c", uid="uid-c", service_account="web")
    both = {
        "pricing": BundleReport(active=D1, healthy=True),
        "rules": BundleReport(active=D1, healthy=True),
    }
    store.record(POD_A, Report(bundles=both), targets=None)
    store.record(
        other, Report(bundles={"rules": BundleReport(active=D1, healthy=True)}), targets=None
    )
    store.record(
        elsewhere, Report(bundles={"pricing": BundleReport(active=D1, healthy=True)}), targets=None
    )

    def active(namespace: str, bundle: str) -> dict[str, int]:
        summary = store.summary(namespace, bundle, since=None, assigned=lambda _: True)
        return dict(summary.active)

    assert active("shop", "pricing") == {D1: 1}
    assert active("shop", "rules") == {D1: 2}
    assert [p["pod"] for p in store.pods("shop", "rules", assigned=lambda _: True)] == [
        POD_A.name,
        "web-b",
    ]
    # The pod's next report no longer names "pricing": it leaves that bundle's count.
    store.record(
        POD_A, Report(bundles={"rules": BundleReport(active=D1, healthy=True)}), targets=None
    )
    assert active("shop", "pricing") == {}
    assert active("lab", "pricing") == {D1: 1}
    store.forget("shop", "web-b")
    assert active("shop", "rules") == {D1: 1}


def test_series_of_a_pod_that_stopped_reporting_are_swept_without_a_report_touching_them() -> None:
    now = [0.0]
    store = ReportStore(window_seconds=60, clock=lambda: now[0])
    other = POD_A.__class__(namespace="shop", name="web-b", uid="uid-b", service_account="web")
    counters = VersionCounters(calls=1, errors=0)
    store.record(
        POD_A,
        Report(bundles={"pricing": BundleReport(active=D1, versions={D1: counters})}),
        targets=None,
    )
    now[0] = 100  # POD_A's series is older than the window; web-b reports another bundle
    store.record(
        other,
        Report(bundles={"rules": BundleReport(active=D1, versions={D1: counters})}),
        targets=None,
    )
    assert ("pricing", D1) not in store._series
