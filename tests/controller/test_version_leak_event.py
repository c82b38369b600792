"""A leaked version the agents report becomes one VersionLeak event per digest, and a gauge."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from logicbundle.controller._reconcile import Runtime, reconcile
from logicbundle.distributor._models import (
    BundleReport,
    LeakReferrer,
    PodIdentity,
    Report,
    VersionCounters,
    VersionLeak,
)
from tests.controller.test_reconcile import (  # noqa: F401 - the fixture
    SPEC,
    FakeKube,
    _agents_report,
    _body,
    _in_flight_at_internal,
    _snapshots,
    _source_checked_just_now,
    runtime,
)
from tests.rollout._fixtures import BUNDLE, NS, T0

OLD = "sha256:" + "0" * 64
OLDER = "sha256:" + "9" * 64

Events = list[tuple[str, str, str]]


def _report_leaks(rt: Runtime, pod: str, active: str, leaks: dict[str, str]) -> None:
    rt.agents.reports.record(
        PodIdentity(namespace=NS, name=pod, uid=f"uid-{pod}", service_account="default"),
        Report(
            bundles={
                BUNDLE: BundleReport(
                    active=active,
                    healthy=True,
                    versions={active: VersionCounters(calls=0, errors=0)},
                    leaks=[
                        VersionLeak(
                            digest=digest,
                            referrers=[
                                LeakReferrer(kind=kind, detail="a global of module app.reg")
                            ],
                        )
                        for digest, kind in leaks.items()
                    ],
                )
            }
        ),
        targets=None,
    )


def _leak_events(events: Events) -> list[str]:
    return [message for type_, reason, message in events if reason == "VersionLeak"]


def test_a_leak_reported_by_two_pods_is_one_warning_naming_digest_referrer_and_pods(
    runtime: tuple[Runtime, FakeKube, Events],  # noqa: F811 - the imported fixture
) -> None:
    rt, kube, events = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    body = _body(SPEC, status)
    body["metadata"]["uid"] = "uid-of-the-bundle"
    kube.spec = body["spec"]  # what the API server echoes back after a status write
    patch_status = kube.patch_status

    def with_uid(*args: Any, **kwargs: Any) -> Mapping[str, Any]:
        written = dict(patch_status(*args, **kwargs))
        written["metadata"] = {**written["metadata"], "uid": "uid-of-the-bundle"}
        return written

    kube.patch_status = with_uid  # type: ignore[method-assign]
    pods = _snapshots(reports)
    for second in (3, 4, 5):  # every reconcile reads the same lasting leak
        for report in reports:
            assert report.active is not None
            _report_leaks(rt, report.pod.name, report.active.digest, {OLD: "module-global"})
        asyncio.run(reconcile(rt, body=body, pods=pods, now=T0 + timedelta(seconds=second)))
    told = _leak_events(events)
    assert len(told) == 1, told
    assert [t for t, r, _ in events if r == "VersionLeak"] == ["Warning"]
    assert OLD in told[0] and "in 2 pod(s)" in told[0] and "module-global" in told[0]
    assert "app.reg" in told[0]
    gauge = rt.metrics.retired_versions_alive.labels(NS, BUNDLE)._value.get()
    assert gauge == 2

    # A second leaked digest is told once more; the first is not told again.
    first = reports[0]
    assert first.active is not None
    _report_leaks(rt, first.pod.name, first.active.digest, {OLD: "thread", OLDER: "thread"})
    asyncio.run(reconcile(rt, body=body, pods=pods, now=T0 + timedelta(seconds=6)))
    told = _leak_events(events)
    assert len(told) == 2 and OLDER in told[1] and "in 1 pod(s)" in told[1], told
    assert rt.metrics.retired_versions_alive.labels(NS, BUNDLE)._value.get() == 3

    rt.forget((NS, BUNDLE))
    assert (NS, BUNDLE) not in rt.metrics.retired_versions_alive._metrics


def test_a_bundle_whose_pods_report_no_leak_gets_no_event_and_a_zero_gauge(
    runtime: tuple[Runtime, FakeKube, Events],  # noqa: F811 - the imported fixture
) -> None:
    rt, _, events = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    asyncio.run(
        reconcile(
            rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0 + timedelta(seconds=3)
        )
    )
    assert _leak_events(events) == []
    assert rt.metrics.retired_versions_alive.labels(NS, BUNDLE)._value.get() == 0


def test_a_recreated_bundle_of_the_same_name_is_told_again() -> None:
    """The memory is keyed by the LogicBundle's uid and the digest, not its name."""
    from logicbundle.controller._leaks import report_leaks
    from logicbundle.controller._memory import BundleMemory
    from logicbundle.controller._metrics import OperatorMetrics
    from logicbundle.distributor import BundleSummary, Leak

    memory = BundleMemory()
    posted: list[str] = []
    summary = BundleSummary(leaks={OLD: Leak(pods=1, kinds=("closure",))})
    for uid in ("first", "first", "second"):
        report_leaks(
            body={"metadata": {"namespace": NS, "name": BUNDLE, "uid": uid}},
            memory=memory,
            summary=summary,
            metrics=OperatorMetrics(),
            post_event=lambda _b, _t, _r, message: posted.append(message),
        )
    assert len(posted) == 2
    # An incomplete view (a replica did not answer) tells nothing.
    report_leaks(
        body={"metadata": {"namespace": NS, "name": BUNDLE, "uid": "third"}},
        memory=memory,
        summary=None,
        metrics=OperatorMetrics(),
        post_event=lambda _b, _t, _r, message: posted.append(message),
    )
    assert len(posted) == 2
