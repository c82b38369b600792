"""Version leaks: a retired version is collected, or reported with what holds it."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import LogicHost, _leaks, prometheus_text
from logicbundle.sdk._host import MAX_REFERRER_DETAIL, MAX_REPORTED_LEAKS
from logicbundle.sdk._protocol import MAX_LINE
from tests.sdk.conftest import IFACE, write_bundle_at

BUNDLE = "leaky"
REGISTRY = "lb_test_leak_registry"

WELL_BEHAVED = """
NAME = {name!r}
CACHE = {{}}

class Logic:
    def ident(self):
        CACHE[NAME] = NAME
        return NAME

    def add(self, a, b):
        return a + b

logic = Logic()
"""

# Each leaks on purpose, the way applications do.
INTO_A_REGISTRY = """
import {registry} as registry
NAME = {name!r}

class Logic:
    def ident(self):
        return NAME

    def add(self, a, b):
        return a + b

logic = Logic()
registry.HANDLERS.append(logic.ident)
"""

INTO_A_THREAD = """
import threading
import {registry} as registry
NAME = {name!r}

def _linger():
    registry.STOP.wait(30)

class Logic:
    def ident(self):
        return NAME

    def add(self, a, b):
        return a + b

logic = Logic()
threading.Thread(target=_linger, name="lingering-" + NAME, daemon=True).start()
"""

INTO_A_CLOSURE = """
import {registry} as registry
NAME = {name!r}

def helper():
    return NAME

class Logic:
    def ident(self):
        return NAME

    def add(self, a, b):
        return a + b

logic = Logic()
registry.remember(helper)
"""


@pytest.fixture
def registry() -> Iterator[types.ModuleType]:
    """An application module that bundles can put things into."""
    module = types.ModuleType(REGISTRY)
    module.HANDLERS = []  # type: ignore[attr-defined]
    module.STOP = threading.Event()  # type: ignore[attr-defined]
    remembered: list[Callable[[], Any]] = []

    def remember(fn: Callable[[], Any]) -> None:
        def wrapped() -> Any:
            return fn()

        remembered.append(wrapped)

    module.remember = remember  # type: ignore[attr-defined]
    module.REMEMBERED = remembered  # type: ignore[attr-defined]
    sys.modules[REGISTRY] = module
    yield module
    module.STOP.set()
    module.HANDLERS.clear()
    remembered.clear()
    sys.modules.pop(REGISTRY, None)


@pytest.fixture(autouse=True)
def collect_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_leaks, "MIN_COLLECT_INTERVAL", 0.0)


@pytest.fixture
def host(root: Path) -> Iterator[LogicHost]:
    host = LogicHost(name=BUNDLE, interface=IFACE, root=root, drain_timeout=10, leak_grace=0.05)
    yield host
    host.close(timeout=10)


def _files(template: str, name: str) -> dict[str, str]:
    return {"logic.py": template.format(name=name, registry=REGISTRY)}


def _swap(host: LogicHost, root: Path, template: str, name: str) -> str:
    written = write_bundle_at(root, _files(template, name), bundle=BUNDLE)
    host.activate(written.digest, written.path)
    return written.digest


def _until(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        event.wait(0.01)
    raise AssertionError(f"not true within {timeout}s: {condition}")


def _leaked_events(host: LogicHost) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    host.add_listener(lambda e: seen.append(e) if e.get("event") == "leaked" else None)
    return seen


def _retire_first(host: LogicHost, root: Path, template: str) -> str:
    """Activate ``template`` as v1, swap to a well-behaved v2; v1's digest."""
    v1 = _swap(host, root, template, "v1")
    assert host.function("ident")() == "v1"
    _swap(host, root, WELL_BEHAVED, "v2")
    assert host.wait_released(v1, timeout=10)
    return v1


def test_a_well_behaved_version_is_collected_after_its_release_and_nothing_is_reported(
    host: LogicHost, root: Path
) -> None:
    events = _leaked_events(host)
    v1 = _retire_first(host, root, WELL_BEHAVED)
    _until(lambda: host.watched() == 0)
    assert host.leaks() == []
    assert events == []
    stats = host.stats()
    assert stats["retiredAlive"] == 0
    assert stats["leaks"] == []
    assert f'logicbundle_sdk_retired_versions_alive{{bundle="{BUNDLE}"}} 0' in (
        prometheus_text(host)
    )
    assert v1 not in {w.digest for w in host.leaks()}


def test_a_version_that_put_its_function_in_another_modules_registry_is_reported_leaked(
    host: LogicHost, root: Path, registry: types.ModuleType
) -> None:
    events = _leaked_events(host)
    v1 = _retire_first(host, root, INTO_A_REGISTRY)
    leaks = _until(host.leaks)
    assert [w.digest for w in leaks] == [v1]
    kinds = {(r.kind, r.detail) for r in leaks[0].referrers}
    assert ("module-global", f"a global of module {REGISTRY}") in kinds
    _until(lambda: events)
    assert [e["digest"] for e in events] == [v1]
    assert {"kind": "module-global", "detail": f"a global of module {REGISTRY}"} in (
        events[0]["referrers"]
    )
    stats = host.stats()
    assert stats["retiredAlive"] == 1
    assert stats["leaks"][0]["digest"] == v1
    assert f'logicbundle_sdk_retired_versions_alive{{bundle="{BUNDLE}"}} 1' in (
        prometheus_text(host)
    )


def test_a_leak_that_the_application_lets_go_of_is_no_longer_reported(
    host: LogicHost, root: Path, registry: types.ModuleType
) -> None:
    _retire_first(host, root, INTO_A_REGISTRY)
    _until(host.leaks)
    registry.HANDLERS.clear()
    _swap(host, root, WELL_BEHAVED, "v3")  # wakes the drainer; the next look finds v1 gone
    _until(lambda: not host.leaks())
    assert host.stats()["retiredAlive"] == 0


def test_a_thread_left_running_by_a_retired_version_is_named(
    host: LogicHost, root: Path, registry: types.ModuleType
) -> None:
    v1 = _retire_first(host, root, INTO_A_THREAD)
    leaks = _until(host.leaks)
    assert [w.digest for w in leaks] == [v1]
    threads = [r.detail for r in leaks[0].referrers if r.kind == "thread"]
    assert threads and all("lingering-v1" in detail for detail in threads), leaks[0].referrers


def test_an_application_closure_over_a_retired_function_is_named(
    host: LogicHost, root: Path, registry: types.ModuleType
) -> None:
    v1 = _retire_first(host, root, INTO_A_CLOSURE)
    leaks = _until(host.leaks)
    assert [w.digest for w in leaks] == [v1]
    kinds = {r.kind for r in leaks[0].referrers}
    assert "closure" in kinds, leaks[0].referrers


def test_the_sdk_itself_keeps_no_reference_to_the_code_of_a_released_version(
    host: LogicHost, root: Path
) -> None:
    v1 = _retire_first(host, root, WELL_BEHAVED)
    released = [v for digest, role, _, v in host.versions() if digest == v1]
    assert released, "the released version's counters are still listed"
    assert released[0].obj is None
    assert released[0].funcs == {}


def test_the_stats_answer_lists_a_bounded_number_of_leaks_with_clipped_details(
    host: LogicHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of leaked versions with long names must not push ``stats`` past the line limit."""
    marker = _leaks.Marker("sha256:" + "a" * 64)
    watches = [
        _leaks.Watch(
            digest=f"sha256:{i:064x}",
            package="p",
            marker=weakref.ref(marker),
            released=0.0,
            due=0.0,
            leaked=True,
            referrers=(_leaks.Referrer("module-global", "m" * 5000),),
        )
        for i in range(200)
    ]
    monkeypatch.setattr(host, "leaks", lambda: watches)
    stats = host.stats()
    assert stats["retiredAlive"] == 200
    assert len(stats["leaks"]) == MAX_REPORTED_LEAKS
    assert [leak["digest"] for leak in stats["leaks"]] == [w.digest for w in watches[:16]]
    assert all(
        len(leak["referrers"][0]["detail"]) == MAX_REFERRER_DETAIL for leak in stats["leaks"]
    )
    assert len(json.dumps(stats)) < MAX_LINE // 2
