"""``LogicBundle`` objects whose status comes from the real rollout state machine.

Each builder drives :func:`logicbundle.rollout.step` (through the rollout
tests' fixtures) to one situation a user meets, and returns the whole object
as the API server would serve it: ``apiVersion``, ``kind``, ``metadata``
(generation, resourceVersion), ``spec`` and the camelCase ``status``.  The
Argo CD Lua tests and the CLI's rendering tests read the same objects; the
end-to-end suite checks the Lua against live objects in the same situations.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from logicbundle.api import LogicBundleSpec, LogicBundleStatus, RequestedAction, conditions, names
from logicbundle.rollout import AnalysisVerdict, BuiltinSample, SourceFailure, judge_builtin, step
from tests.rollout._fixtures import (
    BUNDLE,
    D1,
    D2,
    INTERNAL,
    NS,
    T0,
    bad,
    converge,
    installed,
    make_spec,
    ok,
    pods,
    run,
)

S: Final = timedelta(seconds=1)
GATED: Final[list[dict[str, Any]]] = [
    {**INTERNAL, "manualGate": True},
    {"name": "all", "all": True},
]
PAUSED: Final[list[dict[str, Any]]] = [{**INTERNAL, "pause": "5m"}, {"name": "all", "all": True}]
JUDGED: Final[list[dict[str, Any]]] = [INTERNAL, {"name": "all", "all": True}]


_BUCKETS: Final = ((0.01, 0), (0.02, 0), (0.04, 0), (float("inf"), 0))


def _sample(calls: int, errors: int) -> BuiltinSample:
    """``calls`` calls through the SDK, ``errors`` of them failed, all within 20 ms."""
    buckets = tuple((bound, calls if bound >= 0.02 else 0) for bound, _ in _BUCKETS)
    return BuiltinSample(calls=calls, errors=errors, latency_buckets=buckets, pods=2)


def _verdict(spec: LogicBundleSpec, *, calls: int, errors: int) -> AnalysisVerdict:
    """The real builtin analysis of the candidate against a healthy stable."""
    return judge_builtin(
        analysis=spec.rollout.analysis,
        candidate=_sample(calls, errors),
        stable=_sample(4000, 4),
    )


def as_object(
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    *,
    generation: int = 1,
    resource_version: str = "1001",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The object the API server would return for ``spec`` and ``status``."""
    metadata: dict[str, Any] = {
        "name": BUNDLE,
        "namespace": NS,
        "generation": generation,
        "resourceVersion": resource_version,
        "uid": "0f6c2a52-5a8e-4d6e-9d3c-1b2c3d4e5f60",
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    obj: dict[str, Any] = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": metadata,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    if status is not None:
        obj["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def action(name: str, token: str = "t1", argument: str | None = None) -> RequestedAction:  # noqa: S107
    return RequestedAction(action=name, token=token, argument=argument)  # type: ignore[arg-type]


def started_stage(stages: list[dict[str, Any]], **spec_kw: Any) -> tuple[Any, ...]:
    """Stable D1 on 10 pods (2 internal); D2 started at stage internal and applied."""
    spec = make_spec(stages=stages, **spec_kw)
    status, reports = installed(spec, pods(10, internal=(0, 1)))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    return spec, decision.status, list(reports), decision  # no agent has acted yet


def active_stage(stages: list[dict[str, Any]], **spec_kw: Any) -> tuple[Any, ...]:
    """As :func:`started_stage`, and the internal pods now run D2 (stage active at T0+11s)."""
    spec, _, reports, decision = started_stage(stages, **spec_kw)
    reports = converge(decision, reports)
    decision = run(spec=spec, status=decision.status, reports=reports, now=T0 + 11 * S)
    return spec, decision.status, reports


def no_status() -> dict[str, Any]:
    """Just applied; the operator has not written anything yet."""
    return as_object(make_spec(), None)


def pending_first_digest() -> dict[str, Any]:
    """Reconciled once, but nothing resolved and verified yet."""
    spec = make_spec()
    return as_object(spec, run(spec=spec, status=None, reports=pods(3), now=T0).status)


def first_install_rolling() -> dict[str, Any]:
    """The first verified digest is assigned to every pod; the agents have not reported."""
    spec = make_spec()
    decision = run(spec=spec, status=None, reports=pods(3), now=T0, verified=ok(D1))
    return as_object(spec, decision.status)


def first_install_ready() -> dict[str, Any]:
    """The first digest runs on every pod."""
    spec = make_spec()
    status, _ = installed(spec, pods(3))
    return as_object(spec, status)


def generation_not_observed() -> dict[str, Any]:
    """Ready for generation 1, but the spec was just edited (generation 2)."""
    spec = make_spec()
    status, _ = installed(spec, pods(3))
    return as_object(spec, status, generation=2)


def mid_stage_rolling() -> dict[str, Any]:
    """D2 assigned to the internal pods, which have not reported it active yet."""
    spec, status, _, _ = started_stage(JUDGED)
    return as_object(spec, status)


def paused() -> dict[str, Any]:
    """The internal pods run D2 and the stage's 5m pause is running."""
    spec, status, _ = active_stage(PAUSED, skip_analysis=True)
    return as_object(spec, status)


def waiting_for_analysis() -> dict[str, Any]:
    """The internal pods run D2; no measurement since they do."""
    spec, status, _ = active_stage(JUDGED)
    return as_object(spec, status)


def waiting_for_promotion() -> dict[str, Any]:
    """The internal stage is healthy and waits at its manual gate for a promote."""
    spec, status, _ = active_stage(GATED, skip_analysis=True)
    return as_object(spec, status)


def insufficient_data() -> dict[str, Any]:
    """The analysis measured too few samples to judge: waiting, never a pass."""
    spec, status, reports = active_stage(JUDGED)
    verdict = _verdict(spec, calls=3, errors=0)
    assert verdict.verdict == "NoData", verdict
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 12 * S, verdict=verdict)
    return as_object(spec, decision.status)


def rolled_back() -> dict[str, Any]:
    """The analysis failed: every pod sent back to D1, D2 held (Stalled, RolledBack)."""
    spec, status, reports = active_stage(JUDGED)
    verdict = _verdict(spec, calls=400, errors=80)
    assert verdict.verdict == "Failed", verdict
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 12 * S, verdict=verdict)
    reports = converge(decision, reports)
    decision = run(spec=spec, status=decision.status, reports=reports, now=T0 + 13 * S)
    return as_object(spec, decision.status)


def aborted() -> dict[str, Any]:
    """A human aborted the rollout in flight (Stalled, Aborted)."""
    spec, status, reports = active_stage(JUDGED)
    decision = run(
        spec=spec, status=status, reports=reports, now=T0 + 12 * S, action=action("abort")
    )
    token = str(action("abort"))
    return as_object(spec, decision.status, annotations={names.ANNOTATION_REQUESTED_ACTION: token})


def retried() -> dict[str, Any]:
    """After the rollback, a retry starts D2 again from the first stage."""
    obj = rolled_back()
    spec = make_spec(stages=JUDGED)
    status = LogicBundleStatus.model_validate(obj["status"])
    reports = converge(
        run(spec=spec, status=status, reports=pods(10, internal=(0, 1)), now=T0 + 14 * S),
        pods(10, internal=(0, 1)),
    )
    decision = run(
        spec=spec, status=status, reports=reports, now=T0 + 15 * S, action=action("retry", "t2")
    )
    return as_object(spec, decision.status)


def rolled_back_by_request() -> dict[str, Any]:
    """D2 completed and became stable; a ``rollback=D1`` made D1 stable again."""
    spec = make_spec(stages=[{"name": "all", "all": True}], skip_analysis=True)
    status, reports = installed(spec, pods(3))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    for second in (11, 12):
        reports = converge(decision, reports)
        decision = run(spec=spec, status=decision.status, reports=reports, now=T0 + second * S)
    decision = run(
        spec=spec,
        status=decision.status,
        reports=reports,
        now=T0 + 13 * S,
        action=action("rollback", argument=D1),
    )
    reports = converge(decision, reports)
    decision = run(spec=spec, status=decision.status, reports=reports, now=T0 + 14 * S)
    return as_object(spec, decision.status)


def suspended() -> dict[str, Any]:
    """``spec.suspend: true`` on a Ready bundle, acknowledged by the operator."""
    status, reports = installed(make_spec(), pods(3))
    spec = make_spec(suspend=True)
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S)
    return as_object(spec, decision.status)


def suspended_while_stalled() -> dict[str, Any]:
    """Rolled back, then suspended: the old Stalled=True stays, but suspension wins."""
    obj = rolled_back()
    spec = make_spec(stages=JUDGED, suspend=True)
    status = LogicBundleStatus.model_validate(obj["status"])
    decision = run(spec=spec, status=status, reports=pods(10), now=T0 + 20 * S)
    return as_object(spec, decision.status)


def verification_failed() -> dict[str, Any]:
    """The source now resolves to D2, which has no trusted signature (Stalled, Failed)."""
    spec = make_spec()
    status, reports = installed(spec, pods(3))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=bad(D2))
    return as_object(spec, decision.status)


def _failed_source(
    spec: LogicBundleSpec,
    status: LogicBundleStatus,
    reports: Any,
    failure: SourceFailure,
) -> LogicBundleStatus:
    """The status after a source check failed with ``failure`` (the controller's classification)."""
    return step(
        bundle_name=BUNDLE,
        generation=1,
        spec=spec,
        status=status,
        pods=reports,
        verdict=None,
        action=None,
        verified=None,
        now=T0 + 10 * S,
        source_error=failure,
    ).status


def resolve_failed() -> dict[str, Any]:
    """The registry does not answer (retried): Ready=False, Reconciling=True, D1 serving."""
    spec = make_spec()
    status, reports = installed(spec, pods(3))
    failure = SourceFailure(
        reason=conditions.RESOLVE_FAILED,
        message="RegistryUnavailable: resolving registry.example/shop/pricing:v2: unreachable",
    )
    return as_object(spec, _failed_source(spec, status, reports, failure))


def invalid_source() -> dict[str, Any]:
    """The trusted root the spec names lacks its logs (only a change fixes it): Stalled."""
    spec = make_spec()
    status, reports = installed(spec, pods(3))
    failure = SourceFailure(
        reason=conditions.INVALID_SOURCE,
        message="InvalidTrustedRoot: the trusted root has no transparency logs (Rekor)",
        stalled=True,
    )
    return as_object(spec, _failed_source(spec, status, reports, failure))


SCENARIOS: Final[dict[str, Callable[[], dict[str, Any]]]] = {
    "no status": no_status,
    "waiting for the first digest": pending_first_digest,
    "first install, agents not reported": first_install_rolling,
    "first install ready": first_install_ready,
    "generation not observed": generation_not_observed,
    "mid-stage rolling": mid_stage_rolling,
    "paused": paused,
    "waiting for analysis": waiting_for_analysis,
    "waiting for a manual gate": waiting_for_promotion,
    "insufficient data": insufficient_data,
    "rolled back": rolled_back,
    "aborted": aborted,
    "retried": retried,
    "rolled back by request": rolled_back_by_request,
    "suspended": suspended,
    "suspended while stalled": suspended_while_stalled,
    "verification failed": verification_failed,
    "resolve failed": resolve_failed,
    "invalid source": invalid_source,
}
"""Every situation, by a name used in test ids."""
