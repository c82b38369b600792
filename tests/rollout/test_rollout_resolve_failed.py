"""Source failures decide the conditions (issue 11, defect 2).

``ResolveFailed`` was documented (CRD reference, GitOps page, Argo CD health
check) and never set: a registry or credential failure was only a log line
and an event, invisible to ``kubectl wait``, kstatus and Argo CD.  A failure
a retry may fix is ``ResolveFailed`` (Reconciling, never Stalled); one only a
change of the spec or of what it names fixes is ``InvalidSource`` (Stalled);
a spec the models refuse is ``InvalidSpec`` through the same mapping
(:func:`logicbundle.rollout.refused`).
"""

from __future__ import annotations

from datetime import timedelta

from logicbundle.api import conditions
from logicbundle.rollout import SourceFailure, refused, step
from tests.rollout._fixtures import BUNDLE, D1, T0, cond, installed, make_spec, ok, pods, run

SPEC = make_spec(skip_analysis=True)
MESSAGE = "RegistryUnavailable: resolving registry.example/shop/pricing:v2: unreachable"
ERROR = SourceFailure(reason=conditions.RESOLVE_FAILED, message=MESSAGE)
STALLING = SourceFailure(
    reason=conditions.INVALID_SOURCE,
    message="InsecureTransportRefused: registry.example speaks plain HTTP",
    stalled=True,
)


def _step(status, reports, *, source_error, verified=None, now=T0 + timedelta(minutes=1)):  # type: ignore[no-untyped-def]
    return step(
        bundle_name=BUNDLE,
        generation=1,
        spec=SPEC,
        status=status,
        pods=reports,
        verdict=None,
        action=None,
        verified=verified,
        now=now,
        source_error=source_error,
    )


def test_a_failed_source_check_is_ready_false_while_the_stable_digest_keeps_serving() -> None:
    status, reports = installed(SPEC, pods(3))
    assert cond(status, conditions.READY) == ("True", conditions.SUCCEEDED)
    decision = _step(status, reports, source_error=ERROR)
    new = decision.status
    assert cond(new, conditions.READY) == ("False", conditions.RESOLVE_FAILED)
    assert cond(new, conditions.STALLED) == ("False", conditions.RESOLVE_FAILED)
    # Flux's convention: retried, so still Reconciling (kstatus: InProgress).
    assert cond(new, conditions.RECONCILING) == ("True", conditions.RESOLVE_FAILED)
    ready = next(c for c in new.conditions if c.type == conditions.READY)
    assert MESSAGE in ready.message and "pods keep" in ready.message
    # Nothing moves: every pod stays on the stable digest.
    assert {t.digest for t in decision.assignments.values()} == {D1}
    assert new.stable_digest == D1


def test_the_next_successful_check_makes_it_ready_again() -> None:
    status, reports = installed(SPEC, pods(2))
    failed = _step(status, reports, source_error=ERROR).status
    again = _step(failed, reports, source_error=None, verified=ok(D1)).status
    assert cond(again, conditions.READY) == ("True", conditions.SUCCEEDED)


def test_before_anything_was_verified_it_says_nothing_can_run_yet() -> None:
    decision = _step(None, pods(2), source_error=ERROR, now=T0)
    ready = next(c for c in decision.status.conditions if c.type == conditions.READY)
    assert (ready.status, ready.reason) == ("False", conditions.RESOLVE_FAILED)
    assert "nothing verified to run yet" in ready.message
    assert decision.assignments == {}


def test_a_rollout_in_flight_goes_on_with_its_verified_candidate() -> None:
    from tests.rollout._fixtures import D2

    status, reports = installed(SPEC, pods(3))
    started = run(spec=SPEC, status=status, reports=reports, now=T0 + timedelta(1), verified=ok(D2))
    assert started.status.candidate_digest == D2
    decision = _step(started.status, reports, source_error=ERROR, now=T0 + timedelta(1, 1))
    assert cond(decision.status, conditions.RECONCILING)[0] == "True"  # type: ignore[index]
    assert cond(decision.status, conditions.READY)[1] != conditions.RESOLVE_FAILED  # type: ignore[index]


def test_an_unrecoverable_source_failure_is_stalled_while_the_stable_digest_keeps_serving() -> None:
    status, reports = installed(SPEC, pods(3))
    decision = _step(status, reports, source_error=STALLING)
    new = decision.status
    assert cond(new, conditions.STALLED) == ("True", conditions.INVALID_SOURCE)
    assert cond(new, conditions.READY) == ("False", conditions.INVALID_SOURCE)
    # Never Reconciling and Stalled together (kstatus: Failed, not InProgress).
    assert cond(new, conditions.RECONCILING) == ("False", conditions.INVALID_SOURCE)
    stalled = next(c for c in new.conditions if c.type == conditions.STALLED)
    assert stalled.message.startswith("InsecureTransportRefused: ")
    assert f"pods keep {D1[7:19]}" in stalled.message
    assert new.phase == "Failed"
    assert {t.digest for t in decision.assignments.values()} == {D1}
    assert new.stable_digest == D1
    assert decision.state is not None and decision.state.stable == D1


def test_a_fixed_source_after_a_stall_is_ready_again() -> None:
    status, reports = installed(SPEC, pods(2))
    stalled = _step(status, reports, source_error=STALLING).status
    again = _step(stalled, reports, source_error=None, verified=ok(D1)).status
    assert cond(again, conditions.READY) == ("True", conditions.SUCCEEDED)
    assert cond(again, conditions.STALLED) == ("False", conditions.SUCCEEDED)
    assert again.phase == "Succeeded"


def test_a_failed_verification_stall_wins_over_a_later_source_failure() -> None:
    from tests.rollout._fixtures import D2, bad

    status, reports = installed(SPEC, pods(2))
    refused_digest = _step(status, reports, source_error=None, verified=bad(D2)).status
    assert cond(refused_digest, conditions.STALLED) == ("True", conditions.VERIFICATION_FAILED)
    later = _step(refused_digest, reports, source_error=ERROR).status
    assert cond(later, conditions.STALLED) == ("True", conditions.VERIFICATION_FAILED)


def test_a_refused_spec_goes_through_the_same_mapping_and_changes_nothing_else() -> None:
    status, reports = installed(SPEC, pods(2))
    failure = SourceFailure(
        reason=conditions.INVALID_SPEC, message="spec cannot be acted on: x: bad", stalled=True
    )
    decision = refused(generation=2, status=status, failure=failure, now=T0 + timedelta(1))
    new = decision.status
    stalled_by_source = _step(status, reports, source_error=STALLING).status
    for type_ in (conditions.STALLED, conditions.RECONCILING, conditions.READY):
        assert cond(new, type_)[0] == cond(stalled_by_source, type_)[0]  # type: ignore[index]
        assert cond(new, type_)[1] == conditions.INVALID_SPEC  # type: ignore[index]
    assert all(
        c.observed_generation == 2
        for c in new.conditions
        if c.type in (conditions.STALLED, conditions.RECONCILING, conditions.READY)
    )
    assert new.observed_generation == 2
    assert new.phase == "Failed"
    verified_before = next(c for c in status.conditions if c.type == conditions.VERIFIED)
    assert verified_before in new.conditions, "the other conditions are kept"
    assert new.model_copy(update={"conditions": status.conditions}) == status.model_copy(
        update={"observed_generation": 2, "phase": "Failed"}
    ), "nothing but the conditions, the generation and the phase changes"
    assert decision.state is not None and decision.state.stable == D1
    assert decision.assignments == {}, "no pod is touched"
