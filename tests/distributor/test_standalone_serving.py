"""The standalone distributor listens only once the bundles, then the pods, are listed.

:func:`serve_when_synced` with a real server on a loopback port, the real
watcher over the fake API server, and the fake authenticator of the conftest
(token-a is shop/web-a, uid-a).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from logicbundle.distributor import (
    DISTRIBUTOR_AUDIENCE,
    BlobCache,
    DistributorServer,
    ReportStore,
    RuleTargets,
    RuleWatcher,
    TargetStore,
    create_app,
    serve_when_synced,
)
from tests.distributor._fake_kube import D1, D2, FakeSource, bundle, pod, stable
from tests.distributor.conftest import AUTH_A, FakeAuthenticator, run


class Standalone:
    """``serve_when_synced`` in a task, with its server and watcher."""

    def __init__(self, source: FakeSource, cache: Path) -> None:
        targets, reports = TargetStore(), ReportStore()
        self.watcher = RuleWatcher(
            source=source,
            rules=RuleTargets(targets),
            loop=asyncio.get_running_loop(),
            reports=reports,
            max_backoff_seconds=0.01,
        )
        app = create_app(
            targets=targets,
            blobs=BlobCache(cache),
            reports=reports,
            authenticator=FakeAuthenticator(),
            audience=DISTRIBUTOR_AUDIENCE,
        )
        self.server = DistributorServer(app, host="127.0.0.1", port=0)
        self.stop = asyncio.Event()
        self.ports: list[int] = []
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(
            serve_when_synced(self.server, watcher=self.watcher, stop=self.stop, on_ready=self._on)
        )

    def _on(self, port: int) -> None:
        self.ports.append(port)
        self.ready.set()

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=10)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, headers=AUTH_A) as response:
        return response.status, await response.json() if response.status == 200 else None


def test_the_server_listens_only_after_the_first_lists_and_then_serves_the_rule(
    tmp_path: Path,
) -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-a", uid="uid-a"))
    source.bundle_kind.gate.clear()

    async def scenario() -> None:
        standalone = Standalone(source, tmp_path / "cache")
        assert await asyncio.to_thread(source.bundle_kind.listed.wait, 10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert standalone.ports == [], "listening before the bundles were listed"
        source.bundle_kind.gate.set()
        await asyncio.wait_for(standalone.ready.wait(), timeout=10)
        base = f"http://127.0.0.1:{standalone.ports[0]}"
        async with aiohttp.ClientSession() as session:
            status, body = await _get(session, f"{base}/v1/targets")
            assert status == 200
            assert (body["known"], body["targets"]["pricing"]["digest"]) == (True, D1)
            poll = asyncio.ensure_future(
                _get(session, f"{base}/v1/targets?wait=30&version={body['version']}")
            )
            source.bundle_kind.put(bundle(state=stable(D2)))
            status, fresh = await asyncio.wait_for(poll, timeout=10)
            assert (status, fresh["targets"]["pricing"]["digest"]) == (200, D2)
        await standalone.finish()
        assert source.pod_kind.open_watches() == 0

    run(scenario)


def test_stopping_before_the_first_lists_never_listens(tmp_path: Path) -> None:
    source = FakeSource()
    source.bundle_kind.gate.clear()

    async def scenario() -> None:
        standalone = Standalone(source, tmp_path / "cache")
        assert await asyncio.to_thread(source.bundle_kind.listed.wait, 10)
        standalone.stop.set()
        source.bundle_kind.gate.set()  # the hanging list returns; the thread sees the stop
        await asyncio.wait_for(standalone.task, timeout=10)
        assert standalone.ports == []

    run(scenario)
