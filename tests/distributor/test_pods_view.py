"""``GET /v1/pods``: each pod's latest report, for ``logicbundle status --pods`` only.

What a pod runs is not written on the pod any more; this is where a person
sees it.  Only the operator's and the status readers' ServiceAccounts are
answered, and a token bound to no pod never reaches an agent endpoint.
"""

from __future__ import annotations

from typing import Any

from logicbundle.cli import _pods
from logicbundle.distributor import TOKEN_HEADER, BundleReport, LastError, Report
from tests.distributor.conftest import AUTH_A, POD_A, POD_B, READER, Harness, run

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
READER_AUTH = {"Authorization": "Bearer token-reader"}
QUERY = {"bundleNamespace": "shop", "bundle": "pricing"}


def _report(harness: Harness) -> None:
    harness.reports.record(
        POD_A, Report(bundles={"pricing": BundleReport(active=D2, healthy=True)}), targets=None
    )
    harness.reports.record(
        POD_B,
        Report(
            bundles={
                "pricing": BundleReport(
                    active=D1,
                    healthy=True,
                    target=D2,
                    last_error=LastError(reason="HealthCheckFailed", message="500", digest=D2),
                )
            }
        ),
        targets=None,
    )


def test_a_status_reader_gets_every_reporting_pod(harness: Harness) -> None:
    harness.viewers = frozenset({(READER.namespace, READER.service_account)})
    _report(harness)

    async def scenario() -> Any:
        async with harness.client() as client:
            response = await client.get("/v1/pods", params=QUERY, headers=READER_AUTH)
            return response.status, await response.json()

    status, body = run(scenario)
    assert status == 200
    rows = {row["pod"]: row for row in body["pods"]}
    assert rows["web-a"]["active"] == D2 and rows["web-a"]["healthy"] is True
    assert rows["web-b"]["lastError"] == {
        "reason": "HealthCheckFailed",
        "message": "500",
        "digest": D2,
    }


def test_the_token_may_travel_in_our_header_through_the_api_servers_proxy(
    harness: Harness,
) -> None:
    harness.viewers = frozenset({(READER.namespace, READER.service_account)})
    _report(harness)

    async def scenario() -> int:
        async with harness.client() as client:
            response = await client.get(
                "/v1/pods", params=QUERY, headers={TOKEN_HEADER: "token-reader"}
            )
            return response.status

    assert run(scenario) == 200


def test_a_pod_or_an_unknown_account_is_refused(harness: Harness) -> None:
    _report(harness)

    async def scenario() -> tuple[int, int]:
        async with harness.client() as client:
            as_pod = await client.get("/v1/pods", params=QUERY, headers=AUTH_A)
            as_stranger = await client.get("/v1/pods", params=QUERY, headers=READER_AUTH)
            return as_pod.status, as_stranger.status

    assert run(scenario) == (403, 403)


def test_a_token_bound_to_no_pod_never_reaches_an_agent_endpoint(harness: Harness) -> None:
    harness.viewers = frozenset({(READER.namespace, READER.service_account)})

    async def scenario() -> list[tuple[int, str]]:
        answers = []
        async with harness.client() as client:
            for method, path in (
                ("GET", "/v1/targets"),
                ("GET", f"/v1/manifests/{D1}"),
                ("GET", f"/v1/blobs/{D1}"),
                ("POST", "/v1/reports"),
            ):
                response = await client.request(
                    method,
                    path,
                    headers={**READER_AUTH, "Content-Type": "application/json"},
                    data=b"{}",
                )
                body = await response.json()
                answers.append((response.status, body["error"]["message"]))
        return answers

    for status, message in run(scenario):
        assert status == 401 and "not bound to a pod" in message


def test_missing_parameters_are_a_bad_request(harness: Harness) -> None:
    harness.viewers = frozenset({(READER.namespace, READER.service_account)})

    async def scenario() -> int:
        async with harness.client() as client:
            response = await client.get(
                "/v1/pods", params={"bundle": "pricing"}, headers=READER_AUTH
            )
            return response.status

    assert run(scenario) == 400


def test_the_command_merges_the_replicas_newest_report_first() -> None:
    old = {"pod": "web-a", "active": D1, "healthy": True, "reportedSecondsAgo": 40}
    new = {"pod": "web-a", "active": D2, "healthy": True, "reportedSecondsAgo": 2}
    other = {
        "pod": "web-b",
        "active": D1,
        "healthy": False,
        "reportedSecondsAgo": 1,
        "lastError": {"reason": "SwapFailed", "message": "disk full"},
    }
    rows = _pods.merge([[old, other], [new], [{"pod": ""}, {"no": "pod"}]])
    assert [(r.pod, r.active) for r in rows] == [("web-a", D2), ("web-b", D1)]
    text = _pods.render(rows, assigned=3)
    assert "222222222222" in text and "SwapFailed: disk full" in text
    assert "1 more selected pod(s) have not reported" in text
    assert _pods.render([]) == "  no pod has reported for this bundle"


def test_a_credential_in_a_distributor_url_never_reaches_a_message() -> None:
    assert _pods._where("https://user:secret@example.com:8443/x?token=abc") == (
        "https://example.com:8443/x"
    )
