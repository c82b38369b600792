"""RuleTargets: every pod's targets from the bundles' published states and the pods' facts.

Each test holds a long-poll per pod (``wait_for_change`` at its current
version) and checks which of them a change answers: a rollout step must wake
the pods whose target moved, and only those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from logicbundle import contract
from logicbundle.distributor import RuleTargets, TargetStore, facts_of, rule_of
from tests.distributor._fake_kube import D1, D2, D3, bundle, pod, stable
from tests.distributor.conftest import run

NS = "shop"


def _set_bundle(rules: RuleTargets, obj: Mapping[str, Any]) -> None:
    meta = obj["metadata"]
    rules.set_bundle(meta["namespace"], meta["name"], rule_of(obj))


def _set_pod(rules: RuleTargets, obj: Mapping[str, Any]) -> None:
    meta = obj["metadata"]
    rules.set_pod(meta["namespace"], meta["name"], uid=meta["uid"], facts=facts_of(obj))


def _digests(store: TargetStore, namespace: str, name: str, uid: str) -> object:
    snapshot = store.get(namespace, name, uid=uid)
    return {b: t.digest for b, t in snapshot.targets.items()} if snapshot.known else None


class LongPolls:
    """One waiting long-poll per pod, as agents hold them."""

    def __init__(self, store: TargetStore, pods: list[tuple[str, str]]) -> None:
        self.store = store
        self.tasks = {
            (ns, name): asyncio.ensure_future(
                store.wait_for_change(
                    ns,
                    name,
                    uid=f"uid-{name}",
                    version=store.get(ns, name, uid=f"uid-{name}").version,
                    wait_seconds=60,
                )
            )
            for ns, name in pods
        }

    async def answered(self) -> set[tuple[str, str]]:
        """The pods whose long-poll a change answered; releases the others."""
        for _ in range(5):
            await asyncio.sleep(0)
        woken = {key for key, task in self.tasks.items() if task.done()}
        self.store.close()
        await asyncio.gather(*self.tasks.values())
        return woken


INTERNAL_STAGE = {
    "bundle": "pricing",
    "stable": D1,
    "candidate": D2,
    "stage": {"internal": {"matchLabels": {"cohort": "internal"}}},
}


def test_a_bundle_change_wakes_only_the_pods_whose_target_changed() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_bundle(rules, bundle(state=stable(D1)))
        _set_pod(rules, pod("web-0", labels={"app": "web", "cohort": "internal"}))
        _set_pod(rules, pod("web-1"))
        _set_pod(rules, pod("api-0", labels={"app": "api"}))
        polls = LongPolls(store, [(NS, "web-0"), (NS, "web-1"), (NS, "api-0")])
        _set_bundle(rules, bundle(state=INTERNAL_STAGE))
        assert await polls.answered() == {(NS, "web-0")}
        assert _digests(store, NS, "web-0", "uid-web-0") == {"pricing": D2}
        assert _digests(store, NS, "web-1", "uid-web-1") == {"pricing": D1}
        assert _digests(store, NS, "api-0", "uid-api-0") == {}

    run(scenario)


def test_republishing_the_same_state_wakes_nobody() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_bundle(rules, bundle(state=INTERNAL_STAGE))
        _set_pod(rules, pod("web-0", labels={"app": "web", "cohort": "internal"}))
        _set_pod(rules, pod("web-1"))
        polls = LongPolls(store, [(NS, "web-0"), (NS, "web-1")])
        _set_bundle(rules, bundle(state=INTERNAL_STAGE, generation=9))
        assert await polls.answered() == set()

    run(scenario)


def test_a_pod_in_another_namespace_is_never_selected() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_pod(rules, pod("web-0", namespace="elsewhere"))
        _set_bundle(rules, bundle(state=stable(D1)))
        assert _digests(store, "elsewhere", "web-0", "uid-web-0") == {}
        polls = LongPolls(store, [("elsewhere", "web-0")])
        _set_bundle(rules, bundle(state=stable(D2)))
        rules.set_bundle(NS, "pricing", None)
        assert await polls.answered() == set()
        assert _digests(store, "elsewhere", "web-0", "uid-web-0") == {}

    run(scenario)


def test_a_pod_recreated_with_a_new_uid_is_a_new_pod() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_bundle(rules, bundle(state=stable(D1)))
        _set_pod(rules, pod("db-0", uid="first"))
        assert _digests(store, NS, "db-0", "first") == {"pricing": D1}
        _set_pod(rules, pod("db-0", uid="second"))
        assert _digests(store, NS, "db-0", "first") is None, "not shown to the old pod"
        assert _digests(store, NS, "db-0", "second") == {"pricing": D1}

    run(scenario)


def test_two_bundles_on_one_pod_are_targeted_and_removed_independently() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_pod(rules, pod("web-0"))
        _set_bundle(rules, bundle(state=stable(D1)))
        _set_bundle(rules, bundle("inventory", state=stable(D2, bundle="inventory")))
        assert _digests(store, NS, "web-0", "uid-web-0") == {"pricing": D1, "inventory": D2}
        _set_bundle(rules, bundle("inventory", state=stable(D3, bundle="inventory")))
        assert _digests(store, NS, "web-0", "uid-web-0") == {"pricing": D1, "inventory": D3}
        rules.set_bundle(NS, "pricing", None)
        assert _digests(store, NS, "web-0", "uid-web-0") == {"inventory": D3}

    run(scenario)


def test_a_forgotten_pod_is_unknown_and_a_bundle_change_leaves_it_so() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_bundle(rules, bundle(state=stable(D1)))
        _set_pod(rules, pod("web-0"))
        rules.forget_pod(NS, "web-0")
        _set_bundle(rules, bundle(state=stable(D2)))
        assert _digests(store, NS, "web-0", "uid-web-0") is None
        assert rules.pods() == set()

    run(scenario)


def test_a_pods_facts_come_from_its_annotations_and_labels() -> None:
    facts = facts_of(pod("web-0", key="k-1", admitted=1234, labels={"app": "web"}))
    assert (facts.key, facts.admitted, facts.labels["app"]) == ("k-1", 1234, "web")
    fallback = facts_of(pod("web-0"))
    assert (fallback.key, fallback.admitted) == (f"{NS}/web-0", 0)
    assert facts_of({"metadata": {}}) == contract.PodFacts(key="/", labels={}, admitted=0)


def test_a_status_write_that_keeps_the_published_state_recomputes_no_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every status write (counts, conditions, each analysis measurement) reaches the
    # rules again; at 2,000 pods recomputing each pod's target there held the event
    # loop while the long-polls waited. The same state and settings tell nobody anything.
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        _set_bundle(rules, bundle(state=INTERNAL_STAGE))
        for i in range(20):
            _set_pod(rules, pod(f"web-{i}", labels={"app": "web", "cohort": "internal"}))
        computed: list[str] = []
        real = contract.target_of

        def counting(state: contract.RolloutState, facts: contract.PodFacts) -> Any:
            computed.append(facts.key)
            return real(state, facts)

        monkeypatch.setattr(contract, "target_of", counting)
        _set_bundle(rules, bundle(state=INTERNAL_STAGE, generation=9))
        assert computed == []
        # A new trace is told (the targets carry it), and so is a new state.
        traced = {**INTERNAL_STAGE, "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
        polls = LongPolls(store, [(NS, f"web-{i}") for i in range(20)])
        _set_bundle(rules, bundle(state=traced))
        assert len(computed) == 20
        assert len(await polls.answered()) == 20
        _set_bundle(rules, bundle(state=stable(D3)))
        assert len(computed) == 40
        told = [_digests(store, NS, f"web-{i}", f"uid-web-{i}") for i in range(20)]
        assert told == [{"pricing": D3}] * 20

    run(scenario)


def test_the_pods_of_a_cohort_share_one_target_object() -> None:
    async def scenario() -> None:
        store = TargetStore()
        rules = RuleTargets(store)
        for i in range(10):
            _set_pod(
                rules,
                pod(f"web-{i}", labels={"app": "web", "cohort": "internal" if i < 4 else "x"}),
            )
        _set_bundle(rules, bundle(state=INTERNAL_STAGE))
        objects = {
            id(store.get(NS, f"web-{i}", uid=f"uid-web-{i}").targets["pricing"]) for i in range(10)
        }
        assert len(objects) == 2

    run(scenario)
