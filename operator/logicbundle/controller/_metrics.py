"""The operator's Prometheus metrics: rollouts by phase, stages, verdicts, verification, latency.

The analysis gauges (``logicbundle_analysis_value`` and friends) are derived from
``status.analysis`` alone, so a restarted operator shows the same figures as the
status it reads back, and a series disappears when the status no longer has it
(no data is an absent series, never a made-up 0).

The version health gauges (``logicbundle_version_*``) are the application
processes' own health per version cohort: the stable digest and the candidate
the published state tells pods to run, each with the figures the distributors'
summary gives every reconcile (what the ``residentMemory``, ``threadCount`` and
``gcPauseFraction`` builtin metrics judge, exported whether or not the
analysis lists them).  At most two digests per bundle: a digest's series go
when pods are no longer told to run it (promoted over, rolled back), and all of
a bundle's when a distributor replica does not answer (a partial view would
under-count).  A bundle at rest is refreshed between reconciles (:mod:`._health`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from logicbundle.api.v1alpha1 import LogicBundleStatus
from logicbundle.distributor import Counters

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class OperatorMetrics:
    """All of the operator's metrics in one registry (served on the metrics port)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.phase = Gauge(
            "logicbundle_rollout_phase",
            "1 for the phase each LogicBundle is in.",
            ["namespace", "bundle", "phase"],
            registry=r,
        )
        self.stage_seconds = Gauge(
            "logicbundle_stage_duration_seconds",
            "How long the current stage has been running.",
            ["namespace", "bundle", "stage"],
            registry=r,
        )
        self.pods = Gauge(
            "logicbundle_pods",
            "Pods selected by each LogicBundle, by state.",
            ["namespace", "bundle", "state"],
            registry=r,
        )
        self.retired_versions_alive = Gauge(
            "logicbundle_retired_versions_alive",
            "Retired versions the applications still hold after their grace period, summed"
            " over each LogicBundle's pods (version leaks, as the agents report them).",
            ["namespace", "bundle"],
            registry=r,
        )
        self.analysis_verdicts = Counter(
            "logicbundle_analysis_verdicts",
            "Analysis verdicts (Passed, Failed, NoData).",
            ["namespace", "bundle", "verdict"],
            registry=r,
        )
        self.verification_failures = Counter(
            "logicbundle_verification_failures",
            "Digests refused by signature verification or audit.",
            ["namespace", "bundle"],
            registry=r,
        )
        self.verify_seconds = Histogram(
            "logicbundle_source_check_seconds",
            "Resolve + verify + cache of a source.",
            buckets=_FAST,
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "logicbundle_reconcile_seconds",
            "One reconcile of one LogicBundle.",
            buckets=_FAST,
            registry=r,
        )
        labels = ["namespace", "bundle", "metric"]
        self.analysis_value = Gauge(
            "logicbundle_analysis_value",
            "The last measured value of each analysis metric, per cohort (candidate, stable).",
            [*labels, "cohort"],
            registry=r,
        )
        self.analysis_samples = Gauge(
            "logicbundle_analysis_samples",
            "Samples behind the last measured value of each analysis metric, per cohort.",
            [*labels, "cohort"],
            registry=r,
        )
        self.analysis_ratio = Gauge(
            "logicbundle_analysis_ratio_to_stable",
            "candidate / stable of the last measurement, when maxRatioToStable was judged.",
            labels,
            registry=r,
        )
        self.analysis_threshold = Gauge(
            "logicbundle_analysis_threshold",
            "The thresholds each metric was judged by (max, min, maxRatioToStable, minSamples).",
            [*labels, "threshold"],
            registry=r,
        )
        self.analysis_metric_verdict = Gauge(
            "logicbundle_analysis_metric_verdict",
            "1 for the verdict of each metric's last measurement (Passed, Failed, NoData).",
            [*labels, "verdict"],
            registry=r,
        )
        self._analysis_gauges = (
            self.analysis_value,
            self.analysis_samples,
            self.analysis_ratio,
            self.analysis_threshold,
            self.analysis_metric_verdict,
        )
        versions = ["namespace", "bundle", "cohort", "digest"]
        self.version_process_pods = Gauge(
            "logicbundle_version_process_pods",
            "Pods whose process serves each version (cohort stable, candidate) and reports its"
            " health.",
            versions,
            registry=r,
        )
        self.version_memory = Gauge(
            "logicbundle_version_resident_memory_bytes",
            "Resident memory of the processes serving each version, mean per pod.",
            versions,
            registry=r,
        )
        self.version_threads = Gauge(
            "logicbundle_version_threads",
            "OS threads of the processes serving each version, mean per pod.",
            versions,
            registry=r,
        )
        self.version_gc_pause = Gauge(
            "logicbundle_version_gc_pause_ratio",
            "Time the garbage collector paused the processes serving each version, per second"
            " of wall-clock time (over the analysis window).",
            versions,
            registry=r,
        )
        self._version_gauges = (
            self.version_process_pods,
            self.version_memory,
            self.version_threads,
            self.version_gc_pause,
        )
        self._analysis_series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._version_series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._versions_told: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._stages: dict[tuple[str, str], str] = {}

    def observe_leaks(self, *, namespace: str, name: str, alive: int | None) -> None:
        """Set ``logicbundle_retired_versions_alive`` of a bundle; None removes its series."""
        if alive is not None:
            self.retired_versions_alive.labels(namespace, name).set(alive)
        elif (namespace, name) in self.retired_versions_alive._metrics:
            self.retired_versions_alive.remove(namespace, name)

    def observe_status(self, *, namespace: str, name: str, status: LogicBundleStatus) -> None:
        key = (namespace, name)
        phase = str(status.phase or "Unknown")
        old = self._phases.get(key)
        if old is not None and old != phase:
            self.phase.labels(namespace, name, old).set(0)
        self.phase.labels(namespace, name, phase).set(1)
        self._phases[key] = phase
        old_stage = self._stages.pop(key, None)
        if old_stage is not None and old_stage != status.stage:
            self.stage_seconds.remove(namespace, name, old_stage)
        if status.stage and status.stage_started_at:
            elapsed = (datetime.now(UTC) - status.stage_started_at).total_seconds()
            self.stage_seconds.labels(namespace, name, status.stage).set(elapsed)
            self._stages[key] = status.stage
        if status.pods is not None:
            for state in ("total", "active", "pending", "failed"):
                self.pods.labels(namespace, name, state).set(getattr(status.pods, state))
            self.pods.labels(namespace, name, "without_agent").set(status.pods.without_agent)
        self._observe_analysis(namespace=namespace, name=name, status=status)

    def _observe_analysis(self, *, namespace: str, name: str, status: LogicBundleStatus) -> None:
        """The analysis gauges from ``status.analysis.metrics``; stale series removed."""
        series: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        for m in status.analysis.metrics if status.analysis is not None else ():
            key = (namespace, name, m.name)
            for cohort, value, samples in (
                ("candidate", m.candidate, m.samples),
                ("stable", m.stable, m.stable_samples),
            ):
                if value is not None:
                    series[(self.analysis_value, (*key, cohort))] = value
                    series[(self.analysis_samples, (*key, cohort))] = samples
            if m.ratio is not None:
                series[(self.analysis_ratio, key)] = m.ratio
            for threshold, limit in (
                ("max", m.maximum),
                ("min", m.minimum),
                ("maxRatioToStable", m.max_ratio_to_stable),
                ("minSamples", m.min_samples),
            ):
                if limit is not None:
                    series[(self.analysis_threshold, (*key, threshold))] = limit
            for verdict in ("Passed", "Failed", "NoData"):
                series[(self.analysis_metric_verdict, (*key, verdict))] = float(
                    m.verdict == verdict
                )
        for gauge, labels in self._analysis_series.get((namespace, name), set()) - set(series):
            gauge.remove(*labels)
        for (gauge, labels), value in series.items():
            gauge.labels(*labels).set(value)
        self._analysis_series[(namespace, name)] = set(series)

    def observe_versions(
        self,
        *,
        namespace: str,
        name: str,
        stable: str | None,
        candidate: str | None,
        versions: Mapping[str, Counters] | None,
    ) -> None:
        """The version health gauges of the digests pods are told; stale series removed.

        ``stable`` and ``candidate``: the published state's digests (a candidate
        rolled back and held in the status runs nowhere, and has none).
        ``versions``: the distributors' figures per digest (a summary's
        ``versions``); None when a replica did not answer, which removes them all.
        """
        series: dict[tuple[Gauge, tuple[str, ...]], float] = {}
        cohorts = (("stable", stable), ("candidate", candidate))
        for cohort, digest in cohorts:
            if not digest or versions is None:
                continue
            counters = versions.get(digest, Counters())
            labels: tuple[str, ...] = (namespace, name, cohort, digest)
            pods = counters.process_pods
            series[(self.version_process_pods, labels)] = pods
            if pods:
                series[(self.version_memory, labels)] = counters.rss_bytes / pods
                series[(self.version_threads, labels)] = counters.threads / pods
                if counters.wall_ns > 0:
                    ratio = counters.gc_pause_ns / counters.wall_ns
                    series[(self.version_gc_pause, labels)] = ratio
        for gauge, labels in self._version_series.get((namespace, name), set()) - set(series):
            gauge.remove(*labels)
        for (gauge, labels), value in series.items():
            gauge.labels(*labels).set(value)
        self._version_series[(namespace, name)] = set(series)
        self._versions_told[(namespace, name)] = (stable, candidate)

    def versions_told(self, *, namespace: str, name: str) -> tuple[str | None, str | None] | None:
        """(stable, candidate) the last :meth:`observe_versions` of ``name`` had; None: none."""
        return self._versions_told.get((namespace, name))

    def forget(self, *, namespace: str, name: str) -> None:
        self._analysis_series.pop((namespace, name), None)
        self._version_series.pop((namespace, name), None)
        self._versions_told.pop((namespace, name), None)
        gauges = (self.phase, self.stage_seconds, self.pods)
        for gauge in (*gauges, *self._analysis_gauges, *self._version_gauges):
            for labels in list(gauge._metrics):
                if labels[:2] == (namespace, name):
                    gauge.remove(*labels)
        self._phases.pop((namespace, name), None)
        self._stages.pop((namespace, name), None)
