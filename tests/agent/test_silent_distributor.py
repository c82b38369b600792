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

from logicbundle.agent import Target
from logicbundle.agent._agent import STOP_DEADLINE
from tests.agent.conftest import (
    FakeDistributor,
    MakeAgent,
    publish,
    stable_state,
    unused_port,
    wait_for,
    write_pod,
)

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


def test_a_state_published_while_the_long_poll_hung_is_followed_once_it_times_out(
    make_agent: MakeAgent, root: Path, distributor: FakeDistributor
) -> None:
    """Found on the real node: a long-poll on a connection that went dead (the Service's
    endpoints gone) keeps the fast path nominally up until its timeout. A state file that
    changed meanwhile is newer than anything the distributor said, so it is followed."""
    seen: list[tuple[str, str, Target | None]] = []
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    distributor.set_targets({"pricing": {"digest": d1}})
    write_pod(root)
    publish(root, stable_state(d1))
    make_agent(
        distributor=distributor.url,
        bundle={"source": f"127.0.0.1:{unused_port()}/shop/pricing", "insecure": True},
        on_target=lambda *a: seen.append(a),
        long_poll_wait=0.3,
    )
    wait_for(lambda: ("fast", "pricing", Target(digest=d1)) in seen, "the fast path's target")
    with distributor.cond:
        distributor.hang = True  # the next long-poll never answers
    publish(root, stable_state(d2))  # the kubelet projects the new state meanwhile
    wait_for(
        lambda: seen[-1] == ("slow", "pricing", Target(digest=d2)),
        "the newer published state, once the hung long-poll timed out",
        timeout=30,
    )


@pytest.mark.parametrize(
    ("file_changed", "confirmed", "followed"),
    [
        (10.0, 5.0, True),  # the state changed after the distributor's last answer: newer
        (5.0, 10.0, False),  # the kubelet's copy lags what the distributor said: older
        (5.0, 0.0, True),  # the distributor never answered: the file is all there is
    ],
)
def test_when_the_distributor_is_gone_only_a_newer_state_is_followed(
    make_agent: MakeAgent, file_changed: float, confirmed: float, followed: bool
) -> None:
    d1, d2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    seen: list[tuple[str, str, Target | None]] = []
    agent = make_agent(start=False, on_target=lambda *a: seen.append(a))
    with agent._lock:
        agent._effective["pricing"] = Target(digest=d2)  # what the distributor said
        agent._fast = None  # and it is gone
        agent._fast_confirmed_at = confirmed
        agent._slow = {"pricing": Target(digest=d1)}
        agent._slow_changed_at["pricing"] = file_changed
    agent._dispatch("slow")
    assert (seen == [("slow", "pricing", Target(digest=d1))]) is followed


@pytest.mark.parametrize(
    ("fast_up", "told", "file", "wins"),
    [
        (False, 10, 12, "file"),  # the distributor is gone and the file is newer
        (False, 10, 8, "kept"),  # gone, and the file lags what it said
        (True, 10, 12, "file"),  # up but behind (or its connection dead): newest wins
        (True, 10, 9, "fast"),  # up and newer than the lagging file
    ],
)
def test_the_newest_published_state_wins_whichever_path_brought_it(
    make_agent: MakeAgent, fast_up: bool, told: int, file: int, wins: str
) -> None:
    d1, d2, d3 = ("sha256:" + c * 64 for c in "123")
    seen: list[tuple[str, str, Target | None]] = []
    agent = make_agent(start=False, on_target=lambda *a: seen.append(a))
    with agent._lock:
        agent._effective["pricing"] = Target(digest=d1, revision=told)
        agent._fast_revision["pricing"] = told
        agent._fast = {"pricing": Target(digest=d3, revision=told)} if fast_up else None
        agent._slow = {"pricing": Target(digest=d2, revision=file)}
    agent._dispatch("fast" if fast_up else "slow")
    expected = {"file": Target(digest=d2), "fast": Target(digest=d3), "kept": None}[wins]
    assert (seen[-1][2] if seen else None) == expected
