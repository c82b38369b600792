"""The agent socket: line-delimited JSON requests and replies."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import AgentListener, LogicHost, serve
from tests.sdk.conftest import SIMPLE, WriteBundle, simple


class Agent:
    """A minimal agent: one connection, one reply line per request."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")

    def send_raw(self, line: bytes) -> None:
        self.sock.sendall(line)

    def read(self) -> dict[str, Any]:
        line = self.reader.readline()
        assert line, "the application closed the connection"
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, **request: Any) -> dict[str, Any]:
        self.send_raw(json.dumps(request).encode() + b"\n")
        return self.read()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def listener(host: LogicHost, tmp_path: Path) -> Iterator[AgentListener]:
    with serve(host, path=tmp_path / "sdk.sock") as listener:
        yield listener


@pytest.fixture
def agent(listener: AgentListener) -> Iterator[Agent]:
    agent = Agent(listener.path)
    yield agent
    agent.close()


def test_activate_is_acked_with_the_digest_and_timings(
    agent: Agent, host: LogicHost, write_bundle: WriteBundle
) -> None:
    one = write_bundle(simple("one"))
    reply = agent.ask(op="activate", id=7, bundle="calc", digest=one.digest, path=str(one.path))
    assert reply["id"] == 7
    assert reply["ok"] is True
    assert reply["digest"] == one.digest
    assert reply["candidate"] is None
    assert {"load", "selftest", "swap", "total"} <= set(reply["timings"])
    assert host.function("ident")() == "one"


def test_a_split_is_activated_over_the_socket(
    agent: Agent, host: LogicHost, write_bundle: WriteBundle
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    reply = agent.ask(
        op="activate",
        id=1,
        bundle="calc",
        digest=stable.digest,
        path=str(stable.path),
        split={"candidate": candidate.digest, "weight": 5},
    )
    assert (reply["ok"], reply["candidate"], reply["weight"]) == (True, candidate.digest, 5.0)
    assert host.candidate_digest == candidate.digest


def test_a_refused_activation_is_acked_with_the_reason_and_what_still_serves(
    agent: Agent, write_bundle: WriteBundle
) -> None:
    good = write_bundle(simple("good"))
    agent.ask(op="activate", id=1, digest=good.digest, path=str(good.path))
    source = SIMPLE.format(name="bad").replace(
        "logic = Logic()",
        "    def selftest(self):\n        raise RuntimeError('no')\nlogic = Logic()",
    )
    bad = write_bundle({"logic.py": source})
    reply = agent.ask(op="activate", id=2, bundle="calc", digest=bad.digest, path=str(bad.path))
    assert reply["ok"] is False
    assert reply["reason"] == "SelfTestFailed"
    assert reply["digest"] == bad.digest
    assert reply["active"] == good.digest
    assert "RuntimeError: no" in reply["error"]


def test_stats_and_release_round_trip(agent: Agent, write_bundle: WriteBundle) -> None:
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    agent.ask(op="activate", id=1, digest=one.digest, path=str(one.path))
    reply = agent.ask(op="release", id=2, bundle="calc", digest=one.digest)
    assert (reply["ok"], reply["reason"]) == (False, "InUse")
    agent.ask(op="activate", id=3, digest=two.digest, path=str(two.path))
    reply = agent.ask(op="release", id=4, bundle="calc", digest=one.digest, timeout=10)
    assert (reply["ok"], reply["released"], reply["digest"]) == (True, True, one.digest)
    stats = agent.ask(op="stats", id=5)
    report = stats["bundles"]["calc"]
    assert report["active"] == two.digest
    assert {v["digest"]: v["role"] for v in report["versions"]} == {
        two.digest: "primary",
        one.digest: "released",
    }
    ping = agent.ask(op="ping", id=6)
    assert ping["ok"] is True
    assert ping["bundles"] == {"calc": {"active": two.digest, "candidate": None}}


def test_a_subscribed_agent_is_told_when_an_old_version_is_released(
    agent: Agent, write_bundle: WriteBundle
) -> None:
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    agent.ask(op="activate", id=1, digest=one.digest, path=str(one.path))
    assert agent.ask(op="subscribe", id=2) == {"id": 2, "ok": True}
    agent.send_raw(
        json.dumps(
            {"op": "activate", "id": 3, "digest": two.digest, "path": str(two.path)}
        ).encode()
        + b"\n"
    )
    lines = [agent.read() for _ in range(3)]  # the reply and two events, in some order
    events = {line.get("event"): line for line in lines}
    assert events[None]["id"] == 3
    assert events["activated"]["digest"] == two.digest
    assert events["released"]["digest"] == one.digest
    assert events["released"]["bundle"] == "calc"


@pytest.mark.parametrize(
    ("line", "reason", "message"),
    [
        (b"this is not json\n", "BadRequest", "not JSON"),
        (b"[1, 2]\n", "BadRequest", "JSON object"),
        (b'{"op": "explode", "id": 1}\n', "BadRequest", "unknown op"),
        (b'{"op": "activate", "id": 1}\n', "BadRequest", "digest"),
        (b'{"op": "activate", "id": 1, "digest": "nope"}\n', "BadRequest", "not a digest"),
        (
            b'{"op": "activate", "id": 1, "bundle": "other", "digest": "sha256:ab"}\n',
            "BadRequest",
            "not hosted",
        ),
        (
            b'{"op": "activate", "id": 1, "digest": "sha256:ab", "path": "/etc"}\n',
            "BadRequest",
            "outside the bundle",
        ),
        (
            b'{"op": "activate", "id": 1, "digest": "sha256:ab", "split": {"candidate": '
            b'"sha256:cd", "weight": 500}}\n',
            "BadRequest",
            "0-100",
        ),
        (
            b'{"op": "activate", "id": 1, "digest": "sha256:ab"}\n',
            "ActivationRefused",
            "names no directory",
        ),
        (
            b'{"op": "release", "id": 1, "digest": "sha256:ab", "timeout": -1}\n',
            "BadRequest",
            "timeout",
        ),
    ],
)
def test_malformed_requests_get_an_error_reply_and_the_connection_stays_usable(
    agent: Agent, line: bytes, reason: str, message: str
) -> None:
    agent.send_raw(line)
    reply = agent.read()
    assert reply["ok"] is False
    assert reply["reason"] == reason
    assert message in reply["error"]
    assert agent.ask(op="ping", id=99)["ok"] is True


def test_an_over_long_line_is_refused_and_the_connection_closed(
    agent: Agent, listener: AgentListener
) -> None:
    agent.send_raw(b"x" * (70 * 1024))
    reply = agent.read()
    assert (reply["ok"], reply["reason"]) == (False, "BadRequest")
    assert agent.reader.readline() == b""
    fresh = Agent(listener.path)
    assert fresh.ask(op="ping", id=1)["ok"] is True
    fresh.close()


def test_closing_the_listener_removes_the_socket_file(host: LogicHost, tmp_path: Path) -> None:
    path = tmp_path / "sdk.sock"
    listener = serve(host, path=path)
    assert path.is_socket()
    listener.close()
    assert not path.exists()


def test_a_stale_socket_file_from_a_previous_process_is_replaced(
    host: LogicHost, tmp_path: Path
) -> None:
    path = tmp_path / "sdk.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with serve(host, path=path):
        agent = Agent(path)
        assert agent.ask(op="ping", id=1)["ok"] is True
        agent.close()
