"""The AdmissionReview endpoint over HTTP, and the TLS certificate swapped under a live server."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from logicbundle import contract
from logicbundle.api import names
from logicbundle.webhook import (
    CertificateManager,
    ServingTls,
    WebhookServer,
    create_app,
    has_agent,
)
from tests.webhook._fixtures import NS, OPTED_IN, SETTINGS, apply_patch, logic_bundle, pod
from tests.webhook.test_certificates import FakeClock, FakeStore


class FakeView:
    def __init__(
        self,
        bundles: Sequence[Mapping[str, Any]] = (),
        error: Exception | None = None,
        block: asyncio.Event | None = None,
    ) -> None:
        self.bundles = bundles
        self.error = error
        self.block = block

    async def logic_bundles(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        assert namespace == NS
        if self.block is not None:
            await self.block.wait()
        if self.error is not None:
            raise self.error
        return self.bundles


NOW_MS = 1_712_345_678_901


def _bundle_body(**kwargs: Any) -> dict[str, Any]:
    return logic_bundle(**kwargs).model_dump(mode="json", by_alias=True, exclude_none=True)


def _review(
    obj: Mapping[str, Any], *, operation: str = "CREATE", kind: str = "Pod"
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "req-1",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NS,
            "operation": operation,
            "object": dict(obj),
        },
    }


def _serve(
    view: FakeView,
    scenario: Callable[[TestClient[Any, Any]], Awaitable[None]],
    deadline: float = 4.0,
    clock: Callable[[], int] = lambda: NOW_MS,
) -> None:
    async def main() -> None:
        app = create_app(view=view, settings=SETTINGS, deadline=deadline, clock=clock)
        async with TestClient(TestServer(app)) as client:
            await scenario(client)

    asyncio.run(main())


def _patch_of(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(json.loads(base64.b64decode(response["patch"])))


def test_an_opted_in_pod_is_answered_with_an_allowed_json_patch() -> None:
    target = pod(labels=OPTED_IN)
    view = FakeView(bundles=[_bundle_body()])

    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/mutate-pods", json=_review(target))
        assert resp.status == 200
        body = await resp.json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        response = body["response"]
        assert response["uid"] == "req-1"
        assert response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        patched = apply_patch(target, _patch_of(response))
        assert has_agent(patched)
        annotations = patched["metadata"]["annotations"]
        assert annotations[names.ANNOTATION_COHORT_KEY] == "uid/req-1"
        assert not any(key.startswith("logicbundle.io/target.") for key in annotations)

    _serve(view, scenario)


def test_the_pod_records_the_instant_the_webhook_admitted_it() -> None:
    bundle = _bundle_body(candidate="sha256:" + "c" * 64, stages=[{"name": "all", "all": True}])
    view = FakeView(bundles=[bundle])
    instants = iter([NOW_MS, NOW_MS + 2500])

    async def scenario(client: TestClient[Any, Any]) -> None:
        for expected in (NOW_MS, NOW_MS + 2500):
            resp = await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))
            response = (await resp.json())["response"]
            annotations = apply_patch(pod(labels=OPTED_IN), _patch_of(response))["metadata"][
                "annotations"
            ]
            assert annotations[contract.ANNOTATION_ADMITTED_AT] == str(expected)

    _serve(view, scenario, clock=lambda: next(instants))


def test_an_already_injected_pod_is_allowed_without_a_patch() -> None:
    view = FakeView(bundles=[_bundle_body()])

    async def scenario(client: TestClient[Any, Any]) -> None:
        first = await (await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))).json()
        patched = apply_patch(pod(labels=OPTED_IN), _patch_of(first["response"]))
        again = await (await client.post("/mutate-pods", json=_review(patched))).json()
        assert again["response"] == {"uid": "req-1", "allowed": True}

    _serve(view, scenario)


def test_a_pod_nothing_selects_is_allowed_with_a_warning() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))).json()
        assert "no LogicBundle" in body["response"]["warnings"][0]

    _serve(FakeView(), scenario)


def test_an_internal_error_admits_the_pod_unchanged_with_a_warning() -> None:
    view = FakeView(error=RuntimeError("the API server is gone"))

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))).json()
        response = body["response"]
        assert response["allowed"] is True
        assert "patch" not in response
        assert "internal error" in response["warnings"][0]

    _serve(view, scenario)


def test_a_slow_cluster_view_admits_the_pod_unchanged_before_the_api_server_gives_up() -> None:
    view = FakeView(block=asyncio.Event())  # never set: the listing hangs

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))).json()
        assert body["response"]["allowed"] is True
        assert "timed out" in body["response"]["warnings"][0]

    _serve(view, scenario, deadline=0.01)


def test_other_operations_and_kinds_pass_through() -> None:
    view = FakeView(error=AssertionError("must not be called"))

    async def scenario(client: TestClient[Any, Any]) -> None:
        for review in (
            _review(pod(labels=OPTED_IN), operation="UPDATE"),
            _review({}, kind="Service"),
        ):
            body = await (await client.post("/mutate-pods", json=review)).json()
            assert body["response"] == {"uid": "req-1", "allowed": True}

    _serve(view, scenario)


def test_a_malformed_review_is_a_bad_request() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.post("/mutate-pods", data=b"not json")
        assert resp.status == 400
        resp = await client.post("/mutate-pods", json={"request": {}})
        assert resp.status == 400

    _serve(FakeView(), scenario)


def test_an_invalid_logic_bundle_is_skipped_not_fatal() -> None:
    broken = {
        "apiVersion": "logicbundle.io/v1alpha1",
        "kind": "LogicBundle",
        "metadata": {"name": "x"},
    }
    view = FakeView(bundles=[broken, _bundle_body()])

    async def scenario(client: TestClient[Any, Any]) -> None:
        body = await (await client.post("/mutate-pods", json=_review(pod(labels=OPTED_IN)))).json()
        patched = apply_patch(pod(labels=OPTED_IN), _patch_of(body["response"]))
        assert has_agent(patched)

    _serve(view, scenario)


def test_healthz_answers() -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/healthz")
        assert resp.status == 200

    _serve(FakeView(), scenario)


def test_the_server_serves_a_renewed_certificate_without_a_restart() -> None:
    # The client checks validity against the real clock: issue the first
    # certificate two days "ago", so that "now" is past two thirds of its life.
    clock = FakeClock()
    real_now = dt.datetime.now(dt.UTC)
    clock.now = real_now - dt.timedelta(days=2, hours=1)
    tls = ServingTls()
    manager = CertificateManager(
        store=FakeStore(),
        hosts=("127.0.0.1",),
        clock=clock,
        ca_validity=dt.timedelta(days=30),
        cert_validity=dt.timedelta(days=3),
        on_change=tls.load,
    )
    first = manager.ensure()

    async def peer_serial(port: int, ca: bytes) -> int:
        """The serial of the certificate a fresh TLS connection sees (verified against ``ca``)."""
        context = ssl.create_default_context(cadata=ca.decode())
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
            await writer.wait_closed()
        return x509.load_der_x509_certificate(der).serial_number

    async def main() -> None:
        app = create_app(view=FakeView(), settings=SETTINGS)
        async with WebhookServer(app, tls=tls, host="127.0.0.1") as server:
            assert (
                await peer_serial(server.port, first.ca_bundle) == first.certificate.serial_number
            )
            clock.now = real_now
            second = manager.ensure()
            assert second.certificate.serial_number != first.certificate.serial_number
            assert tls.serial == second.certificate.serial_number
            assert (
                await peer_serial(server.port, second.ca_bundle) == second.certificate.serial_number
            )

    asyncio.run(main())


def _idle_tls_client(port: int, ca: bytes) -> tuple[ssl.SSLSocket, socket.socket]:
    """A keep-alive client after one request; and a raw view of its TCP connection.

    Like the API server, it keeps the idle connection open and never answers a
    close_notify on its own.
    """
    context = ssl.create_default_context(cadata=ca.decode())
    tls = context.wrap_socket(
        socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1"
    )
    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        chunk = tls.recv(4096)
        assert chunk, "the server closed before answering"
        answer += chunk
    return tls, socket.socket(fileno=os.dup(tls.fileno()))


def _closed_within(raw: socket.socket, seconds: float) -> bool:
    """Whether the peer closes the TCP connection (FIN or RST) before the deadline."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        raw.settimeout(left)
        try:
            if not raw.recv(65536):  # TLS records (close_notify) come first, then EOF
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_stopping_the_server_closes_an_idle_tls_connection_the_client_keeps_open() -> None:
    # A regression guard: aiohttp's cleanup sends close_notify and waits for the peer's
    # answer, so a connection the API server kept idle outlived stop(), and with the
    # event loop closed right after, its socket was left to the garbage collector.
    tls = ServingTls()
    manager = CertificateManager(store=FakeStore(), hosts=("127.0.0.1",), on_change=tls.load)
    ca = manager.ensure().ca_bundle

    async def main() -> None:
        server = WebhookServer(
            create_app(view=FakeView(), settings=SETTINGS), tls=tls, host="127.0.0.1"
        )
        await server.start()
        client, raw = await asyncio.to_thread(_idle_tls_client, server.port, ca)
        try:
            await server.stop()
            assert await asyncio.to_thread(_closed_within, raw, 5.0)
        finally:
            raw.close()
            client.close()

    asyncio.run(main())
