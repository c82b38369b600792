"""The cohorts a rollout publishes: shares, stickiness, determinism, the admission seal.

Every pod's target follows from one published state (``decision.state``, also
``status.targetState``) and the pod's own facts; these tests read the cohorts
off that state, through :func:`~logicbundle.rollout.publish` and
:func:`~logicbundle.rollout.assignments`, or through whole :func:`step` calls.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle import contract
from logicbundle.api import LogicBundleSpec, LogicBundleStatus, Stage
from logicbundle.rollout import (
    ADMISSION_LAG_MS,
    Decision,
    PodIdentity,
    PodReport,
    PodTarget,
    assignments,
    cohort_key,
    format_target,
    parse_target,
    publish,
    share,
)
from tests.rollout._fixtures import (
    BUNDLE,
    D1,
    D2,
    D3,
    INTERNAL,
    NS,
    T0,
    converge,
    make_spec,
    ms,
    ok,
    pod,
    pods,
    published,
    run,
)

SETTINGS = settings(max_examples=100, deadline=None)
S = timedelta(seconds=1)
LAG = timedelta(milliseconds=ADMISSION_LAG_MS)


def on_candidate(plan: Mapping[PodIdentity, PodTarget], candidate: str = D2) -> set[PodIdentity]:
    return {p for p, t in plan.items() if t.digest == candidate}


def planned(stage: Stage | None, reports: Sequence[PodReport]) -> dict[PodIdentity, PodTarget]:
    state = publish(
        bundle_name=BUNDLE,
        stage=stage,
        stable=D1,
        candidate=D2,
        previous=None,
        pods=reports,
        now=T0,
    )
    return assignments(state, reports)


def canary_spec(percent: int) -> LogicBundleSpec:
    """A percent stage that holds (it waits for a passing analysis), then everyone."""
    return make_spec(stages=[{"name": "canary", "percent": percent}, {"name": "all", "all": True}])


def start(spec: LogicBundleSpec, reports: Sequence[PodReport], *, candidate: str = D2) -> Decision:
    """D1 installed, then ``candidate`` verified: the rollout's first published state."""
    first = run(spec=spec, status=None, reports=reports, now=T0 - S, verified=ok(D1))
    return run(spec=spec, status=first.status, reports=reports, now=T0, verified=ok(candidate))


def again(
    spec: LogicBundleSpec, decision: Decision, reports: Sequence[PodReport], now: datetime
) -> Decision:
    return run(spec=spec, status=decision.status, reports=reports, now=now)


# --- the stages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "n", "expected"),
    [
        (0, 10, 0),
        (5, 0, 0),
        (5, 1, 1),
        (5, 19, 1),
        (5, 20, 1),
        (5, 39, 1),
        (5, 40, 2),
        (50, 3, 1),
        (99, 10, 9),
        (100, 7, 7),
    ],
)
def test_share_rounds_down_but_never_below_one_pod(percent: int, n: int, expected: int) -> None:
    assert share(percent=percent, pods=n) == expected


def test_an_internal_stage_takes_exactly_the_pods_its_selector_matches() -> None:
    stage = Stage.model_validate(INTERNAL)
    plan = planned(stage, pods(5, internal=(1, 3)))
    assert {p.name for p in on_candidate(plan)} == {"p001", "p003"}
    assert len(plan) == 5


def test_the_all_stage_takes_every_pod_and_no_stage_means_stable() -> None:
    reports = pods(4)
    everyone = planned(Stage.model_validate({"name": "all", "all": True}), reports)
    assert on_candidate(everyone) == {r.pod for r in reports}
    nobody = planned(None, reports)
    assert on_candidate(nobody) == set()
    assert {t.digest for t in nobody.values()} == {D1}


def test_nothing_is_assigned_without_a_stable_digest() -> None:
    state = publish(
        bundle_name=BUNDLE,
        stage=None,
        stable=None,
        candidate=None,
        previous=None,
        pods=pods(3),
        now=T0,
    )
    assert assignments(state, pods(3)) == {}


def test_a_new_pod_gets_nothing_before_any_digest_is_verified() -> None:
    decision = run(spec=make_spec(), status=None, reports=pods(2), now=T0)
    assert decision.state is not None
    newcomer = contract.PodFacts(key="uid/abc", labels={"app": "shop"}, admitted=ms(T0))
    assert contract.target_of(decision.state, newcomer) is None


def test_a_pod_listed_twice_is_an_error() -> None:
    twice = [pod("a"), pod("a")]
    with pytest.raises(ValueError, match="listed twice"):
        planned(Stage(name="canary", percent=50), twice)
    state = publish(
        bundle_name=BUNDLE, stage=None, stable=D1, candidate=None, previous=None, pods=[], now=T0
    )
    with pytest.raises(ValueError, match="listed twice"):
        assignments(state, twice)


def test_a_pod_without_name_or_cohort_key_cannot_be_placed() -> None:
    with pytest.raises(ValueError, match="cohort key"):
        _ = PodIdentity(namespace=NS, name="").key


def test_the_webhook_cohort_key_uses_the_name_when_known_and_the_request_uid_otherwise() -> None:
    assert cohort_key(namespace=NS, name="db-0", request_uid="u1") == f"{NS}/db-0"
    assert cohort_key(namespace=NS, name=None, request_uid="u1") == "uid/u1"
    assert PodIdentity(namespace=NS, name="x", cohort_key="uid/u1").key == "uid/u1"


def test_a_pod_is_placed_by_its_cohort_key_not_its_name() -> None:
    spec = canary_spec(50)
    named = pods(20)
    keyed = [
        dataclasses.replace(r, pod=dataclasses.replace(r.pod, cohort_key=f"uid/{r.pod.name}"))
        for r in named
    ]
    by_name = {p.name for p in on_candidate(start(spec, named).assignments)}
    by_key = {p.name for p in on_candidate(start(spec, keyed).assignments)}
    assert len(by_name) == len(by_key) == 10
    assert by_name != by_key


@pytest.mark.parametrize(
    "target",
    [
        PodTarget(digest=D1),
        PodTarget(digest=D1, candidate=D2, weight=5),
        PodTarget(digest=D1, candidate=D2, weight=0),
    ],
)
def test_a_target_survives_its_text_format(target: PodTarget) -> None:
    assert parse_target(format_target(target)) == target


@pytest.mark.parametrize(
    "value",
    [
        "latest",
        D1 + ";candidate=" + D1 + ";weight=5",
        D1 + ";weight=5",
        D1 + ";candidate=" + D2 + ";weight=101",
    ],
)
def test_a_malformed_or_contradictory_target_text_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_target(value)


# --- percent stages, step after step ----------------------------------------------------

names = st.lists(st.text("abcdefghij0123456789-", min_size=1, max_size=8), unique=True, max_size=40)


def newcomers(count: int, *, first: datetime, prefix: str = "new") -> list[PodReport]:
    """Pods admitted one millisecond apart from ``first`` on."""
    return [pod(f"{prefix}-{i}", admitted=ms(first) + i) for i in range(count)]


@SETTINGS
@given(
    pod_names=names.filter(bool),
    percent=st.integers(1, 100),
    gone=st.sets(st.integers(0, 39)),
    added=st.integers(0, 20),
)
def test_a_percent_stage_keeps_its_pods_grows_only_to_its_share_and_has_a_pod(
    pod_names: list[str], percent: int, gone: set[int], added: int
) -> None:
    spec = canary_spec(percent)
    before = [pod(n) for n in pod_names]
    first = start(spec, before)
    assert len(on_candidate(first.assignments)) == share(percent=percent, pods=len(before))
    # Pods go away, new ones are admitted; the next step is past their admission lag.
    after = [r for i, r in enumerate(before) if i not in gone]
    after += newcomers(added, first=T0 + S)
    second = again(spec, first, after, T0 + 10 * S + LAG)
    if after:
        assert second.status.stage == "canary"
    kept = on_candidate(first.assignments) & {r.pod for r in after}
    chosen = on_candidate(second.assignments)
    places = share(percent=percent, pods=len(after))
    assert kept <= chosen
    # Every pod was sealable, at distinct instants: the stage fills its share exactly,
    # and has a pod whenever there is one.
    assert len(chosen) == max(places, len(kept))
    assert len(chosen) >= min(1, len(after))


@SETTINGS
@given(
    pod_names=names.filter(bool),
    percent=st.integers(1, 100),
    rounds=st.lists(st.tuples(st.integers(0, 8), st.integers(1, 8_000)), max_size=6),
)
def test_adding_pods_never_moves_a_pod_out_of_the_candidate_cohort(
    pod_names: list[str], percent: int, rounds: list[tuple[int, int]]
) -> None:
    spec = canary_spec(percent)
    reports = [pod(n) for n in pod_names]
    decision = start(spec, reports)
    now = T0
    for index, (count, gap_ms) in enumerate(rounds):
        # New pods, admitted after every pod before them; steps come faster than the lag.
        reports = [*reports, *newcomers(count, first=now + S, prefix=f"r{index}")]
        now += S + timedelta(milliseconds=count + gap_ms)
        later = again(spec, decision, reports, now)
        assert on_candidate(decision.assignments) <= on_candidate(later.assignments)
        assert len(on_candidate(later.assignments)) <= max(
            share(percent=percent, pods=len(reports)), len(on_candidate(decision.assignments))
        )
        decision = later


@SETTINGS
@given(
    pod_names=names,
    percent=st.integers(0, 100),
    seed=st.integers(0, 2**32),
    added=st.integers(0, 10),
)
def test_the_plan_is_deterministic_and_ignores_the_order_of_pods(
    pod_names: list[str], percent: int, seed: int, added: int
) -> None:
    spec = canary_spec(percent)
    reports = [pod(n) for n in pod_names]
    first = start(spec, reports)
    reports += newcomers(added, first=T0 + S)
    shuffled = list(reports)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a test's shuffle
    a = again(spec, first, reports, T0 + 10 * S)
    b = again(spec, first, shuffled, T0 + 10 * S)
    assert a.state == b.state
    assert a.assignments == b.assignments
    assert a.status.target_state == b.status.target_state


@SETTINGS
@given(
    pod_names=st.lists(
        st.text("abcdef", min_size=1, max_size=6), unique=True, min_size=20, max_size=40
    )
)
def test_each_candidate_draws_its_own_canaries(pod_names: list[str]) -> None:
    spec = canary_spec(25)
    reports = [pod(n) for n in pod_names]
    candidates = (D2, D3, "sha256:" + "5" * 64, "sha256:" + "6" * 64)
    picks = {
        frozenset(on_candidate(start(spec, reports, candidate=c).assignments, c))
        for c in candidates
    }
    assert len(picks) > 1


def test_the_internal_pods_keep_the_candidate_into_a_smaller_percent_stage() -> None:
    """Issue 11, defect 7: the demo's 'v1:8, v2:2' became 'v1:9, v2:1' at the 5 % stage,
    so a user of the second internal pod saw v2, then v1, then v2 again."""
    spec = make_spec(
        stages=[
            INTERNAL,
            {"name": "canary", "percent": 5, "pause": "1h"},
            {"name": "all", "all": True},
        ],
        skip_analysis=True,
    )
    reports = pods(10, internal=(0, 1))
    internal = start(spec, reports)
    assert internal.status.stage == "internal"
    assert {p.name for p in on_candidate(internal.assignments)} == {"p000", "p001"}
    reports = converge(internal, reports)
    canary = again(spec, internal, reports, T0 + S)
    assert canary.status.stage == "canary"
    assert isinstance(canary.state.stage if canary.state else None, contract.Percent)
    # The share is one pod; the two internal pods are already on the candidate and stay.
    assert {p.name for p in on_candidate(canary.assignments)} == {"p000", "p001"}


def test_an_internal_pod_admitted_just_before_the_percent_stage_keeps_the_candidate() -> None:
    """Regression: a percent stage seals only pods older than the admission lag, and the
    carry from the internal stage kept only sealed pods, so an internal pod admitted a
    few seconds before the stage began ran the candidate, then went back to stable."""
    spec = make_spec(
        stages=[
            INTERNAL,
            {"name": "canary", "percent": 5, "pause": "1h"},
            {"name": "all", "all": True},
        ],
        skip_analysis=True,
    )
    reports = pods(10, internal=(0, 1))
    decision = start(spec, reports)
    late = pod("late", internal=True, admitted=ms(T0 + S))
    reports = [*reports, late]
    decision = again(spec, decision, reports, T0 + 2 * S)
    assert decision.status.stage == "internal"
    assert decision.assignments[late.pod].digest == D2
    reports = converge(decision, reports)
    canary = again(spec, decision, reports, T0 + 3 * S)
    assert canary.status.stage == "canary"
    assert canary.assignments[late.pod].digest == D2
    assert {p.name for p in on_candidate(canary.assignments)} == {"p000", "p001", "late"}


def test_a_pod_admitted_within_the_lag_is_sealed_only_once_old_enough() -> None:
    spec = canary_spec(50)
    reports = pods(2)
    first = start(spec, reports)
    assert len(on_candidate(first.assignments)) == 1
    # Four more pods make the share three; the two old pods fill only two places,
    # and the new pods are younger than the lag: nobody takes the third place yet.
    young = newcomers(4, first=T0 + S)
    reports = [*reports, *young]
    too_soon = again(spec, first, reports, T0 + S + LAG / 2)
    assert on_candidate(too_soon.assignments) == {r.pod for r in reports[:2]}
    stage = too_soon.state.stage if too_soon.state else None
    assert isinstance(stage, contract.Percent) and stage.sealed < ms(T0 + S)
    # Old enough: sealed (in admission order) while the share has room.
    later = again(spec, too_soon, reports, T0 + S + LAG + S)
    assert len(on_candidate(later.assignments)) == 3
    assert len(on_candidate(later.assignments) & {r.pod for r in young}) == 1
    assert on_candidate(too_soon.assignments) <= on_candidate(later.assignments)


def test_a_pod_younger_than_the_lag_is_sealed_when_no_pod_is_older() -> None:
    """Nothing to judge otherwise: with every pod just admitted, the stage takes them."""
    spec = canary_spec(50)
    reports = pods(4, admitted=ms(T0))
    first = start(spec, reports)
    assert len(on_candidate(first.assignments)) == 2


def test_the_published_state_survives_the_stored_status_and_a_restart() -> None:
    spec = canary_spec(30)
    reports = pods(12)
    first = start(spec, reports)
    canaries = on_candidate(first.assignments)
    assert len(canaries) == 3
    # Six other pods go away, three are admitted: the share drops to two.
    others = [r for r in reports if r.pod not in canaries]
    reports = [r for r in reports if r.pod in canaries] + others[:3]
    reports += newcomers(3, first=T0 + S)
    moved = again(spec, first, reports, T0 + 2 * S + LAG)
    assert moved.state is not None
    assert published(moved.status) == moved.state
    stored = LogicBundleStatus.model_validate(
        moved.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    assert published(stored) == moved.state
    now = T0 + 5 * S + 2 * LAG
    live = again(spec, moved, reports, now)
    restarted = run(spec=spec, status=stored, reports=reports, now=now)
    assert restarted.state == live.state
    assert restarted.assignments == live.assignments
    assert canaries <= on_candidate(live.assignments)
    # The stored state is what keeps them: planned afresh, the stage has only its share.
    forgot = run(
        spec=spec, status=stored.model_copy(update={"target_state": None}), reports=reports, now=now
    )
    assert len(on_candidate(forgot.assignments)) == share(percent=30, pods=len(reports)) == 2
