"""The target rule: a pod's target from one published state, and the guarantees of its plan."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle.contract import (
    MAX_STATE_BYTES,
    POSITION_LIMIT,
    Carry,
    Everyone,
    Internal,
    Percent,
    PodFacts,
    Requirement,
    RolloutState,
    Selector,
    Split,
    StateError,
    Target,
    cohort,
    plan_percent,
    position,
    share,
    state_from_bytes,
    state_from_json,
    state_to_json,
    target_of,
)

BUNDLE = "pricing"
STABLE = "sha256:" + "1" * 64
CANDIDATE = "sha256:" + "2" * 64
SETTINGS = settings(max_examples=300, deadline=None)
INTERNAL = Selector({"cohort": "internal"})


def facts(count: int, *, start: int = 0, admitted: int = 1000, internal: int = 0) -> list[PodFacts]:
    return [
        PodFacts(
            key=f"shop/pod-{i}",
            labels={"cohort": "internal"} if i - start < internal else {},
            admitted=admitted + i,
        )
        for i in range(start, start + count)
    ]


def members(stage: Percent, pods: Sequence[PodFacts]) -> set[str]:
    state = RolloutState(bundle=BUNDLE, stable=STABLE, candidate=CANDIDATE, stage=stage)
    return cohort(state, pods)


def lowest(pods: Sequence[PodFacts], count: int) -> set[str]:
    ranked = sorted(pods, key=lambda p: position(bundle=BUNDLE, candidate=CANDIDATE, key=p.key))
    return {p.key for p in ranked[:count]}


def plan(
    pods: Sequence[PodFacts],
    percent: int,
    previous: Percent | None = None,
    *,
    horizon: int | None = None,
) -> Percent:
    return plan_percent(
        bundle=BUNDLE,
        candidate=CANDIDATE,
        percent=percent,
        pods=pods,
        previous=previous,
        horizon=horizon,
    )


# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "pods", "expected"),
    [(0, 10, 0), (5, 0, 0), (5, 10, 1), (5, 20, 1), (5, 40, 2), (50, 7, 3), (100, 7, 7)],
)
def test_the_share_is_rounded_down_but_never_below_one_pod(
    percent: int, pods: int, expected: int
) -> None:
    assert share(percent=percent, pods=pods) == expected


def test_each_stage_kind_gives_its_target() -> None:
    pod = PodFacts(key="shop/a", labels={"cohort": "internal"})
    other = PodFacts(key="shop/b")
    state = RolloutState(bundle=BUNDLE, stable=STABLE, candidate=CANDIDATE)
    assert target_of(state, pod) == Target(STABLE)
    internal = RolloutState(BUNDLE, STABLE, CANDIDATE, Internal(INTERNAL))
    assert target_of(internal, pod) == Target(CANDIDATE)
    assert target_of(internal, other) == Target(STABLE)
    assert target_of(RolloutState(BUNDLE, STABLE, CANDIDATE, Everyone()), other) == Target(
        CANDIDATE
    )
    split = RolloutState(BUNDLE, STABLE, CANDIDATE, Split(30))
    assert target_of(split, other) == Target(STABLE, CANDIDATE, 30)
    assert target_of(RolloutState(BUNDLE, STABLE, CANDIDATE, Split(0)), other) == Target(STABLE)
    everyone = Percent(threshold=POSITION_LIMIT, sealed=10**12)
    assert target_of(RolloutState(BUNDLE, STABLE, CANDIDATE, everyone), other) == Target(CANDIDATE)
    # Nothing verified yet: nothing to run.  A candidate equal to stable: stable.
    assert target_of(RolloutState(BUNDLE, None, CANDIDATE, Everyone()), pod) is None
    assert target_of(RolloutState(BUNDLE, STABLE, STABLE, Everyone()), pod) == Target(STABLE)


def test_a_pod_admitted_after_the_seal_stays_on_stable_whatever_its_position() -> None:
    pod = PodFacts(key="shop/late", admitted=2000)
    sealed = Percent(threshold=POSITION_LIMIT, sealed=1999)
    assert target_of(RolloutState(BUNDLE, STABLE, CANDIDATE, sealed), pod) == Target(STABLE)
    assert target_of(
        RolloutState(BUNDLE, STABLE, CANDIDATE, Percent(POSITION_LIMIT, 2000)), pod
    ) == Target(CANDIDATE)


def test_positions_depend_on_bundle_candidate_and_key() -> None:
    one = position(bundle=BUNDLE, candidate=CANDIDATE, key="shop/a")
    assert one == position(bundle=BUNDLE, candidate=CANDIDATE, key="shop/a")
    assert one != position(bundle="other", candidate=CANDIDATE, key="shop/a")
    assert one != position(bundle=BUNDLE, candidate=STABLE, key="shop/a")
    assert one != position(bundle=BUNDLE, candidate=CANDIDATE, key="shop/b")
    assert 0 <= one < POSITION_LIMIT


def test_selectors_follow_the_kubernetes_semantics() -> None:
    labels = {"app": "shop", "tier": "web"}
    assert Selector().matches(labels)
    assert Selector({"app": "shop"}).matches(labels)
    assert not Selector({"app": "shop", "tier": "db"}).matches(labels)
    assert Selector(match_expressions=(Requirement("tier", "In", ("web", "db")),)).matches(labels)
    assert not Selector(match_expressions=(Requirement("tier", "NotIn", ("web",)),)).matches(labels)
    assert Selector(match_expressions=(Requirement("zone", "NotIn", ("a",)),)).matches(labels)
    assert Selector(match_expressions=(Requirement("app", "Exists"),)).matches(labels)
    assert not Selector(match_expressions=(Requirement("app", "DoesNotExist"),)).matches(labels)
    with pytest.raises(ValueError, match="needs values"):
        Requirement("app", "In")
    with pytest.raises(ValueError, match="takes no values"):
        Requirement("app", "Exists", ("x",))
    with pytest.raises(ValueError, match="not one of"):
        Requirement("app", "Like", ("x",))  # type: ignore[arg-type]


# --- the plan's guarantees ----------------------------------------------------------------------


@SETTINGS
@given(n=st.integers(0, 120), percent=st.integers(0, 100))
def test_entering_a_stage_takes_exactly_its_share_lowest_positions_first(
    n: int, percent: int
) -> None:
    pods = facts(n)
    stage = plan(pods, percent)
    assert members(stage, pods) == lowest(pods, share(percent=percent, pods=n))


@SETTINGS
@given(
    n=st.integers(1, 80),
    added=st.integers(1, 80),
    percent=st.integers(1, 99),
    gaps=st.lists(st.integers(0, 3), min_size=80, max_size=80),
)
def test_adding_pods_never_moves_a_pod_out_and_never_exceeds_the_share(
    n: int, added: int, percent: int, gaps: list[int]
) -> None:
    pods = facts(n)
    first = plan(pods, percent)
    before = members(first, pods)
    # Newcomers, admitted after every pod the operator saw, some at the same instant.
    instant = max(p.admitted for p in pods)
    newcomers = []
    for i in range(added):
        instant += gaps[i]
        newcomers.append(PodFacts(key=f"shop/new-{i}", admitted=instant + 1))
    grown = [*pods, *newcomers]
    # Before the operator looks again, no newcomer is on the candidate ...
    assert members(first, grown) == before
    second = plan(grown, percent, first)
    after = members(second, grown)
    assert before <= after
    assert 1 <= len(after) <= share(percent=percent, pods=len(grown))
    assert second.threshold >= first.threshold and second.sealed >= first.sealed


@SETTINGS
@given(n=st.integers(1, 120), p1=st.integers(1, 100), p2=st.integers(1, 100))
def test_advancing_to_a_larger_share_keeps_every_pod_and_fills_the_share(
    n: int, p1: int, p2: int
) -> None:
    low, high = sorted((p1, p2))
    pods = facts(n)
    first = plan(pods, low)
    second = plan(pods, high, first)
    assert members(first, pods) <= members(second, pods)
    assert len(members(second, pods)) == share(percent=high, pods=n)


@SETTINGS
@given(n=st.integers(2, 120), removed=st.data(), percent=st.integers(1, 100))
def test_removing_pods_moves_no_pod_out_and_adds_none_past_the_share(
    n: int, removed: st.DataObject, percent: int
) -> None:
    pods = facts(n)
    first = plan(pods, percent)
    before = members(first, pods)
    gone = removed.draw(st.sets(st.sampled_from([p.key for p in pods]), max_size=n - 1))
    left = [p for p in pods if p.key not in gone]
    second = plan(left, percent, first)
    after = members(second, left)
    survivors = before - gone
    assert survivors <= after
    places = share(percent=percent, pods=len(left))
    assert 1 <= len(after) <= max(places, len(survivors))
    if len(survivors) < places:
        assert len(after) == places


@SETTINGS
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(1, 30), st.integers(0, 2)),
            st.tuples(st.just("remove"), st.integers(1, 10), st.integers(0, 10**6)),
            st.tuples(st.just("advance"), st.integers(1, 50), st.just(0)),
        ),
        max_size=12,
    ),
    start=st.integers(1, 60),
    percent=st.integers(1, 50),
)
def test_no_sequence_moves_a_pod_out_or_grows_past_the_share(
    ops: list[tuple[str, int, int]], start: int, percent: int
) -> None:
    pods = facts(start)
    stage = plan(pods, percent)
    next_id, instant = start, max(p.admitted for p in pods)
    for op, amount, extra in ops:
        before = members(stage, pods)
        if op == "add":
            # Admitted after every pod the operator saw; within the batch, some at one
            # instant (extra 0).
            instant += 1
            for _ in range(amount):
                pods.append(PodFacts(key=f"shop/pod-{next_id}", admitted=instant))
                instant += extra
                next_id += 1
        elif op == "remove" and len(pods) > 1:
            for _ in range(min(amount, len(pods) - 1)):
                pods.pop(extra % len(pods))
        elif op == "advance":
            percent = min(100, percent + amount)
        stage = plan(pods, percent, stage)
        after = members(stage, pods)
        survivors = before & {p.key for p in pods}
        assert survivors <= after, (op, survivors - after)
        assert 1 <= len(after) <= max(share(percent=percent, pods=len(pods)), len(survivors))
        # A restarted operator, from the published state alone, plans the same.
        assert plan(pods, percent, state_from_json_stage(stage)) == plan(pods, percent, stage)


def state_from_json_stage(stage: Percent) -> Percent:
    state = RolloutState(BUNDLE, STABLE, CANDIDATE, stage)
    restored = state_from_bytes(json.dumps(state_to_json(state)).encode()).stage
    assert isinstance(restored, Percent)
    return restored


def test_a_crowd_admitted_at_one_instant_still_gets_one_pod() -> None:
    first = plan(facts(20), 5)
    assert len(members(first, facts(20))) == 1
    # Every pod replaced at once by pods admitted at the same instant.
    crowd = [PodFacts(key=f"shop/crowd-{i}", admitted=5000) for i in range(20)]
    second = plan(crowd, 5, first)
    assert len(members(second, crowd)) == 1


@SETTINGS
@given(n=st.integers(1, 80), internal=st.integers(0, 80), percent=st.integers(1, 100))
def test_internal_pods_keep_the_candidate_and_count_in_the_share(
    n: int, internal: int, percent: int
) -> None:
    internal = min(internal, n)
    pods = facts(n, internal=internal)
    inside = {p.key for p in pods if INTERNAL.matches(p.labels)}
    stage = plan_percent(
        bundle=BUNDLE,
        candidate=CANDIDATE,
        percent=percent,
        pods=pods,
        carry_from=INTERNAL,
    )
    places = share(percent=percent, pods=n)
    chosen = members(stage, pods)
    # Every internal pod keeps the candidate; the share counts them.
    assert inside <= chosen
    assert len(chosen) == max(places, internal)


def test_pods_newer_than_the_horizon_wait_on_stable_until_it_passes_them() -> None:
    pods = facts(40)  # admitted 1000..1039
    first = plan(pods, 5, horizon=1019)
    assert first.sealed == 1019
    assert members(first, pods) <= {p.key for p in pods[:20]}
    assert len(members(first, pods)) == 2
    later = plan(pods, 5, first, horizon=2000)
    assert members(first, pods) == members(later, pods)
    assert later.sealed > first.sealed
    if later.sealed < 1039:
        # Sealing stopped before the pod that would have taken a third place.
        (blocker,) = [p for p in pods if p.admitted == later.sealed + 1]
        where = position(bundle=BUNDLE, candidate=CANDIDATE, key=blocker.key)
        assert where < later.threshold


def test_an_unseen_sibling_admitted_at_the_newest_instant_stays_on_stable() -> None:
    """What the horizon buys: a pod admitted with the newest one but not yet seen."""
    pods = facts(6)  # admitted 1000..1005
    stage = plan(pods, 50, horizon=1004)
    assert stage.sealed == 1004
    state = RolloutState(BUNDLE, STABLE, CANDIDATE, replace(stage, threshold=POSITION_LIMIT))
    assert target_of(state, PodFacts(key="shop/sibling", admitted=1005)) == Target(STABLE)
    assert target_of(state, PodFacts(key="shop/sibling", admitted=1004)) == Target(CANDIDATE)


def test_a_key_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        plan([PodFacts("shop/a"), PodFacts("shop/a")], 50)


# --- the published form ---------------------------------------------------------------------------


def test_every_stage_round_trips_through_its_published_form() -> None:
    stages = [
        None,
        Internal(
            Selector({"a": "b"}, (Requirement("c", "In", ("d",)), Requirement("e", "Exists")))
        ),
        Percent(threshold=12345, sealed=678, carry=Carry(INTERNAL, POSITION_LIMIT)),
        Percent(threshold=0, sealed=0),
        Everyone(),
        Split(25),
    ]
    for stage in stages:
        state = RolloutState(BUNDLE, STABLE, CANDIDATE, stage)
        text = json.dumps(state_to_json(state)).encode()
        assert state_from_bytes(text) == state
    assert state_from_json({"bundle": BUNDLE, "stable": None}) == RolloutState(BUNDLE, None)


VALID = {
    "bundle": BUNDLE,
    "stable": STABLE,
    "candidate": CANDIDATE,
    "stage": {"percent": {"threshold": "0x10", "sealed": 5}},
}


def _with(path: Sequence[str], value: object) -> Any:
    body = json.loads(json.dumps(VALID))
    here = body
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "state must be an object"),
        ({"stable": None}, "lacks bundle"),
        (_with(["extra"], 1), "unknown field"),
        (_with(["bundle"], ""), "bundle must be a name"),
        (_with(["stable"], "sha256:XYZ"), "stable must be a digest"),
        (_with(["candidate"], "md5:" + "0" * 64), "candidate must be a digest"),
        (_with(["candidate"], None), "stage needs state.candidate"),
        (_with(["stage"], {}), "exactly one"),
        (_with(["stage"], {"all": True, "requestPercent": 5}), "exactly one"),
        (_with(["stage"], {"all": 1}), "all must be true"),
        (_with(["stage"], {"requestPercent": 101}), "from 0 to 100"),
        (_with(["stage"], {"requestPercent": True}), "from 0 to 100"),
        (_with(["stage", "percent", "threshold"], "16"), "'0x'"),
        (_with(["stage", "percent", "threshold"], "0xABC"), "lower-case"),
        (_with(["stage", "percent", "threshold"], "0x" + "f" * 34), "hex digits"),
        (_with(["stage", "percent", "threshold"], "0x2" + "0" * 32), "above 2\\*\\*128"),
        (_with(["stage", "percent", "sealed"], -1), "sealed must be an integer"),
        (_with(["stage", "percent", "sealed"], "5"), "sealed must be an integer"),
        (_with(["stage", "percent", "carry"], {"selector": {}}), "lacks threshold"),
        (
            _with(["stage", "percent", "carry"], {"selector": [], "threshold": "0x1"}),
            "selector must be an object",
        ),
        (_with(["stage"], {"internal": {"matchLabels": {"a": 1}}}), "strings to strings"),
        (_with(["stage"], {"internal": {"matchExpressions": {}}}), "must be a list"),
        (
            _with(["stage"], {"internal": {"matchExpressions": [{"key": "a"}]}}),
            "lacks operator",
        ),
        (
            _with(["stage"], {"internal": {"matchExpressions": [{"key": "a", "operator": 1}]}}),
            "must be strings",
        ),
        (
            _with(
                ["stage"],
                {"internal": {"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}},
            ),
            "list of strings",
        ),
        (
            _with(["stage"], {"internal": {"matchExpressions": [{"key": "a", "operator": "In"}]}}),
            "needs values",
        ),
    ],
)
def test_a_state_outside_the_grammar_is_refused_saying_where(body: object, message: str) -> None:
    with pytest.raises(StateError, match=message):
        state_from_json(body)


def test_a_published_state_that_is_not_json_or_too_big_is_refused() -> None:
    with pytest.raises(StateError, match="not JSON"):
        state_from_bytes(b"\xff\xfe")
    with pytest.raises(StateError, match="not JSON"):
        state_from_bytes(b"{")
    with pytest.raises(StateError, match="more than"):
        state_from_bytes(b" " * (MAX_STATE_BYTES + 1))


def test_a_state_without_stable_means_nothing_verified_and_assigns_nothing() -> None:
    # The status model drops null fields; an absent `stable` reads as none.
    state = state_from_json({"bundle": BUNDLE})
    assert state.stable is None
    assert target_of(state, PodFacts(key="shop/web-0")) is None


def test_a_states_revision_survives_its_published_form_and_is_not_part_of_a_target() -> None:
    state = RolloutState(bundle=BUNDLE, stable="sha256:" + "1" * 64, revision=1_765_000_000_123)
    assert state_from_json(state_to_json(state)) == state
    target = target_of(state, PodFacts(key="shop/web-0"))
    assert target is not None and target.revision == state.revision
    assert target == Target(digest="sha256:" + "1" * 64), "the revision is not what a pod runs"


@pytest.mark.parametrize("revision", [-1, "12", 1.5, True, 2**63])
def test_a_revision_that_is_not_a_count_is_refused(revision: object) -> None:
    with pytest.raises(StateError, match="revision"):
        state_from_json({"bundle": BUNDLE, "stable": None, "revision": revision})
