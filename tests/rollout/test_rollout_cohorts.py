"""The cohort rule: shares, stickiness, determinism, and the webhook's question."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle.api import LogicBundleStatus, Stage
from logicbundle.rollout import (
    PodIdentity,
    PodReport,
    PodTarget,
    cohort_key,
    desired_target,
    format_target,
    parse_target,
    plan_assignments,
    share,
)
from tests.rollout._fixtures import BUNDLE, D1, D2, D3, NS, make_spec, pod, pods

SETTINGS = settings(max_examples=200, deadline=None)


def percent_stage(p: int) -> Stage:
    return Stage(name="canary", percent=p)


def on_candidate(plan: dict[PodIdentity, PodTarget], candidate: str = D2) -> set[PodIdentity]:
    return {p for p, t in plan.items() if t.digest == candidate}


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
    stage = Stage.model_validate(
        {"name": "internal", "internal": {"matchLabels": {"logicbundle.io/cohort": "internal"}}}
    )
    plan = plan_assignments(
        bundle_name=BUNDLE, stage=stage, stable=D1, candidate=D2, pods=pods(5, internal=(1, 3))
    )
    assert {p.name for p in on_candidate(plan)} == {"p001", "p003"}


def test_the_all_stage_takes_every_pod_and_no_stage_means_stable() -> None:
    reports = pods(4)
    all_stage = Stage.model_validate({"name": "all", "all": True})
    assert on_candidate(
        plan_assignments(bundle_name=BUNDLE, stage=all_stage, stable=D1, candidate=D2, pods=reports)
    ) == {r.pod for r in reports}
    assert (
        on_candidate(
            plan_assignments(bundle_name=BUNDLE, stage=None, stable=D1, candidate=D2, pods=reports)
        )
        == set()
    )


def test_nothing_is_assigned_without_a_stable_digest() -> None:
    assert (
        plan_assignments(bundle_name=BUNDLE, stage=None, stable=None, candidate=None, pods=pods(3))
        == {}
    )


def test_a_pod_listed_twice_is_an_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        plan_assignments(
            bundle_name=BUNDLE, stage=None, stable=D1, candidate=None, pods=[pod("a"), pod("a")]
        )


def test_a_pod_without_name_or_cohort_key_cannot_be_placed() -> None:
    with pytest.raises(ValueError, match="cohort key"):
        _ = PodIdentity(namespace=NS, name="").key


def test_the_webhook_cohort_key_uses_the_name_when_known_and_the_request_uid_otherwise() -> None:
    assert cohort_key(namespace=NS, name="db-0", request_uid="u1") == f"{NS}/db-0"
    assert cohort_key(namespace=NS, name=None, request_uid="u1") == "uid/u1"
    assert PodIdentity(namespace=NS, name="x", cohort_key="uid/u1").key == "uid/u1"


@pytest.mark.parametrize(
    "target",
    [
        PodTarget(digest=D1),
        PodTarget(digest=D1, candidate=D2, weight=5),
        PodTarget(digest=D1, candidate=D2, weight=0),
    ],
)
def test_a_target_survives_its_annotation_format(target: PodTarget) -> None:
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
def test_a_malformed_or_contradictory_target_annotation_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_target(value)


def test_the_webhook_puts_a_new_pod_where_the_controller_would() -> None:
    spec = make_spec(stages=[{"name": "canary", "percent": 50}, {"name": "all", "all": True}])
    status = LogicBundleStatus(stable_digest=D1, candidate_digest=D2, stage="canary", stage_index=0)
    existing = pods(6)
    newcomer = PodReport(
        pod=PodIdentity(namespace=NS, name="", cohort_key="uid/abc"), labels={"app": "shop"}
    )
    target = desired_target(
        bundle_name=BUNDLE, spec=spec, status=status, pod=newcomer, pods=existing
    )
    plan = plan_assignments(
        bundle_name=BUNDLE,
        stage=spec.rollout.effective_stages()[0],
        stable=D1,
        candidate=D2,
        pods=[*existing, newcomer],
    )
    assert target == plan[newcomer.pod]


def test_a_new_pod_gets_nothing_before_any_digest_is_verified() -> None:
    assert (
        desired_target(bundle_name=BUNDLE, spec=make_spec(), status=None, pod=pod("a"), pods=[])
        is None
    )


# --- properties -------------------------------------------------------------------------

names = st.lists(st.text("abcdefghij0123456789-", min_size=1, max_size=8), unique=True, max_size=60)


def reports_from(pod_names: list[str], assigned: list[bool]) -> list[PodReport]:
    return [
        PodReport(
            pod=PodIdentity(namespace=NS, name=n),
            assigned=PodTarget(digest=D2 if on else D1),
        )
        for n, on in zip(pod_names, assigned, strict=False)
    ] + [PodReport(pod=PodIdentity(namespace=NS, name=n)) for n in pod_names[len(assigned) :]]


@SETTINGS
@given(pod_names=names, percent=st.integers(0, 100), assigned=st.lists(st.booleans(), max_size=60))
def test_a_percent_stage_keeps_its_pods_grows_only_to_its_share_and_has_a_pod(
    pod_names: list[str], percent: int, assigned: list[bool]
) -> None:
    reports = reports_from(pod_names, assigned)
    plan = plan_assignments(
        bundle_name=BUNDLE, stage=percent_stage(percent), stable=D1, candidate=D2, pods=reports
    )
    chosen = on_candidate(plan)
    had = {r.pod for r in reports if r.assigned is not None and r.assigned.digest == D2}
    places = share(percent=percent, pods=len(reports))
    # Every pod that had the candidate keeps it; the stage grows only up to its share.
    assert had <= chosen
    assert len(chosen) == max(places, len(had))
    if percent > 0 and reports:
        assert len(chosen) >= 1


@SETTINGS
@given(pod_names=names, extra=names, percent=st.integers(1, 100))
def test_adding_pods_never_moves_a_pod_out_of_the_candidate_cohort(
    pod_names: list[str], extra: list[str], percent: int
) -> None:
    stage = percent_stage(percent)
    before = [PodReport(pod=PodIdentity(namespace=NS, name=n)) for n in pod_names]
    plan = plan_assignments(bundle_name=BUNDLE, stage=stage, stable=D1, candidate=D2, pods=before)
    applied = [dataclasses.replace(r, assigned=plan[r.pod]) for r in before]
    newcomers = [PodReport(pod=PodIdentity(namespace=NS, name="new-" + n)) for n in extra]
    after = plan_assignments(
        bundle_name=BUNDLE, stage=stage, stable=D1, candidate=D2, pods=[*applied, *newcomers]
    )
    assert on_candidate(plan) <= on_candidate(after)


@SETTINGS
@given(
    pod_names=names,
    percent=st.integers(0, 100),
    seed=st.integers(0, 2**32),
    assigned=st.lists(st.booleans(), max_size=60),
)
def test_the_plan_is_deterministic_and_ignores_the_order_of_pods(
    pod_names: list[str], percent: int, seed: int, assigned: list[bool]
) -> None:
    reports = reports_from(pod_names, assigned)
    shuffled = list(reports)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a test's shuffle
    kwargs = {"bundle_name": BUNDLE, "stage": percent_stage(percent), "stable": D1, "candidate": D2}
    assert plan_assignments(pods=reports, **kwargs) == plan_assignments(pods=shuffled, **kwargs)  # type: ignore[arg-type]


@SETTINGS
@given(
    pod_names=st.lists(
        st.text("abcdef", min_size=1, max_size=6), unique=True, min_size=20, max_size=40
    )
)
def test_each_candidate_draws_its_own_canaries(pod_names: list[str]) -> None:
    reports = [PodReport(pod=PodIdentity(namespace=NS, name=n)) for n in pod_names]
    picks = {
        frozenset(
            on_candidate(
                plan_assignments(
                    bundle_name=BUNDLE,
                    stage=percent_stage(25),
                    stable=D1,
                    candidate=c,
                    pods=reports,
                ),
                c,
            )
        )
        for c in (D2, D3, "sha256:" + "5" * 64, "sha256:" + "6" * 64)
    }
    assert len(picks) > 1


def test_the_internal_pods_keep_the_candidate_into_a_smaller_percent_stage() -> None:
    """Issue 11, defect 7: the demo's 'v1:8, v2:2' became 'v1:9, v2:1' at the 5 % stage,
    so a user of the second internal pod saw v2, then v1, then v2 again."""
    reports = [
        PodReport(pod=PodIdentity(namespace=NS, name=f"p{i}"), assigned=PodTarget(digest=D2))
        for i in range(2)
    ] + [
        PodReport(pod=PodIdentity(namespace=NS, name=f"p{i}"), assigned=PodTarget(digest=D1))
        for i in range(2, 10)
    ]
    plan = plan_assignments(
        bundle_name=BUNDLE, stage=percent_stage(5), stable=D1, candidate=D2, pods=reports
    )
    assert on_candidate(plan) == {r.pod for r in reports[:2]}
