"""Shared builders: specs, pods, and agents that do what they are told."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from logicbundle import contract
from logicbundle.api import LogicBundleSpec, LogicBundleStatus, RequestedAction, conditions
from logicbundle.api.conditions import find_condition
from logicbundle.rollout import (
    AnalysisVerdict,
    Decision,
    PodFailure,
    PodIdentity,
    PodReport,
    PodTarget,
    VerifiedDigest,
    step,
)

BUNDLE: Final = "rules"
NS: Final = "shop"
T0: Final = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def ms(at: datetime) -> int:
    """``at`` as a ``logicbundle.io/admitted-at`` value (milliseconds since the epoch)."""
    return int(at.timestamp() * 1000)


EARLY: Final = ms(T0 - timedelta(hours=1))
"""When the pods of a test were admitted unless it says otherwise: long before any step,
so every percent stage may seal them at once."""


def digest(char: str) -> str:
    return "sha256:" + char * 64


D1: Final = digest("1")
D2: Final = digest("2")
D3: Final = digest("3")
D4: Final = digest("4")


def make_spec(
    *,
    stages: Sequence[dict[str, Any]] | None = None,
    analysis: dict[str, Any] | None = None,
    skip_analysis: bool = False,
    suspend: bool = False,
    on_failure: str | None = None,
) -> LogicBundleSpec:
    rollout: dict[str, Any] = {"skipAnalysis": skip_analysis}
    if on_failure is not None:
        rollout["onFailure"] = on_failure
    if stages is not None:
        rollout["stages"] = list(stages)
    if analysis is not None:
        rollout["analysis"] = analysis
    return LogicBundleSpec.model_validate(
        {
            "source": {"ref": "registry.example.com/team/rules:v1"},
            "verify": {
                "keys": [{"pem": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"}]
            },
            "target": {"podSelector": {"matchLabels": {"app": "shop"}}},
            "rollout": rollout,
            "suspend": suspend,
        }
    )


INTERNAL: Final = {
    "name": "internal",
    "internal": {"matchLabels": {"logicbundle.io/cohort": "internal"}},
}


def pod(
    name: str, *, internal: bool = False, has_agent: bool = True, admitted: int = EARLY
) -> PodReport:
    labels = {"app": "shop"}
    if internal:
        labels["logicbundle.io/cohort"] = "internal"
    return PodReport(
        pod=PodIdentity(namespace=NS, name=name),
        labels=labels,
        has_agent=has_agent,
        admitted=admitted,
    )


def pods(count: int, *, internal: Iterable[int] = (), admitted: int = EARLY) -> list[PodReport]:
    inside = set(internal)
    return [pod(f"p{i:03d}", internal=i in inside, admitted=admitted) for i in range(count)]


def converge(decision: Decision, reports: Sequence[PodReport]) -> list[PodReport]:
    """Every agent applies the target the published state gives it, active and healthy.

    A pod the decision gives nothing (no agent, or a revoked stable digest) keeps
    what it runs.
    """
    result = []
    for report in reports:
        target = decision.assignments.get(report.pod)
        if target is None:
            result.append(report)
        else:
            result.append(dataclasses.replace(report, active=target, healthy=True))
    return result


def flip_back(report: PodReport, *, failed: str, to: str, at: datetime) -> PodReport:
    """The agent tried ``failed``, its health check failed, and it went back to ``to``."""
    return dataclasses.replace(
        report,
        active=PodTarget(digest=to),
        healthy=True,
        failure=PodFailure(digest=failed, at=at, message="self-test raised"),
    )


def ok(d: str) -> VerifiedDigest:
    return VerifiedDigest(digest=d, ok=True, ref="registry.example.com/team/rules:v1")


def bad(d: str) -> VerifiedDigest:
    return VerifiedDigest(digest=d, ok=False, message="no signature from a trusted identity")


PASS: Final = AnalysisVerdict(verdict="Passed", reason="all good")
FAIL: Final = AnalysisVerdict(verdict="Failed", reason="error-rate: 0.2 > max 0.05")
NODATA: Final = AnalysisVerdict(verdict="NoData", reason="error-rate: too few samples: 3 < 20")


def run(
    *,
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    reports: Sequence[PodReport],
    now: datetime,
    verdict: AnalysisVerdict | None = None,
    action: RequestedAction | None = None,
    verified: VerifiedDigest | None = None,
) -> Decision:
    return step(
        bundle_name=BUNDLE,
        generation=1,
        spec=spec,
        status=status,
        pods=reports,
        verdict=verdict,
        action=action,
        verified=verified,
        now=now,
    )


def cond(status: LogicBundleStatus, type_: str) -> tuple[str, str] | None:
    c = find_condition(status.conditions, type_)
    return None if c is None else (c.status, c.reason)


def ready(status: LogicBundleStatus) -> tuple[str, str] | None:
    return cond(status, conditions.READY)


def stalled(status: LogicBundleStatus) -> tuple[str, str] | None:
    return cond(status, conditions.STALLED)


def reconciling(status: LogicBundleStatus) -> tuple[str, str] | None:
    return cond(status, conditions.RECONCILING)


def digests_of(assignments: Mapping[PodIdentity, PodTarget]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for target in assignments.values():
        counts[target.digest] = counts.get(target.digest, 0) + 1
    return counts


def installed(
    spec: LogicBundleSpec, reports: Sequence[PodReport], *, stable: str = D1
) -> tuple[LogicBundleStatus, list[PodReport]]:
    """A bundle whose first digest is stable and active on every pod."""
    first = run(spec=spec, status=None, reports=reports, now=T0, verified=ok(stable))
    reports = converge(first, reports)
    second = run(spec=spec, status=first.status, reports=reports, now=T0 + timedelta(seconds=1))
    return second.status, reports


def published(status: LogicBundleStatus) -> contract.RolloutState:
    """``status.targetState`` as a distributor replica reads it off the stored object."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return contract.state_from_json(body["targetState"])


def reasons(decision: Decision) -> list[str]:
    return [event.reason for event in decision.events]
