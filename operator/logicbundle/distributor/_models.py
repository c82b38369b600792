"""The distributor's wire format: what an agent reads (targets) and writes (reports).

The agent is written without pydantic (it runs in every pod), so these models
are the server's parser and the reference for ``docs/distributor-protocol.md``;
the JSON they produce and accept is the protocol.  Every model is frozen; a
malformed known field makes the report a 400 that names the field, never a
half-stored one.  Targets refuse unknown fields.  Reports ignore them (a newer
agent may report a field this distributor does not know yet: refusing the whole
report would lose the pod's state during an upgrade), and :func:`parse_report`
says which it ignored, so the distributor counts and logs them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from logicbundle.api import SpecModel
from logicbundle.api.formats import ContainerPath, Digest, DnsLabel, OciReference, Percent
from logicbundle.api.v1alpha1 import HealthCheck, Notify
from logicbundle.contract import (
    LATENCY_BUCKETS_SCHEMA,
    MAX_LATENCY_BUCKETS,
    MAX_LEAK_DETAIL,
    MAX_LEAK_REFERRERS,
    MAX_LEAKS_PER_BUNDLE,
)

MAX_BUNDLES_PER_POD: Final = 64
"""A pod with more bundles than this is refused; the agent reports at most this many."""

MAX_VERSIONS_PER_BUNDLE: Final = 4
"""A bundle has at most a stable, a candidate and a draining version loaded at once."""

MAX_MESSAGE_LENGTH: Final = 1024

BundleName = DnsLabel
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_LENGTH)]
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]{0,63}$")]
Count = Annotated[int, Field(ge=0, strict=True)]
Millis = Annotated[float, Field(ge=0, le=86_400_000)]
TraceParentText = Annotated[
    str, StringConstraints(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
]


@dataclass(frozen=True, slots=True)
class PodIdentity:
    """Who is calling: taken from a verified token, never from the request."""

    namespace: str
    name: str
    uid: str
    service_account: str


# --- targets (server -> agent) -------------------------------------------------


class Split(SpecModel):
    """A request-level split inside the SDK: both versions loaded, calls routed by key hash."""

    candidate: Digest = Field(description="The second digest the pod loads besides `digest`.")
    weight: Percent = Field(description="Percentage (0-100) of calls the SDK routes to it.")


class BundleTarget(SpecModel):
    """What one bundle of one pod should run, and how the agent applies it.

    Only ``digest`` is always present.  The optional settings come from the
    ``LogicBundle``'s spec; when one is absent the agent uses the settings it
    was started with.
    """

    digest: Digest = Field(description="The OCI manifest digest the pod should run.")
    split: Split | None = Field(default=None, description="A request-level split, if any.")
    mount_path: ContainerPath | None = Field(default=None, description="Where `current` appears.")
    notify: Notify | None = Field(default=None, description="How to tell the application.")
    health_check: HealthCheck | None = Field(default=None, description="How to confirm health.")
    source: OciReference | None = Field(
        default=None,
        description="Repository to pull from by digest when the distributor cannot serve it.",
    )
    revision: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description=(
            "The revision of the bundle's published state this target was computed from; "
            "the agent follows its mounted copy of the state instead when that one is newer."
        ),
    )
    traceparent: TraceParentText | None = Field(
        default=None,
        description=(
            "The rollout's trace context (W3C `traceparent`); the agent reports its swap "
            "with it, and the distributor exports the swap as a span of that trace."
        ),
    )

    def digests(self) -> tuple[str, ...]:
        """Every digest this target makes the pod load."""
        if self.split is None:
            return (self.digest,)
        return (self.digest, self.split.candidate)


TargetMap = Mapping[str, BundleTarget]


class PodRef(SpecModel):
    namespace: str
    name: str
    uid: str


class TargetsResponse(SpecModel):
    """The body of ``GET /v1/targets`` (status 200)."""

    version: str = Field(description="Opaque; send it back as `version` to long-poll.")
    pod: PodRef
    known: bool = Field(
        description=(
            "False when the distributor has no assignment for this pod (it started a moment "
            "ago, or the pod is not opted in): the agent keeps what it has and trusts the "
            "downward-API annotations."
        )
    )
    targets: dict[str, BundleTarget]


def targets_version(*, known: bool, targets: TargetMap) -> str:
    """A content hash of the assignment: equal content gives the same version on every replica.

    A stateless distributor scaled out to several replicas then gives an agent
    that moves between them no spurious change.
    """
    payload = {
        "known": known,
        "targets": {name: t.model_dump(mode="json") for name, t in targets.items()},
    }
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:24]


# --- reports (agent -> server) -------------------------------------------------


MAX_UNKNOWN_NOTED: Final = 16
"""Unknown fields :func:`parse_report` names per report (it counts them all)."""

_unknown: ContextVar[list[str] | None] = ContextVar("logicbundle_report_unknown", default=None)


class _ReportModel(SpecModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=MAX_MESSAGE_LENGTH)

    @model_validator(mode="before")
    @classmethod
    def _note_unknown(cls, data: Any) -> Any:
        """Remember the fields this version does not know (ignored, not stored)."""
        noted = _unknown.get()
        if noted is not None and isinstance(data, dict):
            known = _known_fields(cls)
            noted.extend(f"{cls.__name__}.{key!s:.64}" for key in data if key not in known)
        return data


_KNOWN: dict[type, frozenset[str]] = {}


def _known_fields(model: type[_ReportModel]) -> frozenset[str]:
    known = _KNOWN.get(model)
    if known is None:
        names = set(model.model_fields)
        names.update(f.alias for f in model.model_fields.values() if f.alias)
        known = _KNOWN[model] = frozenset(names)
    return known


class VersionCounters(_ReportModel):
    """The SDK's counters for one loaded version, cumulative since it was loaded."""

    calls: Count = Field(description="Completed calls, successful or not.")
    errors: Count = Field(description="Completed calls that raised.")
    inflight: Count = 0
    total_ns: Count = Field(default=0, description="Sum of call durations, nanoseconds.")
    latency_buckets: Annotated[list[Count], Field(max_length=MAX_LATENCY_BUCKETS)] = Field(
        default_factory=list,
        description=f"Latency buckets (logicbundle.contract): {LATENCY_BUCKETS_SCHEMA}.",
    )
    rss_bytes: Count | None = Field(
        default=None,
        description="The process's resident memory now, bytes (the primary version only).",
    )
    threads: Count | None = Field(
        default=None, description="The process's OS threads now (the primary version only)."
    )
    gc_pause_ns: Count | None = Field(
        default=None,
        description="Time paused in garbage collections, cumulative, ns (primary version only).",
    )
    wall_ns: Count | None = Field(
        default=None, description="Wall-clock time ``gcPauseNs`` covers, cumulative, ns."
    )


class LastError(_ReportModel):
    reason: Reason
    message: Message
    digest: Digest | None = None
    at: datetime | None = None


SwapOutcome = Literal["activated", "rolledBack", "failed"]


class SwapTimings(_ReportModel):
    """The agent's last swap: from "target known" to "application acked" (or not)."""

    to: Digest
    from_: Digest | None = Field(default=None, alias="from")
    outcome: SwapOutcome
    at: datetime | None = None
    fetch_ms: Millis | None = None
    unpack_ms: Millis | None = None
    swap_ms: Millis | None = None
    notify_ms: Millis | None = None
    health_ms: Millis | None = None
    total_ms: Millis | None = None
    traceparent: TraceParentText | None = Field(
        default=None, description="The target's trace context when the swap began (if any)."
    )


LeakReferrerKind = Literal["thread", "module-global", "closure", "other"]
"""``logicbundle.contract.LEAK_REFERRER_KINDS``."""


class LeakReferrer(_ReportModel):
    """What keeps a leaked version alive, as the SDK names it."""

    kind: LeakReferrerKind
    detail: Annotated[
        str, StringConstraints(max_length=MAX_LEAK_DETAIL, pattern=r"^[\x20-\x7e]*$")
    ] = Field(default="", description="Which one: a thread's name, a module, a function.")


class VersionLeak(_ReportModel):
    """A retired version the application still holds after its grace period."""

    digest: Digest
    referrers: Annotated[list[LeakReferrer], Field(max_length=MAX_LEAK_REFERRERS)] = Field(
        default_factory=list
    )


class BundleReport(_ReportModel):
    active: Digest | None = Field(description="What `current` points at now; null before any.")
    previous: Digest | None = None
    target: Digest | None = Field(default=None, description="What the agent is working towards.")
    healthy: bool | None = None
    last_error: LastError | None = None
    last_swap: SwapTimings | None = None
    versions: Annotated[
        dict[Digest, VersionCounters], Field(max_length=MAX_VERSIONS_PER_BUNDLE)
    ] = Field(default_factory=dict)
    leaks: Annotated[list[VersionLeak], Field(max_length=MAX_LEAKS_PER_BUNDLE)] = Field(
        default_factory=list,
        description="Retired versions still alive in the application (absent: none).",
    )


class AgentInfo(_ReportModel):
    version: Annotated[str, StringConstraints(max_length=64)] | None = None
    started_at: datetime | None = None


class Report(_ReportModel):
    """The body of ``POST /v1/reports``: the agent's whole state, on change and periodically."""

    bundles: Annotated[dict[BundleName, BundleReport], Field(max_length=MAX_BUNDLES_PER_POD)]
    agent: AgentInfo | None = None


def parse_report(body: bytes | str) -> tuple[Report, int, tuple[str, ...]]:
    """The report in ``body``; how many unknown fields it ignored, and the first of them.

    Raises :class:`pydantic.ValidationError` when a known field is malformed.
    """
    noted: list[str] = []
    token = _unknown.set(noted)
    try:
        report = Report.model_validate_json(body)
    finally:
        _unknown.reset(token)
    return report, len(noted), tuple(noted[:MAX_UNKNOWN_NOTED])
