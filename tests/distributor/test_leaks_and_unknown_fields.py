"""Leaked versions in reports and summaries; fields of a newer agent ignored, not refused."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from logicbundle import contract
from logicbundle.distributor import ReportStore
from logicbundle.distributor._models import LeakReferrerKind, Report, parse_report
from logicbundle.distributor._summary import (
    BundleSummary,
    Leak,
    SummaryError,
    combine,
    summary_from_json,
)
from tests.distributor.conftest import AUTH_A, POD_A, Harness, run

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
OLD = "sha256:" + "0" * 64


def _leak(digest: str = OLD, kind: str = "module-global", detail: str = "app.plugins") -> Any:
    return {"digest": digest, "referrers": [{"kind": kind, "detail": detail}]}


def _report(leaks: list[Any], **extra: Any) -> dict[str, Any]:
    bundle = {"active": D1, "healthy": True, "leaks": leaks, **extra}
    return {"bundles": {"pricing": bundle}}


def test_the_model_knows_every_referrer_kind_the_contract_names() -> None:
    assert LeakReferrerKind.__args__ == contract.LEAK_REFERRER_KINDS  # type: ignore[attr-defined]


def test_a_report_with_leaks_is_read_with_its_digests_and_referrers() -> None:
    report = Report.model_validate(_report([_leak(), _leak(D2, "thread", "worker-1")]))
    leaks = report.bundles["pricing"].leaks
    assert [(x.digest, x.referrers[0].kind) for x in leaks] == [
        (OLD, "module-global"),
        (D2, "thread"),
    ]
    assert Report.model_validate(_report([])).bundles["pricing"].leaks == []
    assert (
        Report.model_validate({"bundles": {"pricing": {"active": D1}}}).bundles["pricing"].leaks
        == []
    )


@pytest.mark.parametrize(
    ("leaks", "field"),
    [
        ([_leak("sha256:short")], "digest"),
        ([_leak(kind="a-kind-we-never-defined")], "kind"),
        ([_leak(detail="x" * (contract.MAX_LEAK_DETAIL + 1))], "detail"),
        ([_leak(detail="a\nnewline")], "detail"),
        ([_leak(detail="\u202eright-to-left")], "detail"),
        ([_leak(f"sha256:{i:064x}") for i in range(contract.MAX_LEAKS_PER_BUNDLE + 1)], "leaks"),
        ([{"digest": OLD, "referrers": [{"kind": "other"}] * 4}], "referrers"),
        ([{"digest": OLD, "referrers": "module-global"}], "referrers"),
        ("not a list", "leaks"),
    ],
)
def test_hostile_or_oversized_leaks_are_refused_naming_the_field(leaks: Any, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Report.model_validate_json(json.dumps(_report(leaks)))
    assert field in str(caught.value)


def test_unknown_fields_are_ignored_and_named_while_known_ones_stay_strict() -> None:
    body = _report(
        [{**_leak(), "aliveSeconds": 75.2}],
        futureGauge={"x": 1},
        versions={D1: {"calls": 1, "errors": 0, "heapBytes": 5}},
    )
    body["fromTheFuture"] = True
    report, count, named = parse_report(json.dumps(body))
    assert report.bundles["pricing"].active == D1
    assert count == 4
    assert set(named) == {
        "Report.fromTheFuture",
        "BundleReport.futureGauge",
        "VersionCounters.heapBytes",
        "VersionLeak.aliveSeconds",
    }
    assert "futureGauge" not in report.model_dump(by_alias=True)["bundles"]["pricing"]
    # A known field still has to be right, whatever else the report carries.
    with pytest.raises(ValidationError):
        parse_report(json.dumps({**body, "bundles": {"pricing": {"active": "latest", "x": 1}}}))
    assert parse_report(json.dumps(_report([])))[1:] == (0, ())


def test_a_newer_agents_report_is_accepted_counted_and_its_unknown_fields_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = _report([_leak()], newField=1)

    async def scenario() -> None:
        async with harness.client() as client:
            for _ in range(3):
                resp = await client.post("/v1/reports", json=body, headers=AUTH_A)
                assert resp.status == 204
        stored = harness.reports.latest("shop", "web-a")
        assert stored is not None and stored.report.bundles["pricing"].leaks[0].digest == OLD

    with caplog.at_level(logging.WARNING, logger="logicbundle.distributor"):
        run(scenario)
    assert harness.metric("logicbundle_distributor_report_unknown_fields_total") == 3
    logged = [r.getMessage() for r in caplog.records if "BundleReport.newField" in r.getMessage()]
    assert len(logged) == 1, logged


def test_a_summary_counts_the_pods_holding_each_leaked_digest_and_the_kinds() -> None:
    store = ReportStore()
    other = POD_A.__class__(namespace="shop", name="web-b", uid="uid-b", service_account="web")
    store.record(POD_A, Report.model_validate(_report([_leak()])), targets=None)
    store.record(
        other,
        Report.model_validate(_report([_leak(kind="thread", detail="t"), _leak(D2, "closure")])),
        targets=None,
    )
    summary = store.summary("shop", "pricing", since=None, assigned=lambda _: True)
    assert summary.leaks[OLD] == Leak(
        pods=2, kinds=("module-global", "thread"), detail="module-global: app.plugins"
    )
    assert summary.leaks[D2].pods == 1
    # Only the pods the bundle's rule assigns count.
    mine = store.summary("shop", "pricing", since=None, assigned=lambda pod: pod == "web-a")
    assert set(mine.leaks) == {OLD}
    # The wire form between replica and leader keeps them, and replicas add up.
    read = summary_from_json(json.loads(json.dumps(summary.to_json())))
    assert read.leaks == summary.leaks
    both = combine([read, mine])
    assert both.leaks[OLD].pods == 3 and both.leaks[D2].pods == 1


def test_a_replica_older_than_the_leaks_reports_none_and_a_malformed_one_is_refused() -> None:
    assert summary_from_json({"reporting": 1}).leaks == {}
    assert BundleSummary().to_json()["leaks"] == {}
    for bad in (
        {"leaks": {OLD: {"pods": 1, "kinds": ["<script>"]}}},
        {"leaks": {OLD: {"pods": -1}}},
        {"leaks": {"latest": {"pods": 1}}},
        {"leaks": {OLD: {"pods": 1, "detail": 5}}},
        {"leaks": {OLD: "module-global"}},
    ):
        with pytest.raises(SummaryError):
            summary_from_json(bad)
