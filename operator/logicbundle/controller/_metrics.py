"""The operator's Prometheus metrics: rollouts by phase, stages, verdicts, verification, latency.

The analysis gauges (``logicbundle_analysis_value`` and friends) are derived from
``status.analysis`` alone, so a restarted operator shows the same figures as the
status it reads back, and a series disappears when the status no longer has it
(no data is an absent series, never a made-up 0).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from logicbundle.api.v1alpha1 import LogicBundleStatus

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
        self._analysis_series: dict[tuple[str, str], set[tuple[Gauge, tuple[str, ...]]]] = {}
        self._phases: dict[tuple[str, str], str] = {}
        self._stages: dict[tuple[str, str], str] = {}

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

    def forget(self, *, namespace: str, name: str) -> None:
        self._analysis_series.pop((namespace, name), None)
        for gauge in (self.phase, self.stage_seconds, self.pods, *self._analysis_gauges):
            for labels in list(gauge._metrics):
                if labels[:2] == (namespace, name):
                    gauge.remove(*labels)
        self._phases.pop((namespace, name), None)
        self._stages.pop((namespace, name), None)
