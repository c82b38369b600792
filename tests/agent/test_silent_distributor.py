"""A distributor that accepts connections and never answers (issue 11's fault row).

The agent must not hang on it: bytes come from the registry as soon as the
long-poll has found the distributor down, and SIGTERM ends the agent within
its stop deadline even with requests still hanging.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.agent._agent import STOP_DEADLINE
from tests.agent.conftest import MakeAgent, publish, stable_state, unused_port, wait_for, write_pod

DIGEST = "sha256:" + "ab" * 32


class SilentServer:
    """Accepts connections, reads each request line, and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[str] = []
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as stream:
            try:
                line = stream.readline(4096).decode("latin-1").strip()
            except (OSError, ValueError):
                return
        with self.lock:
            self.requests.append(line)

    def seen(self, prefix: str) -> bool:
        with self.lock:
            return any(r.startswith(prefix) for r in self.requests)

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.connections:
                conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_the_agent_stops_within_its_deadline_while_requests_hang(
    silent: SilentServer, make_agent: MakeAgent
) -> None:
    agent = make_agent(distributor=silent.url, report_interval=0.05)
    # Proof that both a long-poll and a report are hanging on the silent server.
    wait_for(lambda: silent.seen("GET /v1/targets"), "the long-poll sent")
    wait_for(lambda: silent.seen("POST /v1/reports"), "a report sent")
    start = time.monotonic()
    agent.stop()
    assert time.monotonic() - start < STOP_DEADLINE + 1.0


def test_bytes_come_from_the_registry_once_the_distributor_is_found_down(
    silent: SilentServer, make_agent: MakeAgent, root: Path
) -> None:
    # A registry that refuses at once: the fallback's failure is the proof it was asked.
    registry = f"127.0.0.1:{unused_port()}/shop/pricing"
    agent = make_agent(
        distributor=silent.url,
        bundle={"source": registry, "insecure": True},
        long_poll_wait=0.5,
    )
    # The first long-poll times out (10 s) before the file decides: the fast path is down.
    wait_for(lambda: agent.metrics.fast_path_up == 0 and agent._fast_decided.is_set(), "down")
    write_pod(root)
    publish(root, stable_state(DIGEST))
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_error and s,
        "the registry fallback's failure",
    )
    assert status.last_error is not None
    assert "registry" in status.last_error.message
    # The distributor was never asked for the bytes (that request would hang 30 s).
    assert not silent.seen("GET /v1/manifests/")
