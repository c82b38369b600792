"""A burst of reports wakes a bundle's reconcile spaced out; every other wake is immediate."""

from __future__ import annotations

import asyncio
from pathlib import Path

from logicbundle.controller._handlers import ControllerSettings, Memo


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
            memo.wake_reported(*key)
        await asyncio.sleep(0)
        assert not wake.is_set()
        assert memo.deferred == {key}
        await asyncio.wait_for(wake.wait(), timeout=5)
        assert loop.time() >= memo.settle_until[key]
        assert memo.deferred == set()
        # Settled: the next report wakes it at once; so does any other wake, settling or not.
        wake.clear()
        memo.wake_reported(*key)
        assert wake.is_set()
        wake.clear()
        memo.settle_until[key] = loop.time() + 60
        memo.wake(*key)
        assert wake.is_set()

    asyncio.run(scenario())
