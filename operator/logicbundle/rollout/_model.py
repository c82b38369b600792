"""The values the rollout core takes and returns.

Everything here is a frozen dataclass built by the I/O shells (controller,
webhook) from Kubernetes objects and agent reports, so the decision code never
sees a raw body and never has to guess what a missing key means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from logicbundle.api import AnalysisStatus, LogicBundleStatus, names
from logicbundle.api.formats import DIGEST_PATTERN
from logicbundle.contract import RolloutState

_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)


_CHECKED: Final[set[str]] = set()
"""Digests that passed the check: a reconcile builds a target per pod, a few digests in all."""


def _check_digest(value: str, what: str) -> None:
    if value in _CHECKED:
        return
    if not _DIGEST_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a digest (sha256:<64 hex>)")
    if len(_CHECKED) >= 1024:
        _CHECKED.clear()
    _CHECKED.add(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class PodIdentity:
    """Who a pod is, as far as cohorts are concerned.

    ``cohort_key`` is the pod's ``logicbundle.io/cohort-key`` annotation when
    it has one (see :data:`logicbundle.api.names.ANNOTATION_COHORT_KEY`);
    otherwise the pod is hashed by ``namespace/name``.
    """

    namespace: str
    name: str
    cohort_key: str | None = None

    @property
    def key(self) -> str:
        """The string hashed into the pod's cohort position."""
        if self.cohort_key:
            return self.cohort_key
        if not self.name:
            raise ValueError(
                "a pod without a name (generateName, at admission) needs a cohort key: "
                f"set the {names.ANNOTATION_COHORT_KEY} annotation first"
            )
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PodTarget:
    """What a pod should run (or runs) for one bundle.

    ``digest`` alone: every call goes to it.  With ``candidate`` and
    ``weight`` (a ``requestPercent`` stage): the SDK loads both and routes
    ``weight`` percent of calls, by a sticky key, to ``candidate``.
    """

    digest: str
    candidate: str | None = None
    weight: int = 0

    def __post_init__(self) -> None:
        _check_digest(self.digest, "digest")
        if self.candidate is None:
            if self.weight != 0:
                raise ValueError("a weight needs a candidate digest")
            return
        _check_digest(self.candidate, "candidate")
        if not 0 <= self.weight <= 100:
            raise ValueError(f"weight {self.weight} is not a percentage (0-100)")
        if self.candidate == self.digest:
            raise ValueError("a split needs two different digests")

    @property
    def digests(self) -> tuple[str, ...]:
        """Every digest the pod needs on disk for this target."""
        return (self.digest,) if self.candidate is None else (self.digest, self.candidate)

    def carries(self, digest: str) -> bool:
        """Whether ``digest`` serves at least some calls of this target."""
        return self.digest == digest or (self.candidate == digest and self.weight > 0)


_TARGET_RE: Final = re.compile(
    r"^(?P<digest>sha256:[a-f0-9]{64})"
    r"(?:;candidate=(?P<candidate>sha256:[a-f0-9]{64});weight=(?P<weight>[0-9]{1,3}))?$"
)


def format_target(target: PodTarget) -> str:
    """The value of the ``logicbundle.io/target.<bundle>`` annotation for ``target``.

    ``sha256:<hex>`` for one digest; ``sha256:<hex>;candidate=sha256:<hex>;weight=<0-100>``
    for a request split.  The value always starts with a digest, so a reader
    that knows nothing of splits still finds the primary digest.
    """
    if target.candidate is None:
        return target.digest
    return f"{target.digest};candidate={target.candidate};weight={target.weight}"


def parse_target(value: str) -> PodTarget:
    """Parse :func:`format_target`'s output, or raise :class:`ValueError` saying why."""
    match = _TARGET_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"target {value!r} is neither 'sha256:<hex>' nor "
            "'sha256:<hex>;candidate=sha256:<hex>;weight=<0-100>'"
        )
    candidate = match.group("candidate")
    weight = int(match.group("weight")) if candidate else 0
    return PodTarget(digest=match.group("digest"), candidate=candidate, weight=weight)


@dataclass(frozen=True, kw_only=True, slots=True)
class PodFailure:
    """Agents' reports that a digest failed its swap or health check (and was flipped back).

    One pod's report, or several summed: ``pods`` failed, the latest being ``pod``
    at ``at`` with ``message``.
    """

    digest: str
    at: datetime
    message: str = ""
    pod: str = ""
    pods: int = 1


@dataclass(frozen=True, kw_only=True)
class PodReport:
    """One pod selected by the bundle, with its facts and what its agent reports.

    ``labels`` and ``admitted`` (its ``logicbundle.io/admitted-at``, in
    milliseconds; 0 when absent) are what the target rule reads; ``active``
    is what the agent last reported active and ``healthy`` whether the
    application confirmed it.  Pods without the agent (``has_agent`` false)
    are counted but never assigned anything.
    """

    pod: PodIdentity
    labels: Mapping[str, str] = field(default_factory=dict)
    has_agent: bool = True
    admitted: int = 0
    active: PodTarget | None = None
    healthy: bool = False
    failure: PodFailure | None = None

    def runs(self, target: PodTarget) -> bool:
        """Whether the agent reports exactly ``target`` active and healthy."""
        return self.healthy and self.active == target


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What a bundle's agents report, summed over its pods: all the core reads of them.

    The distributor replicas keep the reports and answer with sums per digest
    (:class:`logicbundle.distributor.BundleSummary`), so the operator never
    holds per-pod state.  ``active``: pods that report a digest active and
    healthy (a request split's pods report their primary digest).
    ``failures``: per digest, the failed swaps or health checks.
    ``complete``: every replica answered; a partial view never advances a stage.
    """

    active: Mapping[str, int] = field(default_factory=dict)
    failures: Mapping[str, PodFailure] = field(default_factory=dict)
    complete: bool = True


def observe(pods: Sequence[PodReport]) -> Observed:
    """The sum of per-pod reports (what a distributor computes; tests build pods this way)."""
    active: dict[str, int] = {}
    failures: dict[str, PodFailure] = {}
    for report in pods:
        if not report.has_agent:
            continue
        if report.healthy and report.active is not None:
            active[report.active.digest] = active.get(report.active.digest, 0) + 1
        failure = report.failure
        if failure is not None:
            seen = PodFailure(
                digest=failure.digest,
                at=failure.at,
                message=failure.message,
                pod=f"{report.pod.namespace}/{report.pod.name}",
            )
            known = failures.get(failure.digest)
            if known is not None:
                latest = seen if seen.at >= known.at else known
                seen = PodFailure(
                    digest=failure.digest,
                    at=latest.at,
                    message=latest.message,
                    pod=latest.pod,
                    pods=known.pods + 1,
                )
            failures[failure.digest] = seen
    return Observed(active=active, failures=failures)


VerificationReason = Literal["VerificationSucceeded", "VerificationFailed", "AuditRejected"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedDigest:
    """The outcome of verifying the digest the source reference resolved to.

    ``ok`` false means the digest must never reach a pod (``reason`` says
    whether the signature or the content audit refused it).  ``signer`` and
    ``issuer``: who signed it (certificate subject or key id; OIDC issuer,
    keyless only), recorded in the history of the rollout it starts.
    """

    digest: str
    ok: bool
    ref: str | None = None
    reason: VerificationReason | None = None
    message: str = ""
    signer: str | None = None
    issuer: str | None = None

    def __post_init__(self) -> None:
        _check_digest(self.digest, "verified digest")

    @property
    def condition_reason(self) -> str:
        """The ``Verified`` condition's reason."""
        if self.reason is not None:
            return self.reason
        return "VerificationSucceeded" if self.ok else "VerificationFailed"


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceFailure:
    """Why the source or the spec could not be acted on: what the conditions say, and how.

    The controller classifies every error of the source step (and a spec the
    models refuse) into one of these, the way Flux's ``serror.Generic`` and
    ``serror.Stalling`` decide its conditions; :func:`~logicbundle.rollout.step`
    (and :func:`~logicbundle.rollout.refused`) turn it into conditions.

    ``stalled`` False: a retry may fix it (registry down, tag missing,
    credentials refused): ``Ready=False``, ``Reconciling=True``, ``Stalled=False``,
    all with ``reason`` (``ResolveFailed``), the last verified digest serving.
    ``stalled`` True: only a change of the spec or of a Secret/ConfigMap it names
    fixes it: ``Stalled=True``, ``Ready=False``, ``Reconciling=False`` with
    ``reason`` (``InvalidSource``, ``InvalidSpec``).  ``message`` names the
    cause (``<its reason>: <what failed>``) and never a secret.
    """

    reason: str
    message: str
    stalled: bool = False


EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """A Kubernetes event to post on the ``LogicBundle``: one per transition."""

    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What :func:`~logicbundle.rollout.step` decided.

    ``state`` is the rollout state to publish (also in ``status.targetState``):
    every pod's target follows from it.  ``assignments`` is that target for
    each pod seen, for counting; a pod absent from it is left as it is (a pod
    without the agent, or every pod while the stable digest is revoked).
    ``requeue_after`` is when something time-based (a pause, the next
    measurement) may change the decision.
    """

    state: RolloutState | None
    assignments: Mapping[PodIdentity, PodTarget]
    status: LogicBundleStatus
    events: tuple[Event, ...] = ()
    requeue_after: timedelta | None = None
    judged: AnalysisStatus | None = None
    """The analysis as this step's verdict left it, for the stage it judged: the
    status's own ``analysis`` is already the next stage's when the verdict let
    the rollout move on in the same step (the trace keeps the verdict on the
    stage it ended)."""
