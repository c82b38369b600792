"""The operator's pod view: one list-and-watch, compact snapshots, precise wake-ups.

The real watch threads (:class:`~logicbundle.distributor.PodWatch`) against
the fake API server of the distributor's tests: what reaches the controller,
what is dropped (a status update that changes nothing a reconcile reads), and
which bundle daemons a pod's change wakes.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from logicbundle import contract
from logicbundle.api.v1alpha1 import LogicBundleSpec
from logicbundle.controller._handlers import ControllerSettings, Memo, pod_seen
from logicbundle.controller._pods import PodView
from logicbundle.controller._reconcile import PodSnapshot, Runtime
from logicbundle.distributor import bundle_rule
from tests.controller.test_reconcile import SPEC, FakeKube, runtime  # noqa: F401
from tests.distributor._fake_kube import FakeSource, pod
from tests.distributor.conftest import run

NS = "shop"
Change = tuple[PodSnapshot | None, PodSnapshot | None]


@asynccontextmanager
async def viewing(
    source: FakeSource, *, namespaces: tuple[str, ...] = ()
) -> AsyncIterator[tuple[PodView, list[Change]]]:
    changes: list[Change] = []
    view = PodView(
        source=source,
        loop=asyncio.get_running_loop(),
        on_change=lambda before, after: changes.append((before, after)),
        namespaces=namespaces,
    )
    view.start()
    try:
        yield view, changes
    finally:
        await asyncio.to_thread(view.stop)


async def settle(source: FakeSource, scopes: int = 1) -> None:
    source.pod_kind.settle(watches=scopes)
    for _ in range(3):
        await asyncio.sleep(0)


def test_the_view_is_synced_only_once_every_scope_is_listed_and_keeps_only_what_is_read() -> None:
    source = FakeSource()
    big = pod("web-0", key="shop/web-0", admitted=1_700_000_000_000)
    big["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * 5000
    source.pod_kind.put(big)
    source.pod_kind.put(pod("api-0", namespace="other"))

    async def scenario() -> None:
        async with viewing(source, namespaces=(NS, "other")) as (view, changes):
            await asyncio.wait_for(view.wait_synced(), 5)
            await settle(source, scopes=2)
            [web] = view.in_namespace(NS)
            assert web.annotations == {
                contract.ANNOTATION_COHORT_KEY: "shop/web-0",
                contract.ANNOTATION_ADMITTED_AT: "1700000000000",
            }
            assert web.has_agent and web.uid == "uid-web-0"
            assert [p.name for p in view.in_namespace("other")] == ["api-0"]
            assert len(view) == 2
            assert sorted(after.name for before, after in changes if after) == ["api-0", "web-0"]

    run(scenario)


def test_a_status_update_that_changes_nothing_read_is_dropped_and_a_restart_is_not() -> None:
    source = FakeSource()
    body = pod("web-0")
    source.pod_kind.put(body)

    async def scenario() -> None:
        async with viewing(source) as (view, changes):
            await view.wait_synced()
            await settle(source)
            changes.clear()
            moved = copy.deepcopy(body)
            moved["status"]["phase"] = "Pending"
            moved["status"]["podIP"] = "10.0.0.7"
            moved["metadata"]["annotations"]["unrelated"] = "yes"
            source.pod_kind.put(moved)
            await settle(source)
            assert changes == []
            restarted = copy.deepcopy(moved)
            restarted["status"]["containerStatuses"] = [{"name": "app", "restartCount": 2}]
            source.pod_kind.put(restarted)
            await settle(source)
            [(before, after)] = changes
            assert before is not None and after is not None
            assert (before.restarts, after.restarts) == (0, 2)

    run(scenario)


def test_a_deleted_pod_and_a_pod_gone_at_a_relist_are_reported_gone() -> None:
    source = FakeSource()
    for name in ("web-0", "web-1"):
        source.pod_kind.put(pod(name))

    async def scenario() -> None:
        async with viewing(source) as (view, changes):
            await view.wait_synced()
            await settle(source)
            changes.clear()
            source.pod_kind.delete(NS, "web-0")
            await settle(source)
            assert [(b.name if b else None, a) for b, a in changes] == [("web-0", None)]
            changes.clear()
            # Deleted while the watch was down: the relist after a 410 notices.
            source.pod_kind.delete(NS, "web-1", quietly=True)
            source.pod_kind.expire()
            await settle(source)
            assert [(b.name if b else None, a) for b, a in changes] == [("web-1", None)]
            assert view.in_namespace(NS) == []

    run(scenario)


def _snapshot(name: str, labels: dict[str, str], **overrides: Any) -> PodSnapshot:
    fields: dict[str, Any] = {
        "namespace": NS,
        "name": name,
        "uid": f"uid-{name}",
        "labels": labels,
        "annotations": {},
        "has_agent": True,
    }
    fields.update(overrides)
    return PodSnapshot(**fields)


def _selecting(app: str) -> LogicBundleSpec:
    raw = SPEC.model_dump(by_alias=True, exclude_none=True)
    raw["target"]["podSelector"] = {"matchLabels": {"app": app}}
    return LogicBundleSpec.model_validate(raw)


def test_a_pod_change_wakes_only_the_bundles_that_select_it_before_or_after(
    runtime: tuple[Runtime, FakeKube, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    rt, _, _ = runtime
    web, api = (_selecting(app) for app in ("web", "api"))
    rt.agents.rules.set_bundle(NS, "for-web", bundle_rule(web, None))
    rt.agents.rules.set_bundle(NS, "for-api", bundle_rule(api, None))
    rt.agents.rules.set_bundle("elsewhere", "for-web", bundle_rule(web, None))
    memo = Memo(settings=ControllerSettings(cache_dir=tmp_path), runtime=rt)

    async def scenario() -> None:
        events = {
            key: memo.wakeups.setdefault(key, asyncio.Event())
            for key in ((NS, "for-web"), (NS, "for-api"), ("elsewhere", "for-web"))
        }

        def woken() -> set[tuple[str, str]]:
            out = {key for key, event in events.items() if event.is_set()}
            for event in events.values():
                event.clear()
            return out

        pod_seen(memo, None, _snapshot("web-0", {"app": "web"}))
        assert woken() == {(NS, "for-web")}
        # Relabelled from web to api: both are woken (one loses it, one gains it).
        pod_seen(memo, _snapshot("web-0", {"app": "web"}), _snapshot("web-0", {"app": "api"}))
        assert woken() == {(NS, "for-web"), (NS, "for-api")}
        pod_seen(memo, _snapshot("web-0", {"app": "api"}), None)
        assert woken() == {(NS, "for-api")}
        assert (NS, "web-0") not in rt.agents.rules.pods()
        pod_seen(memo, None, _snapshot("lone-0", {"app": "batch"}))
        assert woken() == set()

    asyncio.run(scenario())
