"""Leaked retired versions go from the SDK's stats into the agent's report, bounded."""

from __future__ import annotations

import weakref
from typing import Any

import pytest

from logicbundle import contract
from logicbundle.distributor import Report
from logicbundle.sdk import _leaks
from tests.agent.conftest import App, FakeDistributor, MakeAgent, Packed, wait_for

D1 = "sha256:" + "1" * 64


def test_the_report_names_each_leaked_version_and_its_referrers(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1 = bundles["pricing-v1"]
    distributor.add(v1)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    marker = _leaks.Marker(D1)
    leaked = _leaks.Watch(
        digest=D1,
        package="lb_pricing_old",
        marker=weakref.ref(marker),
        released=0.0,
        due=0.0,
        leaked=True,
        referrers=(_leaks.Referrer("module-global", "a global of module app.plugins"),),
    )
    monkeypatch.setattr(app.host, "leaks", lambda: [leaked])
    agent = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1 in the app")

    def leaks_in(report: dict[str, Any]) -> bool:
        return bool(report["bundles"].get("pricing", {}).get("leaks"))

    report = distributor.wait_report(leaks_in)
    assert report["bundles"]["pricing"]["leaks"] == [
        {
            "digest": D1,
            "referrers": [{"kind": "module-global", "detail": "a global of module app.plugins"}],
        }
    ]
    Report.model_validate(report)  # the distributor's own schema accepts it
    monkeypatch.setattr(app.host, "leaks", list)
    assert "leaks" not in agent.report()["bundles"]["pricing"]  # none: no field at all


def test_hostile_leaks_from_the_application_are_bounded_and_cleaned() -> None:
    raw: list[Any] = [
        "not an object",
        {"digest": "sha256:short", "referrers": []},
        {"digest": D1, "referrers": "nope"},
        {"digest": D1, "referrers": []},  # the same digest twice
        {
            "digest": "sha256:" + "2" * 64,
            "referrers": [
                {"kind": "thread", "detail": "x" * 10_000},
                {"kind": "<script>", "detail": "bell\x07 and \u2603 and \n"},
                {"kind": "closure", "detail": 42},
                {"kind": "other", "detail": "fourth, dropped"},
            ],
        },
        *({"digest": f"sha256:{i:064x}", "referrers": []} for i in range(100, 200)),
    ]
    out = contract.leaks_of(raw)
    assert len(out) == contract.MAX_LEAKS_PER_BUNDLE
    assert out[0] == {"digest": D1, "referrers": []}
    referrers = out[1]["referrers"]
    assert [r["kind"] for r in referrers] == ["thread", "other", "closure"]
    assert referrers[0]["detail"] == "x" * contract.MAX_LEAK_DETAIL
    assert referrers[1]["detail"] == "bell? and ? and ?"
    assert referrers[2]["detail"] == ""
    assert contract.leaks_of({"digest": D1}) == []
    assert contract.leaks_of(None) == []
    # What the agent keeps, the distributor accepts.
    Report.model_validate({"bundles": {"pricing": {"active": None, "leaks": out}}})
