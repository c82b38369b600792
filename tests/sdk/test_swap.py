"""Swapping: one reference, calls keep their version, old versions drain and are let go."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import LogicHost, StateImportError
from tests.sdk.conftest import WriteBundle, write_bundle_at

BUNDLE = "swap"
IFACE: dict[str, Any] = {
    "functions": {
        "pair": {"returns": "tuple[str, str]"},
        "hold": {"params": [{"name": "entered"}, {"name": "gate"}]},
        "count": {},
    }
}

LOGIC = """
from . import other

NAME = {name!r}

class Logic:
    def __init__(self):
        self.torn_down = False
        self.calls = 0

    def pair(self):
        return NAME, other.NAME

    def hold(self, entered, gate):
        entered.set()
        if not gate.wait(10):
            raise TimeoutError("the test never opened the gate")
        return NAME

    def count(self):
        self.calls += 1
        return self.calls

    def teardown(self):
        self.torn_down = True
{hooks}
logic = Logic()
"""

EXPORT_V1 = """
    def export_state(self):
        return 1, {"calls": self.calls}
"""
IMPORT_ANY = """
    def import_state(self, schema, data):
        if schema != 1:
            return False
        self.calls = data["calls"]
"""
IMPORT_V2_ONLY = """
    def import_state(self, schema, data):
        if schema != 2:
            return False
        raise AssertionError("never reached")
"""
IMPORT_RAISES = """
    def import_state(self, schema, data):
        raise KeyError("calls")
"""


def files(name: str, hooks: str = "") -> dict[str, str]:
    return {
        "logic.py": LOGIC.format(name=name, hooks=hooks),
        "other.py": f"NAME = {name!r}\n",
    }


@pytest.fixture
def swap_host(root: Path) -> Iterator[LogicHost]:
    host = LogicHost(name=BUNDLE, interface=IFACE, root=root, drain_timeout=10)
    yield host
    host.close(timeout=10)


@pytest.fixture
def write(root: Path) -> WriteBundle:
    def write(name: str, hooks: str = "") -> Any:
        return write_bundle_at(root, files(name, hooks), bundle=BUNDLE, interface=IFACE)

    return write


def test_no_call_ever_sees_a_mixed_or_older_version_while_many_threads_call_through_swaps(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    versions = [write(f"v{i}") for i in range(8)]
    swap_host.activate(versions[0].digest, versions[0].path)
    pair = swap_host.function("pair")
    stop = threading.Event()
    started = threading.Barrier(5)
    seen: list[list[tuple[str, str]]] = [[] for _ in range(4)]
    targets = [20] * 4
    reached = [threading.Event() for _ in range(4)]
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        started.wait(10)
        mine = seen[index]
        try:
            while not stop.is_set():
                mine.append(pair())
                if len(mine) >= targets[index]:
                    reached[index].set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]

    def wait_targets() -> None:
        for index in range(4):
            # The event only wakes us; the count decides (a thread may set the event
            # for the previous target just after the new one was written).
            deadline = time.monotonic() + 10
            while len(seen[index]) < targets[index]:
                reached[index].clear()
                if len(seen[index]) >= targets[index]:
                    break
                assert reached[index].wait(max(deadline - time.monotonic(), 0)), "stalled"

    for thread in threads:
        thread.start()
    started.wait(10)
    wait_targets()  # every thread made its first 20 calls, on v0
    for version in versions[1:]:
        # The threads keep calling while the swap happens; then each makes 20
        # more calls, which must all be on the new version.
        swap_host.activate(version.digest, version.path)
        for index in range(4):
            targets[index] = len(seen[index]) + 20
        wait_targets()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    order = {f"v{i}": i for i in range(8)}
    for results in seen:
        assert all(a == b for a, b in results), "a call saw modules of two versions"
        indices = [order[a] for a, _ in results]
        assert indices == sorted(indices), "a thread went back to an older version"
    assert {a for results in seen for a, _ in results} == set(order)
    assert sum(v["calls"] for v in swap_host.stats()["versions"]) == sum(len(s) for s in seen)


def test_a_call_in_flight_finishes_on_its_version_and_the_old_version_is_then_released(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    old, new = write("old"), write("new")
    swap_host.activate(old.digest, old.path)
    old_logic = swap_host.versions()[0][3].obj
    hold = swap_host.function("hold")
    entered, gate = threading.Event(), threading.Event()
    result: list[str] = []
    caller = threading.Thread(target=lambda: result.append(hold(entered, gate)))
    caller.start()
    assert entered.wait(10)

    swap_host.activate(new.digest, new.path)
    assert swap_host.function("pair")() == ("new", "new")
    roles = {digest: role for digest, role, _, _ in swap_host.versions()}
    assert roles == {new.digest: "primary", old.digest: "draining"}
    assert not swap_host.wait_released(old.digest, timeout=0.05)
    assert not old_logic.torn_down

    gate.set()
    caller.join(10)
    assert result == ["old"]
    assert swap_host.wait_released(old.digest, timeout=10)
    assert old_logic.torn_down
    released = {v["digest"]: v for v in swap_host.stats()["versions"]}[old.digest]
    assert released["role"] == "released"
    assert released["calls"] == 1
    assert released["forced"] is False


def test_a_serving_digest_is_never_reported_released(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    one = write("one")
    swap_host.activate(one.digest, one.path)
    assert not swap_host.wait_released(one.digest, timeout=0)


def test_a_drain_past_its_deadline_tears_down_anyway_and_says_so(
    root: Path, write: WriteBundle
) -> None:
    host = LogicHost(name=BUNDLE, interface=IFACE, root=root, drain_timeout=0.05)
    old, new = write("old"), write("new")
    host.activate(old.digest, old.path)
    entered, gate = threading.Event(), threading.Event()
    caller = threading.Thread(target=host.function("hold"), args=(entered, gate))
    caller.start()
    assert entered.wait(10)
    released: list[dict[str, Any]] = []
    done = threading.Event()

    def listen(event: dict[str, Any]) -> None:
        if event["event"] == "released":
            released.append(event)
            done.set()

    host.add_listener(listen)
    host.activate(new.digest, new.path)
    assert done.wait(10)
    gate.set()
    caller.join(10)
    assert released[0]["digest"] == old.digest
    assert released[0]["forced"] is True
    assert released[0]["inflight"] == 1
    host.close(timeout=5)


def test_activating_the_serving_digest_again_changes_nothing(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    one = write("one")
    first = swap_host.activate(one.digest, one.path)
    again = swap_host.activate(one.digest, one.path)
    assert first.changed
    assert not again.changed
    assert [role for _, role, _, _ in swap_host.versions()] == ["primary"]


def test_state_moves_to_a_new_version_that_accepts_its_schema(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    old, new = write("old", EXPORT_V1), write("new", IMPORT_ANY)
    swap_host.activate(old.digest, old.path)
    count = swap_host.function("count")
    for _ in range(3):
        count()
    activation = swap_host.activate(new.digest, new.path)
    assert activation.state[new.digest].outcome == "imported"
    assert activation.state[new.digest].schema == 1
    assert count() == 4


def test_a_new_version_that_declines_the_schema_starts_fresh_and_it_is_reported(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    old, new = write("old", EXPORT_V1), write("new", IMPORT_V2_ONLY)
    swap_host.activate(old.digest, old.path)
    swap_host.function("count")()
    activation = swap_host.activate(new.digest, new.path)
    handover = activation.state[new.digest]
    assert handover.outcome == "fresh"
    assert "declined state schema 1" in handover.detail
    assert swap_host.function("count")() == 1


def test_an_import_state_that_raises_refuses_the_version(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    old, new = write("old", EXPORT_V1), write("new", IMPORT_RAISES)
    swap_host.activate(old.digest, old.path)
    with pytest.raises(StateImportError, match="KeyError"):
        swap_host.activate(new.digest, new.path)
    assert swap_host.active_digest == old.digest


def test_without_an_export_hook_there_is_nothing_to_hand_over(
    swap_host: LogicHost, write: WriteBundle
) -> None:
    old, new = write("old"), write("new", IMPORT_ANY)
    swap_host.activate(old.digest, old.path)
    activation = swap_host.activate(new.digest, new.path)
    assert activation.state[new.digest].outcome == "none"
