"""/healthz and /metrics answer without a token; the metrics name what operators watch."""

from __future__ import annotations

from tests.distributor.conftest import Harness, run


def test_healthz_and_metrics_need_no_token_and_list_the_distributor_metrics(
    harness: Harness,
) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            assert await (await client.get("/healthz")).text() == "ok"
            await client.get("/v1/targets")
            resp = await client.get("/metrics")
            assert resp.status == 200
            text = await resp.text()
        for name in (
            "logicbundle_distributor_long_polls_open 0.0",
            'logicbundle_distributor_auth_failures_total{reason="missing"} 1.0',
            "logicbundle_distributor_blob_bytes_served_total",
            "logicbundle_distributor_reports_received",
        ):
            assert name in text, name

    run(scenario)
