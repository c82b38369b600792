"""The agent's probe server answers probes, scrapers and curl as http.server did."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from logicbundle.agent._http import MAX_HEADERS, ProbeServer


def _route(path: str) -> tuple[int, str, str]:
    if path == "/healthz":
        return 200, "text/plain; charset=utf-8", "ok\n"
    return 404, "text/plain; charset=utf-8", "not found\n"


@pytest.fixture
def server() -> Iterator[ProbeServer]:
    server = ProbeServer(("127.0.0.1", 0), _route)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _raw(server: ProbeServer, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes the connection."""
    with socket.socket() as conn:
        conn.settimeout(10)
        conn.connect(server.server_address)
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_two_requests_share_one_kept_alive_connection_and_the_query_is_ignored(
    server: ProbeServer,
) -> None:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request("GET", "/healthz?verbose=1")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b"ok\n")
        assert first.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert first.getheader("Connection") is None
        sock = conn.sock
        conn.request("GET", "/nowhere")
        second = conn.getresponse()
        assert (second.status, second.read()) == (404, b"not found\n")
        assert conn.sock is sock
    finally:
        conn.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_a_client_that_asks_to_close_or_speaks_http_1_0_gets_one_answer_and_the_end(
    server: ProbeServer, request_bytes: bytes
) -> None:
    answer = _raw(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\nok\n")
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"501 Not Implemented"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"501 Not Implemented"),
        (b"GET /healthz\r\n\r\n", b"400 Bad Request"),
        (b"hello\r\n\r\n", b"400 Bad Request"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"400 Bad Request"),
        (
            b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n",
            b"431 Request Header Fields Too Large",
        ),
    ],
    ids=["head", "post", "no-version", "garbage", "long-line", "too-many-headers"],
)
def test_anything_but_a_well_formed_get_is_refused_and_the_connection_closed(
    server: ProbeServer, request_bytes: bytes, status: bytes
) -> None:
    answer = _raw(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n")
    assert b"\r\nConnection: close\r\n" in answer
