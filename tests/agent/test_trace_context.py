"""The agent reports its swap with the trace context of the target that caused it."""

from __future__ import annotations

from pathlib import Path

from logicbundle.agent._agent import _target_from_json
from logicbundle.distributor import Report
from tests.agent.conftest import App, FakeDistributor, MakeAgent, Packed, wait_for

TRACEPARENT = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"


def test_a_target_keeps_a_valid_traceparent_and_drops_a_malformed_one() -> None:
    digest = "sha256:" + "1" * 64
    assert _target_from_json({"digest": digest, "traceparent": TRACEPARENT}).traceparent == (
        TRACEPARENT
    )
    assert _target_from_json({"digest": digest, "traceparent": "00-x"}).traceparent is None
    assert _target_from_json({"digest": digest}).traceparent is None


def test_the_swap_a_traced_target_causes_is_reported_with_its_traceparent(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    distributor.add(v1)
    distributor.add(v2)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1 in the app")
    distributor.set_targets({"pricing": {"digest": v2.digest, "traceparent": TRACEPARENT}})
    report = distributor.wait_report(lambda r: r["bundles"]["pricing"]["active"] == v2.digest)
    swap = report["bundles"]["pricing"]["lastSwap"]
    assert swap["traceparent"] == TRACEPARENT
    assert swap["to"] == v2.digest
    parsed = Report.model_validate(report)  # what the distributor accepts
    assert parsed.bundles["pricing"].last_swap is not None
    assert parsed.bundles["pricing"].last_swap.traceparent == TRACEPARENT
