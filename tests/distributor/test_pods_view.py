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


def test_the_proxied_read_goes_through_the_real_kubernetes_client() -> None:
    """The path through the API server's pod proxy, with the installed kubernetes client
    (its raw-call API changed between versions: this failed only on a real cluster)."""
    import http.server
    import json
    import threading

    from kubernetes import client as k8s

    from logicbundle.cli._pods import PodsUnavailableError

    seen: list[tuple[str, Any]] = []
    answers = [(200, {"pods": [{"pod": "web-a", "active": D2, "healthy": True}]}), (403, {})]

    class ApiServer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers))  # case-insensitive lookups
            status, body = answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ApiServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = k8s.Configuration(host=f"http://127.0.0.1:{server.server_port}")
        config.api_key = {"BearerToken": "user-token"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        with k8s.ApiClient(config) as api:
            path = "/api/v1/namespaces/lb/pods/http:dist-0:8080/proxy"
            rows = _pods.ask_proxied(
                api, path, token="reader-token", namespace="shop", bundle="pricing"
            )
            assert rows == [{"pod": "web-a", "active": D2, "healthy": True}]
            request, headers = seen[0]
            assert request == f"{path}/v1/pods?bundleNamespace=shop&bundle=pricing"
            assert headers.get(TOKEN_HEADER) == "reader-token"
            assert headers.get("Authorization") == "Bearer user-token"
            try:
                _pods.ask_proxied(api, path, token="t", namespace="shop", bundle="pricing")
            except PodsUnavailableError as exc:
                assert "HTTP 403" in str(exc) and "pods/proxy" in str(exc)
            else:
                raise AssertionError("a 403 from the proxy must fail the command")
    finally:
        server.shutdown()
        server.server_close()
