"""The values the rollout core takes and returns.

Everything here is a frozen dataclass built by the I/O shells (controller,
webhook) from Kubernetes objects and agent reports, so the decision code never
sees a raw body and never has to guess what a missing key means.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

from logicbundle.api import LogicBundleStatus, names
from logicbundle.api.formats import DIGEST_PATTERN

_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)


def _check_digest(value: str, what: str) -> None:
    if not _DIGEST_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a digest (sha256:<64 hex>)")


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
    """The agent's report that a digest failed its swap or health check (and was flipped back)."""

    digest: str
    at: datetime
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class PodReport:
    """One pod selected by the bundle, with what it is told and what it reports.

    ``assigned`` is the pod's target annotation now (None: never assigned);
    ``active`` is what the agent last reported active and ``healthy`` whether
    the application confirmed it.  Pods without the agent (``has_agent``
    false) are counted but never assigned anything.
    """

    pod: PodIdentity
    labels: Mapping[str, str] = field(default_factory=dict)
    has_agent: bool = True
    assigned: PodTarget | None = None
    active: PodTarget | None = None
    healthy: bool = False
    failure: PodFailure | None = None

    def runs(self, target: PodTarget) -> bool:
        """Whether the agent reports exactly ``target`` active and healthy."""
        return self.healthy and self.active == target


VerificationReason = Literal["VerificationSucceeded", "VerificationFailed", "AuditRejected"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VerifiedDigest:
    """The outcome of verifying the digest the source reference resolved to.

    ``ok`` false means the digest must never reach a pod (``reason`` says
    whether the signature or the content audit refused it).
    """

    digest: str
    ok: bool
    ref: str | None = None
    reason: VerificationReason | None = None
    message: str = ""

    def __post_init__(self) -> None:
        _check_digest(self.digest, "verified digest")

    @property
    def condition_reason(self) -> str:
        """The ``Verified`` condition's reason."""
        if self.reason is not None:
            return self.reason
        return "VerificationSucceeded" if self.ok else "VerificationFailed"


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

    ``assignments`` holds the target of every pod that should have one; a
    pod absent from it is left as it is (a pod without the agent, or any pod
    while the bundle is suspended).  ``requeue_after`` is when something
    time-based (a pause, the next measurement) may change the decision.
    """

    assignments: Mapping[PodIdentity, PodTarget]
    status: LogicBundleStatus
    events: tuple[Event, ...] = ()
    requeue_after: timedelta | None = None
