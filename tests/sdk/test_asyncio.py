"""Using the SDK from asyncio: sync proxies in coroutines, async bundle functions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from logicbundle.sdk import LogicHost
from tests.sdk.conftest import WriteBundle, simple

ASYNC_IFACE: dict[str, Any] = {
    "functions": {"fetch": {"params": [{"name": "gate"}], "returns": "str"}},
}
ASYNC_LOGIC = """
NAME = {name!r}

class Logic:
    async def fetch(self, gate):
        await gate.wait()
        return NAME

logic = Logic()
"""


def test_sync_proxies_are_called_directly_from_coroutines(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    host.activate(one.digest, one.path)
    add = host.function("add")

    async def main() -> list[int]:
        results = await asyncio.gather(*(asyncio.to_thread(add, i, 1) for i in range(20)))
        await asyncio.to_thread(host.activate, two.digest, two.path)
        return [*results, add(1, 1)]

    results = asyncio.run(main())
    assert results == [i + 1 for i in range(20)] + [2]
    assert host.function("ident")() == "two"
    assert sum(v["calls"] for v in host.stats()["versions"]) == 22  # 21 adds, 1 ident


def test_an_awaited_call_stays_on_its_version_across_a_swap(
    root: Path, write_bundle: WriteBundle
) -> None:
    host = LogicHost(name="calc", interface=ASYNC_IFACE, root=root)
    old = write_bundle({"logic.py": ASYNC_LOGIC.format(name="old")}, interface=ASYNC_IFACE)
    new = write_bundle({"logic.py": ASYNC_LOGIC.format(name="new")}, interface=ASYNC_IFACE)
    host.activate(old.digest, old.path)
    fetch = host.async_function("fetch")

    async def main() -> tuple[str, str, bool]:
        gate = asyncio.Event()
        pending = asyncio.create_task(fetch(gate))
        await asyncio.sleep(0)  # let the task start and block on the gate
        await asyncio.to_thread(host.activate, new.digest, new.path)
        released_early = await asyncio.to_thread(host.wait_released, old.digest, 0.05)
        gate.set()
        first = await pending
        second = await fetch(gate)
        return first, second, released_early

    first, second, released_early = asyncio.run(main())
    assert (first, second) == ("old", "new")
    assert not released_early
    assert host.wait_released(old.digest, timeout=10)
    host.close(timeout=5)
