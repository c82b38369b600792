"""The standalone distributor's watcher: LogicBundles and pods in, every pod's targets out.

A fake API server (``_fake_kube``) answers the real watcher threads; each test
changes objects, waits until the watch has handed everything to the event
loop (:meth:`Watching.settle`), and reads what an agent's long-poll would get
from the target store.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import tracemalloc
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from kubernetes.client.exceptions import ApiException

from logicbundle.distributor import (
    BundleRule,
    BundleTarget,
    PodIdentity,
    Report,
    ReportStore,
    RuleTargets,
    RuleWatcher,
    TargetStore,
)
from logicbundle.distributor import _watcher as _watcher_module
from logicbundle.distributor._watcher import LabelSets, _pod_seen
from tests.distributor._fake_kube import D1, D2, D3, FakeSource, bundle, pod, stable
from tests.distributor.conftest import run

NS = "shop"


class RecordingStore(TargetStore):
    """A target store that remembers every assignment it was given, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.assigned: list[tuple[str, str, dict[str, str]]] = []

    def set_targets(
        self,
        namespace: str,
        name: str,
        targets: Mapping[str, BundleTarget],
        *,
        uid: str | None = None,
    ) -> bool:
        self.assigned.append((namespace, name, {b: t.digest for b, t in targets.items()}))
        return super().set_targets(namespace, name, targets, uid=uid)


class CountingRules(RuleTargets):
    """Rule targets that count the bundle changes handed to them."""

    def __init__(self, store: TargetStore) -> None:
        super().__init__(store)
        self.bundle_changes = 0

    def set_bundle(self, namespace: str, name: str, rule: BundleRule | None) -> None:
        self.bundle_changes += 1
        super().set_bundle(namespace, name, rule)


@dataclass
class Watching:
    source: FakeSource
    watcher: RuleWatcher
    store: RecordingStore
    rules: CountingRules
    reports: ReportStore
    scopes: int = 1
    threads: list[threading.Thread] = field(default_factory=list)

    async def settle(self) -> None:
        """Every change so far has reached the store."""
        self.source.settle(scopes=self.scopes)
        for _ in range(3):
            await asyncio.sleep(0)  # run the hand-overs the threads posted

    def targets(self, name: str, *, namespace: str = NS, uid: str | None = None) -> object:
        """What the pod's long-poll answers: None when unknown, else bundle -> digest."""
        snapshot = self.store.get(namespace, name, uid=uid or f"uid-{name}")
        if not snapshot.known:
            return None
        return {b: t.digest for b, t in snapshot.targets.items()}


@asynccontextmanager
async def watching(
    source: FakeSource, *, namespaces: tuple[str, ...] = (), page_size: int = 500
) -> AsyncIterator[Watching]:
    store = RecordingStore()
    rules = CountingRules(store)
    reports = ReportStore()
    watcher = RuleWatcher(
        source=source,
        rules=rules,
        loop=asyncio.get_running_loop(),
        namespaces=namespaces,
        reports=reports,
        page_size=page_size,
        max_backoff_seconds=0.01,
    )
    before = set(threading.enumerate())
    watcher.start()
    watch = Watching(
        source=source,
        watcher=watcher,
        store=store,
        rules=rules,
        reports=reports,
        scopes=max(1, len(namespaces)),
        threads=[t for t in threading.enumerate() if t not in before],
    )
    try:
        yield watch
    finally:
        await asyncio.to_thread(watcher.stop)
        assert not [t for t in watch.threads if t.is_alive()], "a watch thread outlived stop()"


def _report(name: str, *, active: str | None = D1) -> tuple[PodIdentity, Report]:
    identity = PodIdentity(namespace=NS, name=name, uid=f"uid-{name}", service_account="web")
    report = Report.model_validate({"bundles": {"pricing": {"active": active}}})
    return identity, report


# --- bundles -------------------------------------------------------------------------------


def test_a_bundle_added_modified_and_deleted_moves_its_pods_targets() -> None:
    source = FakeSource()
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") == {}, "known: no bundle selects it yet"
            source.bundle_kind.put(bundle(state=stable(D1)))
            await w.settle()
            assert w.targets("web-0") == {"pricing": D1}
            source.bundle_kind.put(bundle(state=stable(D2)))
            await w.settle()
            assert w.targets("web-0") == {"pricing": D2}
            source.bundle_kind.delete(NS, "pricing")
            await w.settle()
            assert w.targets("web-0") == {}

    run(scenario)


def test_a_bundle_that_published_nothing_yet_gives_no_target() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=None))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") == {}

    run(scenario)


def test_a_status_write_that_changes_neither_spec_nor_state_recomputes_nothing() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            changes, assigned = w.rules.bundle_changes, len(w.store.assigned)
            source.bundle_kind.put(bundle(state=stable(D1), generation=7))
            await w.settle()
            assert (w.rules.bundle_changes, len(w.store.assigned)) == (changes, assigned)

    run(scenario)


def test_a_pod_status_update_that_leaves_its_facts_recomputes_nothing() -> None:
    # kwok or the kubelet update a pod's status (phase, IPs, conditions) often; at
    # 10,000 pods, recomputing each against every bundle of its namespace was most of
    # a replica's CPU.  The readiness it reads is still followed.
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assigned = len(w.store.assigned)
            moved = pod("web-0", ready="True")
            moved["status"]["phase"] = "Pending"
            source.pod_kind.put(moved)
            await w.settle()
            assert len(w.store.assigned) == assigned
            assert w.watcher.current_readiness(NS, "web-0", "uid-web-0") is True
            source.pod_kind.put(pod("web-0", ready="True", labels={"app": "api"}))
            await w.settle()
            assert len(w.store.assigned) == assigned + 1
            assert w.targets("web-0") == {}

    run(scenario)


def test_a_selector_change_in_the_spec_moves_the_pods() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0", labels={"app": "web"}))
    source.pod_kind.put(pod("api-0", labels={"app": "api"}))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert (w.targets("web-0"), w.targets("api-0")) == ({"pricing": D1}, {})
            source.bundle_kind.put(bundle(state=stable(D1), selector={"app": "api"}))
            await w.settle()
            assert (w.targets("web-0"), w.targets("api-0")) == ({}, {"pricing": D1})

    run(scenario)


@pytest.mark.parametrize(
    "bad_state",
    [
        pytest.param({"bundle": "pricing", "stable": "not-a-digest"}, id="not-a-digest"),
        pytest.param({"stable": D1}, id="no-bundle-name"),
        pytest.param({"bundle": "pricing", "stable": D1, "surprise": 1}, id="unknown-field"),
        pytest.param(
            {"bundle": "pricing", "stable": D1, "stage": {"all": True}}, id="no-candidate"
        ),
        pytest.param("a string", id="not-an-object"),
        pytest.param(stable(D2, bundle="inventory"), id="another-bundle"),
    ],
)
def test_a_published_state_that_cannot_be_followed_is_ignored(
    bad_state: object, caplog: pytest.LogCaptureFixture
) -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") == {"pricing": D1}
            with caplog.at_level(logging.WARNING, logger="logicbundle.distributor.watcher"):
                source.bundle_kind.put(bundle(state=bad_state))
                await w.settle()
            assert w.targets("web-0") == {"pricing": D1}, "the last followable state holds"
            assert "status.targetState ignored" in caplog.text
            source.bundle_kind.put(bundle(state=stable(D3)))
            await w.settle()
            assert w.targets("web-0") == {"pricing": D3}, "a good state is followed again"

    run(scenario)


def test_a_state_for_another_bundle_never_gives_a_first_target() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D2, bundle="inventory")))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") == {}

    run(scenario)


def test_a_spec_that_does_not_parse_serves_nothing_for_that_bundle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            with caplog.at_level(logging.WARNING, logger="logicbundle.distributor.watcher"):
                source.bundle_kind.put(bundle(state=stable(D1), spec={"source": {}}))
                await w.settle()
            assert w.targets("web-0") == {}
            assert "the spec does not parse" in caplog.text

    run(scenario)


# --- pods ----------------------------------------------------------------------------------


def test_a_pod_added_relabelled_and_deleted() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") is None
            source.pod_kind.put(pod("web-0"))
            await w.settle()
            assert w.targets("web-0") == {"pricing": D1}
            source.pod_kind.put(pod("web-0", labels={"app": "other"}))
            await w.settle()
            assert w.targets("web-0") == {}, "known, selected by no bundle"
            source.pod_kind.put(pod("web-0"))
            await w.settle()
            assert w.targets("web-0") == {"pricing": D1}
            w.reports.record(*_report("web-0"), targets=None)
            source.pod_kind.delete(NS, "web-0")
            await w.settle()
            assert w.targets("web-0") is None
            assert w.reports.latest(NS, "web-0") is None, "a deleted pod's reports go too"

    run(scenario)


def test_a_pod_without_the_agent_container_is_not_served() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("bare", agent=False))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            source.pod_kind.put(pod("bare-too", agent=False))
            await w.settle()
            assert (w.targets("bare"), w.targets("bare-too")) == (None, None)
            assert not [a for a in w.store.assigned if a[1].startswith("bare")]

    run(scenario)


def test_a_pod_being_deleted_is_forgotten_but_keeps_its_reports_until_it_is_gone() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0", ready="True"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            w.reports.record(*_report("web-0"), targets=None)
            source.pod_kind.put(pod("web-0", ready="True", deleting=True))
            await w.settle()
            assert w.targets("web-0") is None
            assert w.watcher.current_readiness(NS, "web-0", "uid-web-0") is None
            assert w.reports.latest(NS, "web-0") is not None
            source.pod_kind.delete(NS, "web-0")
            await w.settle()
            assert w.reports.latest(NS, "web-0") is None

    run(scenario)


def test_the_cohort_key_and_admission_time_come_from_the_pod() -> None:
    source = FakeSource()
    # Every pod admitted by the seal is on the candidate (threshold: every position).
    everyone = "0x1" + "0" * 32
    state = {
        "bundle": "pricing",
        "stable": D1,
        "candidate": D2,
        "stage": {"percent": {"threshold": everyone, "sealed": 1000}},
    }
    source.bundle_kind.put(bundle(state=state))
    source.pod_kind.put(pod("early", key="k-early", admitted=999))
    source.pod_kind.put(pod("late", key="k-late", admitted=1001))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("early") == {"pricing": D2}
            assert w.targets("late") == {"pricing": D1}, "admitted after the seal"

    run(scenario)


def test_a_pod_recreated_under_its_name_is_served_under_its_new_uid() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("db-0", uid="first"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("db-0", uid="first") == {"pricing": D1}
            source.pod_kind.put(pod("db-0", uid="second"))
            await w.settle()
            assert w.targets("db-0", uid="first") is None
            assert w.targets("db-0", uid="second") == {"pricing": D1}

    run(scenario)


def test_the_readiness_cache_follows_the_pod_condition_per_uid() -> None:
    source = FakeSource()
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            current = w.watcher.current_readiness
            assert current(NS, "web-0", "uid-web-0") is None, "no condition yet"
            source.pod_kind.put(pod("web-0", ready="False"))
            await w.settle()
            assert current(NS, "web-0", "uid-web-0") is False
            source.pod_kind.put(pod("web-0", ready="True"))
            await w.settle()
            assert current(NS, "web-0", "uid-web-0") is True
            assert current(NS, "web-0", "another-uid") is None
            source.pod_kind.put(pod("web-0", ready="Unknown"))
            await w.settle()
            assert current(NS, "web-0", "uid-web-0") is None
            source.pod_kind.delete(NS, "web-0")
            await w.settle()
            assert current(NS, "web-0", "uid-web-0") is None

    run(scenario)


# --- relists and failures ------------------------------------------------------------------


def test_a_gone_pod_watch_relists_and_forgets_what_was_missed() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))
    source.pod_kind.put(pod("web-1"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            w.reports.record(*_report("web-1"), targets=None)
            # Missed while the watch was down: one pod went, one came, one was relabelled.
            source.pod_kind.put(pod("web-0", labels={"app": "other"}), quietly=True)
            source.pod_kind.delete(NS, "web-1", quietly=True)
            source.pod_kind.put(pod("web-2"), quietly=True)
            source.pod_kind.expire()
            await w.settle()
            assert w.targets("web-0") == {}
            assert w.targets("web-1") is None
            assert w.reports.latest(NS, "web-1") is None
            assert w.targets("web-2") == {"pricing": D1}

    run(scenario)


def test_a_gone_bundle_watch_relists_and_drops_a_deleted_bundle() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.bundle_kind.put(bundle("inventory", state=stable(D2, bundle="inventory")))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert w.targets("web-0") == {"pricing": D1, "inventory": D2}
            source.bundle_kind.delete(NS, "inventory", quietly=True)
            source.bundle_kind.put(bundle(state=stable(D3)), quietly=True)
            source.bundle_kind.expire()
            await w.settle()
            assert w.targets("web-0") == {"pricing": D3}

    run(scenario)


def test_lists_are_paged_and_an_expired_continue_token_lists_again() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    for i in range(5):
        source.pod_kind.put(pod(f"web-{i}"))
    source.pod_kind.expire_continue = True

    async def scenario() -> None:
        async with watching(source, page_size=2) as w:
            await w.settle()
            assert all(w.targets(f"web-{i}") == {"pricing": D1} for i in range(5))
            # 2 pages, then the 410 on the continue, then 3 pages from scratch.
            assert source.pod_kind.lists == 5

    run(scenario)


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(ApiException(status=500, reason="Internal"), id="http-500"),
        pytest.param(ApiException(status=403, reason="Forbidden"), id="http-403"),
        pytest.param(ConnectionError("refused"), id="connection"),
    ],
)
def test_a_failing_list_is_retried(failure: Exception, caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))
    source.bundle_kind.failures.append(failure)
    source.pod_kind.failures.append(failure)

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="logicbundle.distributor.watcher"):
            async with watching(source) as w:
                await w.settle()
                assert w.targets("web-0") == {"pricing": D1}
        assert "listing or watching failed" in caplog.text

    run(scenario)


def test_a_watch_error_other_than_gone_lists_again() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            error = b'{"type":"ERROR","object":{"code":500,"message":"etcd is unhappy"}}\n'
            source.pod_kind.put(pod("web-1"), quietly=True)
            source.pod_kind.raw_event(NS, error)
            await w.settle()
            assert w.targets("web-1") == {"pricing": D1}

    run(scenario)


def test_bookmarks_move_the_version_and_change_nothing() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            before = len(w.store.assigned)
            bookmark = b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"99"}}}\n'
            source.pod_kind.raw_event(NS, bookmark)
            await w.settle()
            assert len(w.store.assigned) == before

    run(scenario)


def test_each_namespace_is_watched_on_its_own() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(namespace="a", state=stable(D1)))
    source.bundle_kind.put(bundle(namespace="b", state=stable(D2)))
    source.bundle_kind.put(bundle(namespace="unwatched", state=stable(D3)))
    for ns in ("a", "b", "unwatched"):
        source.pod_kind.put(pod("web-0", namespace=ns))

    async def scenario() -> None:
        async with watching(source, namespaces=("a", "b")) as w:
            await w.settle()
            assert w.targets("web-0", namespace="a") == {"pricing": D1}
            assert w.targets("web-0", namespace="b") == {"pricing": D2}
            assert w.targets("web-0", namespace="unwatched") is None
            source.bundle_kind.expire()
            source.pod_kind.expire()
            await w.settle()
            assert w.targets("web-0", namespace="a") == {"pricing": D1}, "a relist of one scope"
            assert w.targets("web-0", namespace="b") == {"pricing": D2}, "keeps the other"

    run(scenario)


def test_stop_returns_at_once_with_the_watches_open() -> None:
    source = FakeSource()

    async def scenario() -> None:
        async with watching(source) as w:
            await w.settle()
            assert source.pod_kind.open_watches() == 1
        # watching() asserted that every thread ended; nothing stays open either.
        assert source.pod_kind.open_watches() == source.bundle_kind.open_watches() == 0

    run(scenario)


# --- order: bundles, then pods -------------------------------------------------------------


def test_pods_are_listed_only_after_the_bundles_so_no_agent_is_told_no_targets() -> None:
    source = FakeSource()
    source.bundle_kind.put(bundle(state=stable(D1)))
    source.pod_kind.put(pod("web-0"))
    source.bundle_kind.gate.clear()  # the bundles' list hangs

    async def scenario() -> None:
        async with watching(source) as w:
            assert source.bundle_kind.listed.wait(10)
            assert not source.pod_kind.listed.wait(0.3), "pods listed before the bundles"
            await asyncio.sleep(0)
            assert w.targets("web-0") is None, "unknown: the agent follows its slow path"
            assert not w.watcher.synced
            source.bundle_kind.gate.set()
            await asyncio.wait_for(w.watcher.wait_synced(), timeout=10)
            assert w.targets("web-0") == {"pricing": D1}
            assert w.store.assigned[0] == (NS, "web-0", {"pricing": D1}), "never known empty"

    run(scenario)


def test_the_watcher_is_synced_only_when_every_namespace_listed_its_pods() -> None:
    source = FakeSource()
    source.pod_kind.gate.clear()

    async def scenario() -> None:
        async with watching(source, namespaces=("a", "b")) as w:
            assert source.pod_kind.listed.wait(10)
            await asyncio.sleep(0)
            assert not w.watcher.synced
            source.pod_kind.gate.set()
            await asyncio.wait_for(w.watcher.wait_synced(), timeout=10)

    run(scenario)


# --- memory --------------------------------------------------------------------------------


def test_pods_of_one_replicaset_share_one_label_mapping_and_the_sharing_is_bounded() -> None:
    sets = LabelSets(limit=2)
    first = sets.get({"app": "web", "pod-template-hash": "abc"})
    assert sets.get({"pod-template-hash": "abc", "app": "web"}) is first
    sets.get({"app": "api"})
    again = sets.get({"app": "other"})  # the limit: sharing starts over
    assert dict(again) == {"app": "other"}
    assert dict(first) == {"app": "web", "pod-template-hash": "abc"}, "handed out, still valid"
    assert sets.get({"app": "web", "pod-template-hash": "abc"}) is not first


def test_the_watch_keeps_a_few_hundred_bytes_per_pod() -> None:
    pods = 2_000
    objects = [
        json.loads(
            json.dumps(
                pod(
                    f"web-7d9f8c6b5-{i:05d}",
                    uid=f"6f1c2d3e-4a5b-6c7d-8e9f-{i:012d}",
                    labels={"app": "web", "pod-template-hash": "7d9f8c6b5", "tier": "front"},
                    key=f"{NS}/web-7d9f8c6b5-{i:05d}",
                    admitted=1_700_000_000_000 + i,
                    ready="True",
                )
            )
        )
        for i in range(pods)
    ]

    async def scenario() -> int:
        watcher = RuleWatcher(
            source=FakeSource(), rules=RuleTargets(TargetStore()), loop=asyncio.get_running_loop()
        )
        sets = LabelSets()
        tracemalloc.start()
        try:
            for obj in objects:
                watcher._pod_event("ADDED", _pod_seen(obj, label_sets=sets))
            gc.collect()
            here = tracemalloc.Filter(True, _watcher_module.__file__)
            snapshot = tracemalloc.take_snapshot().filter_traces([here])
        finally:
            tracemalloc.stop()
        return sum(stat.size for stat in snapshot.statistics("filename"))

    held = run(scenario)
    # Facts, uid and readiness (the strings themselves come from the JSON decoder).
    assert held / pods < 200, f"{held / pods:.0f} bytes per pod"
