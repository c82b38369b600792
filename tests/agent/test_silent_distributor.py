"""A distributor that accepts connections and never answers (issue 11's fault row).

The agent must not hang on it: bytes come from the registry as soon as the
long-poll has found the distributor down, SIGTERM ends the agent within
its stop deadline even with requests still hanging, and a distributor that
goes silent mid-run (a real TCP relay that stops answering) leaves the agent
following the published state file to its new target within its timeouts.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.sample_app.bundles import ENTRYPOINT, EXAMPLES_DIR, INTERFACE, VERSIONS
from logicbundle import contract
from logicbundle.agent import Target
from logicbundle.agent._agent import STOP_DEADLINE
from logicbundle.artifact import push_directory
from logicbundle.oci import Reference, RegistryClient
from tests.agent.conftest import (
    App,
    FakeDistributor,
    MakeAgent,
    Packed,
    publish,
    stable_state,
    unused_port,
    wait_for,
    write_pod,
)
from tests.oci.mock_registry import MockRegistry

DIGEST = "sha256:" + "ab" * 32
FETCH_TIMEOUT = 3.0


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


class Relay:
    """A real TCP listener relaying to ``upstream`` until :meth:`silence`; then it answers nothing.

    Once silenced, connections open and new are kept open and read, and never sent a
    byte (what the upstream still answers on them is dropped): a distributor that
    accepts connections and never answers.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.silent = threading.Event()
        self.after_silence: list[str] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def silence(self) -> None:
        self.silent.set()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.append(conn)
            if self.silent.is_set():
                threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()
                continue
            up = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets.append(up)
            threading.Thread(target=self._pump, args=(conn, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as stream:
            try:
                line = stream.readline(4096).decode("latin-1").strip()
            except (OSError, ValueError):
                return
        with self.lock:
            self.after_silence.append(line)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.silent.is_set():
                continue  # neither way: the connection stays open, nothing passes
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()


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


def test_a_distributor_gone_silent_mid_run_the_agent_follows_the_state_file_to_its_target(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    """Issue 11's fault row: the distributor accepts connections and never answers.

    The agent runs v1 through the fast path; the distributor (a real TCP relay) then
    goes silent with the agent's long-poll in flight, and the kubelet projects a newer
    published state naming v2. The agent follows the file, its byte fetch from the
    silent distributor times out and the registry serves v2: the application runs v2
    within the agent's timeouts, without a byte from the distributor after it fell silent.
    """
    v1 = bundles["pricing-v1"]
    distributor.add(v1)
    distributor.set_targets({"pricing": {"digest": v1.digest, "revision": 1}})
    relay = Relay(distributor.url)
    with MockRegistry() as registry, RegistryClient(insecure=True) as client:
        v2 = push_directory(
            client,
            Reference(registry.host, "shop/pricing", "v2"),
            EXAMPLES_DIR / "pricing-v2",
            name="pricing",
            version=VERSIONS["pricing-v2"],
            interface=INTERFACE,
            entrypoint=ENTRYPOINT,
        ).digest
        try:
            agent = make_agent(
                distributor=relay.url,
                bundle={"source": f"{registry.host}/shop/pricing", "insecure": True},
                long_poll_wait=1.0,
            )
            agent._fetcher.timeout = FETCH_TIMEOUT  # the bound on a request for bytes
            write_pod(root)
            publish(root, contract.RolloutState(bundle="pricing", stable=v1.digest, revision=1))
            wait_for(lambda: app.host.active_digest == v1.digest, "v1 through the fast path")
            assert agent.metrics.fast_path_up == 1

            relay.silence()
            publish(root, contract.RolloutState(bundle="pricing", stable=v2, revision=2))
            start = time.monotonic()
            # Bound: the byte request to the silent distributor times out (FETCH_TIMEOUT),
            # then the registry serves it; the long-poll's own timeout is 1 s + 10 s.
            wait_for(
                lambda: app.host.active_digest == v2,
                "v2 from the published state",
                timeout=FETCH_TIMEOUT + 1.0 + 10.0 + 5.0,
            )
            elapsed = time.monotonic() - start
            status = wait_for(
                lambda: (s := agent.statuses()["pricing"]).active == v2 and s, "v2 acked"
            )
            assert status.previous == v1.digest
            assert (root / "pricing" / "current").readlink().name == v2
            # The fast path is found down once its long-poll times out; nothing hangs.
            wait_for(lambda: agent.metrics.fast_path_up == 0, "the fast path found down")
            assert elapsed < FETCH_TIMEOUT + 1.0 + 10.0 + 5.0
        finally:
            relay.close()
