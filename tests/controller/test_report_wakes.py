"""A burst of reports wakes a bundle's reconcile spaced out; every other wake is immediate."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kopf

from logicbundle.controller._handlers import ControllerSettings, Memo, bundle_changed
from logicbundle.controller._reconcile import Runtime
from tests.controller.test_reconcile import runtime  # noqa: F401
from tests.distributor._fake_kube import D1, bundle, stable


def test_a_reports_wake_waits_out_the_last_reconciles_cost_once(tmp_path: Path) -> None:
    # A rollback's 2,000 reports each woke the bundle: its reconcile (O(pods)) ran back to
    # back on the loop that answers those pods. Now a report's wake waits as long as the
    # last reconcile took, and the reports meanwhile wake it once.
    async def scenario() -> None:
        memo = Memo(settings=ControllerSettings(cache_dir=tmp_path))
        key = ("shop", "pricing")
        wake = memo.wakeups.setdefault(key, asyncio.Event())
        loop = asyncio.get_running_loop()
        memo.settle_until[key] = loop.time() + 0.3
        for _ in range(100):
            memo.wake_settled(*key)
        await asyncio.sleep(0)
        assert not wake.is_set()
        assert memo.deferred == {key}
        await asyncio.wait_for(wake.wait(), timeout=5)
        assert loop.time() >= memo.settle_until[key]
        assert memo.deferred == set()
        # Settled: the next report wakes it at once; so does any other wake, settling or not.
        wake.clear()
        memo.wake_settled(*key)
        assert wake.is_set()
        wake.clear()
        memo.settle_until[key] = loop.time() + 60
        memo.wake(*key)
        assert wake.is_set()

    asyncio.run(scenario())


def test_our_own_status_write_coming_back_wakes_the_reconcile_settled(
    runtime: tuple[Runtime, Any, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    # Each status write came back through the watch and woke the bundle's reconcile at
    # once: during a rollback's reports (the counts change with each) reconciles ran back
    # to back. Our own write now wakes it settled; anyone else's change at once.
    rt, _, _ = runtime

    async def scenario() -> None:
        memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)
        key = ("shop", "pricing")
        wake = memo.wakeups.setdefault(key, asyncio.Event())
        loop = asyncio.get_running_loop()
        rt.memories.get(key).written = {"metadata": {"resourceVersion": "42"}}

        def event(version: str) -> None:
            obj = bundle(state=stable(D1))
            obj["metadata"]["resourceVersion"] = version
            bundle_changed(memo, kopf.Body(obj), "shop", "pricing", "MODIFIED")  # type: ignore[arg-type]

        memo.settle_until[key] = loop.time() + 60
        event("42")
        assert not wake.is_set() and memo.deferred == {key}
        event("43")  # someone else's change after ours
        assert wake.is_set()

    asyncio.run(scenario())
