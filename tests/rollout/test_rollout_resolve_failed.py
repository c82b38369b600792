"""ResolveFailed: a source check that fails in a way a retry may fix (issue 11, defect 2).

It was documented (CRD reference, GitOps page, Argo CD health check) and never
set: a registry or credential failure was only a log line and an event,
invisible to ``kubectl wait``, kstatus and Argo CD.
"""

from __future__ import annotations

from datetime import timedelta

from logicbundle.api import conditions
from logicbundle.rollout import step
from tests.rollout._fixtures import BUNDLE, D1, T0, cond, installed, make_spec, ok, pods, run

SPEC = make_spec(skip_analysis=True)
ERROR = "resolving registry.example/shop/pricing:v2: registry.example is unreachable"


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
    assert ERROR in ready.message and "pods keep" in ready.message
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
