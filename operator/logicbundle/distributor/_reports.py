"""What the agents said: the latest report per pod, and a rolling window of SDK counters.

The controller reads this in-process: the latest report tells it what each
pod runs and why a swap failed; the window of counters is what rollout
analysis compares (calls, errors and latency per version, summed over pods).
The SDK's counters are cumulative since a version was loaded, so the window
keeps samples and takes differences, treating a drop as a restart (like
Prometheus' ``increase``).

The store also decides when the operator must write to the pod: it remembers
what was last *delivered* (patched) per pod, and :meth:`ReportStore.record`
returns a :class:`PodActivity` only when the active digests or readiness
differ from it.  A failed patch is not marked delivered, so the agent's next
report, periodic or not, retries it.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from logicbundle.distributor._models import PodIdentity, Report, TargetMap, VersionCounters
from logicbundle.distributor._summary import BundleSummary, Counters, Failure, Leak

DEFAULT_WINDOW_SECONDS: Final = 600.0
SWEEP_SECONDS: Final = 30.0
"""At most this often, one pass over every series drops those older than the window (the
series of a pod that stopped reporting); the series a report or a read touches are
trimmed there and then."""
MAX_SAMPLES: Final = 512
"""Samples kept per pod and version; at a 10 s report interval, more than the window."""


@dataclass(frozen=True, slots=True)
class StoredReport:
    identity: PodIdentity
    received_at: float
    """Clock of the store (monotonic seconds)."""
    report: Report


@dataclass(frozen=True, slots=True)
class PodActivity:
    """What the operator should record on a pod: active digests and readiness."""

    namespace: str
    name: str
    uid: str
    active: Mapping[str, str | None]
    """Per reported bundle, the active digest (None: nothing active yet)."""
    ready: bool | None
    """Every assigned bundle has an active version; None when the assignment is unknown."""
    ready_changed: bool
    """``ready`` differs from what was last delivered (write the condition's transition)."""
    message: str


@dataclass(frozen=True, slots=True)
class VersionWindow:
    """Counter increases of one bundle version over the window, summed over pods."""

    calls: int
    errors: int
    total_ns: int
    latency_buckets: tuple[int, ...]
    pods: int
    process_pods: int = 0
    rss_bytes: int = 0
    threads: int = 0
    gc_pause_ns: int = 0
    wall_ns: int = 0

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.calls if self.calls else None


@dataclass(slots=True)
class _Delivered:
    uid: str
    active: dict[str, str | None]
    ready: bool | None


@dataclass(slots=True)
class _Series:
    samples: deque[tuple[float, VersionCounters]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES)
    )
    from_zero: bool = True
    """The first sample still counts from zero: the SDK's counters start when a version loads."""


def _increase(a: int, b: int) -> int:
    return b - a if b >= a else b


def _bucket_increase(a: list[int], b: list[int]) -> list[int]:
    width = max(len(a), len(b))
    a = a + [0] * (width - len(a))
    b = b + [0] * (width - len(b))
    if any(y < x for x, y in zip(a, b, strict=True)):
        return b
    return [y - x for x, y in zip(a, b, strict=True)]


@dataclass(slots=True)
class _ProcessFigures:
    """The process health of a version's pods over a window, summed (see ``Counters``).

    Memory and threads are levels: each pod's latest report.  GC pause and wall
    time are cumulative per process: their increases between reports in the
    window, a drop being a restarted process (its later figures are the increase).
    """

    pods: int = 0
    rss_bytes: int = 0
    threads: int = 0
    gc_pause_ns: int = 0
    wall_ns: int = 0

    def add(self, samples: list[tuple[float, VersionCounters]], since: float | None) -> None:
        latest = samples[-1][1]
        if latest.rss_bytes is None or latest.threads is None:
            return  # not the process's primary version, or an SDK without the figures
        self.pods += 1
        self.rss_bytes += latest.rss_bytes
        self.threads += latest.threads
        for (_, a), (t, b) in itertools.pairwise(samples):
            if since is not None and t < since:
                continue
            if None in (a.gc_pause_ns, a.wall_ns, b.gc_pause_ns, b.wall_ns):
                continue
            assert a.gc_pause_ns is not None and a.wall_ns is not None  # noqa: S101
            assert b.gc_pause_ns is not None and b.wall_ns is not None  # noqa: S101
            if b.wall_ns < a.wall_ns or b.gc_pause_ns < a.gc_pause_ns:
                self.gc_pause_ns += b.gc_pause_ns
                self.wall_ns += b.wall_ns
            else:
                self.gc_pause_ns += b.gc_pause_ns - a.gc_pause_ns
                self.wall_ns += b.wall_ns - a.wall_ns


def _trim_series(series: _Series, horizon: float) -> None:
    while series.samples and series.samples[0][0] < horizon:
        series.samples.popleft()
        series.from_zero = False


class ReportStore:
    """Reports per pod; event loop only, like the target store.

    Cost: a report touches its own pod's entries and series; a bundle's
    summary reads the pods that reported that bundle (an index kept per
    namespace and bundle), never every pod of the namespace.
    """

    def __init__(
        self,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._latest: dict[tuple[str, str], StoredReport] = {}
        self._by_namespace: dict[str, set[str]] = {}
        self._by_bundle: dict[tuple[str, str], set[str]] = {}
        """Per (namespace, bundle): the pods whose latest report names the bundle, so a
        bundle's summary reads its own pods, not every pod of the namespace."""
        self._series: dict[tuple[str, str], dict[tuple[str, str], _Series]] = {}
        self._delivered: dict[tuple[str, str], _Delivered] = {}
        self._swept = clock()

    # -- writing ------------------------------------------------------------------

    def record(
        self, identity: PodIdentity, report: Report, *, targets: TargetMap | None
    ) -> PodActivity | None:
        """Store a report; return what to write to the pod, or None when nothing changed.

        ``targets`` is the pod's assignment (None when unknown), used for readiness.
        """
        now = self._clock()
        pod = (identity.namespace, identity.name)
        previous = self._latest.get(pod)
        if previous is not None and previous.identity.uid != identity.uid:
            self.forget(identity.namespace, identity.name)
        before = self._latest.get(pod)
        if before is not None:
            for bundle in before.report.bundles.keys() - report.bundles.keys():
                self._unindex(identity.namespace, bundle, identity.name)
        self._latest[pod] = StoredReport(identity=identity, received_at=now, report=report)
        self._by_namespace.setdefault(identity.namespace, set()).add(identity.name)
        horizon = now - self.window_seconds
        for bundle, bundle_report in report.bundles.items():
            self._by_bundle.setdefault((identity.namespace, bundle), set()).add(identity.name)
            for digest, counters in bundle_report.versions.items():
                per_pod = self._series.setdefault((bundle, digest), {})
                series = per_pod.setdefault(pod, _Series())
                series.samples.append((now, counters))
                _trim_series(series, horizon)
        self._sweep(now)
        return self._activity(identity, report, targets)

    def mark_delivered(self, activity: PodActivity) -> None:
        """The operator wrote ``activity`` to the pod; do not hand it over again."""
        self._delivered[(activity.namespace, activity.name)] = _Delivered(
            uid=activity.uid, active=dict(activity.active), ready=activity.ready
        )

    def forget(self, namespace: str, name: str) -> None:
        """The pod is gone: drop its reports and counters."""
        pod = (namespace, name)
        stored = self._latest.pop(pod, None)
        if stored is not None:
            for bundle in stored.report.bundles:
                self._unindex(namespace, bundle, name)
        names_ = self._by_namespace.get(namespace)
        if names_ is not None:
            names_.discard(name)
            if not names_:
                del self._by_namespace[namespace]
        self._delivered.pop(pod, None)
        for per_pod in self._series.values():
            per_pod.pop(pod, None)

    # -- reading ------------------------------------------------------------------

    def clock(self) -> float:
        """The store's clock (what ``since`` is measured on)."""
        return self._clock()

    def latest(self, namespace: str, name: str) -> StoredReport | None:
        return self._latest.get((namespace, name))

    def all_latest(self) -> Mapping[tuple[str, str], StoredReport]:
        return MappingProxyType(self._latest)

    def version_window(
        self,
        bundle: str,
        digest: str,
        *,
        since: float | None = None,
        namespace: str | None = None,
        pods: Collection[str] | None = None,
    ) -> VersionWindow:
        """The increase of a version's counters over the window, over the reporting pods.

        ``since`` (the store's clock) narrows it to increases reported after that
        moment: the analysis window of a rollout stage.  ``namespace`` and
        ``pods`` (names in it) narrow it to the pods a LogicBundle selects: any
        pod may hold a token for the distributor's audience and report, and a
        bundle of the same name in another namespace is another bundle, so the
        controller always passes both.
        """
        now = self._clock()
        self._sweep(now)
        horizon = now - self.window_seconds
        calls = errors = total_ns = 0
        reporting = 0
        buckets: list[int] = []
        process = _ProcessFigures()
        for (pod_namespace, pod_name), series in self._series.get((bundle, digest), {}).items():
            if namespace is not None and pod_namespace != namespace:
                continue
            if pods is not None and pod_name not in pods:
                continue
            _trim_series(series, horizon)
            samples = list(series.samples)
            if not samples:
                continue
            reporting += 1
            process.add(samples, since)
            first_at = samples[0][0]
            # In an analysis window, a version first reported inside the window counts
            # from zero: the SDK's counters start when it loads (the candidate at stage
            # start), and its first report would otherwise be lost.
            if since is not None and series.from_zero and first_at >= since:
                samples.insert(0, (first_at, VersionCounters(calls=0, errors=0)))
            for (_, a), (t, b) in itertools.pairwise(samples):
                if since is not None and t < since:
                    continue
                calls += _increase(a.calls, b.calls)
                errors += _increase(a.errors, b.errors)
                total_ns += _increase(a.total_ns, b.total_ns)
                step = _bucket_increase(list(a.latency_buckets), list(b.latency_buckets))
                buckets.extend([0] * (len(step) - len(buckets)))
                for k, value in enumerate(step):
                    buckets[k] += value
        return VersionWindow(
            calls=calls,
            errors=errors,
            total_ns=total_ns,
            latency_buckets=tuple(buckets),
            pods=reporting,
            process_pods=process.pods,
            rss_bytes=process.rss_bytes,
            threads=process.threads,
            gc_pause_ns=process.gc_pause_ns,
            wall_ns=process.wall_ns,
        )

    def summary(
        self,
        namespace: str,
        bundle: str,
        *,
        since: float | None,
        assigned: Callable[[str], bool],
    ) -> BundleSummary:
        """``bundle``'s reports summed per digest (see :mod:`._summary`).

        ``assigned(pod name)``: whether the bundle's rule gives the pod a target
        (only those pods count).  ``since`` (the store's clock) is the start of
        the counters' window.
        """
        pods = sorted(
            name for name in self._by_bundle.get((namespace, bundle), ()) if assigned(name)
        )
        active: dict[str, int] = {}
        failures: dict[str, Failure] = {}
        leaks: dict[str, Leak] = {}
        digests: set[str] = set()
        reporting = 0
        for name in pods:
            stored = self._latest[(namespace, name)]
            report = stored.report.bundles.get(bundle)
            if report is None:
                continue
            reporting += 1
            digests.update(report.versions)
            if report.active is not None and report.healthy:
                active[report.active] = active.get(report.active, 0) + 1
            error = report.last_error
            if error is not None and error.digest and error.at is not None:
                seen = Failure(pods=1, pod=name, at=error.at, message=error.message)
                known = failures.get(error.digest)
                failures[error.digest] = seen if known is None else known + seen
            for leak in report.leaks:
                first = leak.referrers[0] if leak.referrers else None
                held = Leak(
                    pods=1,
                    kinds=tuple(sorted({r.kind for r in leak.referrers})),
                    detail=f"{first.kind}: {first.detail}" if first and first.detail else "",
                )
                counted = leaks.get(leak.digest)
                leaks[leak.digest] = held if counted is None else counted + held
        versions = {}
        chosen = set(pods)
        for digest in sorted(digests):
            window = self.version_window(
                bundle, digest, since=since, namespace=namespace, pods=chosen
            )
            versions[digest] = Counters(
                calls=window.calls,
                errors=window.errors,
                total_ns=window.total_ns,
                latency_buckets=window.latency_buckets,
                pods=window.pods,
                process_pods=window.process_pods,
                rss_bytes=window.rss_bytes,
                threads=window.threads,
                gc_pause_ns=window.gc_pause_ns,
                wall_ns=window.wall_ns,
            )
        return BundleSummary(
            reporting=reporting,
            versions=versions,
            active=active,
            failures=failures,
            leaks=leaks,
        )

    def pods(
        self, namespace: str, bundle: str, *, assigned: Callable[[str], bool]
    ) -> list[dict[str, object]]:
        """Each assigned pod's latest report of ``bundle``: active digest, health, last error."""
        now = self._clock()
        listed: list[dict[str, object]] = []
        for name in sorted(self._by_bundle.get((namespace, bundle), ())):
            if not assigned(name):
                continue
            stored = self._latest[(namespace, name)]
            report = stored.report.bundles.get(bundle)
            if report is None:
                continue
            entry: dict[str, object] = {
                "pod": name,
                "active": report.active,
                "healthy": bool(report.healthy),
                "target": report.target,
                "reportedSecondsAgo": round(now - stored.received_at, 1),
            }
            if report.last_error is not None:
                entry["lastError"] = {
                    "reason": report.last_error.reason,
                    "message": report.last_error.message,
                    "digest": report.last_error.digest,
                }
            listed.append(entry)
        return listed

    # -- internals ----------------------------------------------------------------

    def _unindex(self, namespace: str, bundle: str, name: str) -> None:
        pods = self._by_bundle.get((namespace, bundle))
        if pods is not None:
            pods.discard(name)
            if not pods:
                del self._by_bundle[(namespace, bundle)]

    def _sweep(self, now: float) -> None:
        """Drop every series older than the window, at most every :data:`SWEEP_SECONDS`."""
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        horizon = now - self.window_seconds
        for key, per_pod in list(self._series.items()):
            for pod, series in list(per_pod.items()):
                _trim_series(series, horizon)
                if not series.samples:
                    del per_pod[pod]
            if not per_pod:
                del self._series[key]

    def _activity(
        self, identity: PodIdentity, report: Report, targets: TargetMap | None
    ) -> PodActivity | None:
        active = {name: bundle.active for name, bundle in report.bundles.items()}
        ready: bool | None = None
        missing: list[str] = []
        if targets is not None:
            missing = sorted(name for name in targets if active.get(name) is None)
            ready = not missing
        delivered = self._delivered.get((identity.namespace, identity.name))
        if delivered is not None and delivered.uid != identity.uid:
            delivered = None
        if delivered is not None and delivered.active == active and delivered.ready == ready:
            return None
        if ready is None:
            message = "the distributor does not know this pod's assignment"
        elif missing:
            message = f"waiting for the first activation of: {', '.join(missing)}"
        else:
            message = "every assigned bundle is active"
        return PodActivity(
            namespace=identity.namespace,
            name=identity.name,
            uid=identity.uid,
            active=MappingProxyType(active),
            ready=ready,
            ready_changed=delivered is None or delivered.ready != ready,
            message=message,
        )
