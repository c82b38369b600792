"""What the agents of one bundle reported, summed per digest: the only thing the leader reads.

A distributor replica keeps the reports of the pods that talk to it; the
operator's leader never holds per-pod state.  For each bundle it asks every
replica for a :class:`BundleSummary` (reads that grow with the number of
replicas, not of pods) and adds them up with :func:`combine`:

* ``versions``: the SDK counters' increase since a moment (calls, errors,
  latency buckets), per digest, summed over the pods that report it, and the
  process health of the pods serving it as their primary version (latest
  resident memory and threads, GC pause time over the window): what the
  builtin analysis judges;
* ``active``: how many pods report a digest active (``current`` points at
  it) and healthy: what a stage waits for (a request split's pods report
  their primary digest);
* ``failures``: per digest, how many pods reported a failed swap or health
  check of it, and the latest one (pod, time, message): what rolls a stage
  back;
* ``leaks``: per retired digest, how many pods' applications still hold it
  after its grace period, and the kinds of referrer they named (what the
  operator's ``VersionLeak`` event and ``logicbundle_retired_versions_alive``
  say);
* ``reporting``: the pods counted.

Only reports of pods the bundle's published rule assigns are counted (a pod
may hold a token for the distributor and report for any bundle name): the
replica knows each pod's targets, so the selection happens where the reports
are.  The wire form is plain JSON (:meth:`BundleSummary.to_json`,
:func:`summary_from_json`), with strict checks: a replica is trusted to be
ours, but a malformed answer must fail the read, not the leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from logicbundle.contract import (
    LATENCY_BUCKETS_SCHEMA,
    LEAK_REFERRER_KINDS,
    MAX_LATENCY_BUCKETS,
    MAX_LEAK_DETAIL,
)

MAX_DIGESTS: Final = 64
"""More digests than this in one bundle's summary is refused as malformed."""


class SummaryError(ValueError):
    """A summary that does not follow the wire form."""


@dataclass(frozen=True, slots=True)
class Counters:
    """The SDK counters' increase over a window, summed over pods."""

    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    latency_buckets: tuple[int, ...] = ()
    pods: int = 0
    process_pods: int = 0
    """Pods whose process serves the digest as its primary version and reports its health."""
    rss_bytes: int = 0
    """Their latest resident memory, summed."""
    threads: int = 0
    """Their latest OS thread counts, summed."""
    gc_pause_ns: int = 0
    """Time they spent paused in garbage collections over the window, summed."""
    wall_ns: int = 0
    """Wall-clock time ``gc_pause_ns`` covers, summed."""

    def __add__(self, other: Counters) -> Counters:
        width = max(len(self.latency_buckets), len(other.latency_buckets))
        a = (*self.latency_buckets, *([0] * (width - len(self.latency_buckets))))
        b = (*other.latency_buckets, *([0] * (width - len(other.latency_buckets))))
        return Counters(
            calls=self.calls + other.calls,
            errors=self.errors + other.errors,
            total_ns=self.total_ns + other.total_ns,
            latency_buckets=tuple(x + y for x, y in zip(a, b, strict=True)),
            pods=self.pods + other.pods,
            process_pods=self.process_pods + other.process_pods,
            rss_bytes=self.rss_bytes + other.rss_bytes,
            threads=self.threads + other.threads,
            gc_pause_ns=self.gc_pause_ns + other.gc_pause_ns,
            wall_ns=self.wall_ns + other.wall_ns,
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """A digest's failed swaps or health checks: how many pods, and the latest one."""

    pods: int
    pod: str
    at: datetime
    message: str = ""

    def __add__(self, other: Failure) -> Failure:
        latest = self if self.at >= other.at else other
        return Failure(
            pods=self.pods + other.pods, pod=latest.pod, at=latest.at, message=latest.message
        )


@dataclass(frozen=True, slots=True)
class Leak:
    """A retired digest the applications of some pods still hold, and what holds it."""

    pods: int
    kinds: tuple[str, ...] = ()
    """The kinds of referrer named (``logicbundle.contract.LEAK_REFERRER_KINDS``), sorted."""
    detail: str = ""
    """One referrer, as ``kind: detail`` (the first named)."""

    def __add__(self, other: Leak) -> Leak:
        return Leak(
            pods=self.pods + other.pods,
            kinds=tuple(sorted({*self.kinds, *other.kinds})),
            detail=self.detail or other.detail,
        )


@dataclass(frozen=True, slots=True)
class BundleSummary:
    """One bundle's reports, summed per digest (see the module doc)."""

    reporting: int = 0
    versions: Mapping[str, Counters] = field(default_factory=dict)
    active: Mapping[str, int] = field(default_factory=dict)
    failures: Mapping[str, Failure] = field(default_factory=dict)
    leaks: Mapping[str, Leak] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "reporting": self.reporting,
            "versions": {
                d: {
                    "calls": c.calls,
                    "errors": c.errors,
                    "totalNs": c.total_ns,
                    "latencyBuckets": list(c.latency_buckets),
                    "pods": c.pods,
                    "processPods": c.process_pods,
                    "rssBytes": c.rss_bytes,
                    "threads": c.threads,
                    "gcPauseNs": c.gc_pause_ns,
                    "wallNs": c.wall_ns,
                }
                for d, c in sorted(self.versions.items())
            },
            "active": dict(sorted(self.active.items())),
            "failures": {
                d: {"pods": f.pods, "pod": f.pod, "at": f.at.isoformat(), "message": f.message}
                for d, f in sorted(self.failures.items())
            },
            "leaks": {
                d: {"pods": leak.pods, "kinds": list(leak.kinds), "detail": leak.detail}
                for d, leak in sorted(self.leaks.items())
            },
        }


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise SummaryError(f"{where} must be a non-negative integer")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SummaryError(f"{where} must be an object")
    if len(value) > MAX_DIGESTS:
        raise SummaryError(f"{where} has more than {MAX_DIGESTS} digests")
    for key in value:
        if not isinstance(key, str) or not key.startswith("sha256:") or len(key) != 71:
            raise SummaryError(f"{where} keys must be digests")
    return value


def summary_from_json(value: object) -> BundleSummary:
    """Read a replica's answer; :class:`SummaryError` when it is not the wire form."""
    if not isinstance(value, dict):
        raise SummaryError("a summary must be an object")
    versions = {}
    for digest, raw in _mapping(value.get("versions", {}), "versions").items():
        if not isinstance(raw, dict):
            raise SummaryError("versions entries must be objects")
        buckets = raw.get("latencyBuckets", [])
        if not isinstance(buckets, list) or len(buckets) > MAX_LATENCY_BUCKETS:
            raise SummaryError(f"latencyBuckets must be a list of {LATENCY_BUCKETS_SCHEMA}")
        versions[digest] = Counters(
            calls=_count(raw.get("calls", 0), "calls"),
            errors=_count(raw.get("errors", 0), "errors"),
            total_ns=_count(raw.get("totalNs", 0), "totalNs"),
            latency_buckets=tuple(_count(b, "latencyBuckets") for b in buckets),
            pods=_count(raw.get("pods", 0), "pods"),
            # Absent from a replica older than the process figures: no pod reported them.
            process_pods=_count(raw.get("processPods", 0), "processPods"),
            rss_bytes=_count(raw.get("rssBytes", 0), "rssBytes"),
            threads=_count(raw.get("threads", 0), "threads"),
            gc_pause_ns=_count(raw.get("gcPauseNs", 0), "gcPauseNs"),
            wall_ns=_count(raw.get("wallNs", 0), "wallNs"),
        )
    failures = {}
    for digest, raw in _mapping(value.get("failures", {}), "failures").items():
        if not isinstance(raw, dict) or not isinstance(raw.get("pod"), str):
            raise SummaryError("failures entries must name a pod")
        try:
            at = datetime.fromisoformat(str(raw.get("at")))
        except ValueError:
            raise SummaryError("failures[].at must be an RFC 3339 time") from None
        if at.tzinfo is None:
            raise SummaryError("failures[].at must carry its time zone")
        message = raw.get("message", "")
        failures[digest] = Failure(
            pods=_count(raw.get("pods", 1), "failures[].pods"),
            pod=raw["pod"][:253],
            at=at,
            message=str(message)[:1024],
        )
    leaks = {}
    # Absent from a replica older than the leaks: no pod reported one.
    for digest, raw in _mapping(value.get("leaks", {}), "leaks").items():
        if not isinstance(raw, dict):
            raise SummaryError("leaks entries must be objects")
        kinds = raw.get("kinds", [])
        if not isinstance(kinds, list) or not all(k in LEAK_REFERRER_KINDS for k in kinds):
            raise SummaryError(f"leaks[].kinds must be a list of {', '.join(LEAK_REFERRER_KINDS)}")
        detail = raw.get("detail", "")
        if not isinstance(detail, str):
            raise SummaryError("leaks[].detail must be a string")
        leaks[digest] = Leak(
            pods=_count(raw.get("pods", 0), "leaks[].pods"),
            kinds=tuple(sorted(set(kinds))),
            detail=detail[: MAX_LEAK_DETAIL + 16],
        )
    return BundleSummary(
        reporting=_count(value.get("reporting", 0), "reporting"),
        versions=versions,
        active={
            d: _count(n, "active") for d, n in _mapping(value.get("active", {}), "active").items()
        },
        failures=failures,
        leaks=leaks,
    )


def combine(summaries: Iterable[BundleSummary]) -> BundleSummary:
    """The sum of several replicas' summaries of one bundle."""
    reporting = 0
    versions: dict[str, Counters] = {}
    active: dict[str, int] = {}
    failures: dict[str, Failure] = {}
    leaks: dict[str, Leak] = {}
    for summary in summaries:
        reporting += summary.reporting
        for digest, counters in summary.versions.items():
            versions[digest] = versions.get(digest, Counters()) + counters
        for digest, n in summary.active.items():
            active[digest] = active.get(digest, 0) + n
        for digest, failure in summary.failures.items():
            seen = failures.get(digest)
            failures[digest] = failure if seen is None else seen + failure
        for digest, leak in summary.leaks.items():
            known = leaks.get(digest)
            leaks[digest] = leak if known is None else known + leak
    return BundleSummary(
        reporting=reporting, versions=versions, active=active, failures=failures, leaks=leaks
    )
