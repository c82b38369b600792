"""Analysis verdicts: are the candidate's numbers good enough to move on?

Pure: the controller gathers the numbers (the agents' reports for
``builtin`` metrics, query results for ``prometheus`` ones) and this module
judges them.  Three outcomes, never two: *Passed*, *Failed* (with the
figures that failed) and *NoData* -- too few samples is its own verdict,
so a quiet canary is never mistaken for a healthy one.

Thresholds are absolute (``max``, ``min``) or relative to the stable digest
measured over the same window (``maxRatioToStable``).  When stable has no
data, too few samples or a value of zero (any candidate value would be an
infinite ratio), ``stableNoData`` decides: ``skip`` judges the metric by its
absolute thresholds and says so in the verdict, ``hold`` makes it *NoData*.
A query that failed is not "no data": it is missing data, and the metric is
*NoData* whatever the policy, so a partial outage of the metrics source can
never pass a stage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from logicbundle.api import Analysis, Metric, MetricResult, Verdict
from logicbundle.api.formats import DIGEST_PATTERN, DNS_SUBDOMAIN_PATTERN

# --- inputs ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricValue:
    """One digest's value of one metric over the analysis window.

    ``value`` None (or NaN) means no data.  ``samples`` is how many
    observations are behind it (calls; pods for ``restarts``); None means the
    source cannot count them (a PromQL query), and a present value is then
    taken as enough samples.
    """

    value: float | None
    samples: int | None = None
    error: str | None = None
    """Why the value could not be measured (a query that failed): missing data, and
    unlike "no data" never skipped."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricValues:
    """The candidate's and the stable digest's value of one metric, same window."""

    candidate: MetricValue
    stable: MetricValue | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltinSample:
    """One digest's figures over the analysis window, summed over its pods.

    ``latency_buckets`` are cumulative ``(upper bound in seconds, calls at or
    below it)`` pairs in ascending order, like a Prometheus histogram; the
    SDK reports them per version (power-of-two nanosecond bounds), and
    buckets, unlike percentiles, add up across pods.

    The application process's own health, from the pods whose process runs
    this digest as its primary version (``process_pods`` of them): the sum of
    their latest resident memory (``rss_bytes``) and thread counts
    (``threads``), and the time their garbage collector paused them
    (``gc_pause_ns``) over ``wall_ns`` of wall-clock time, both summed.
    """

    calls: int = 0
    errors: int = 0
    latency_buckets: tuple[tuple[float, int], ...] = ()
    restarts: int = 0
    pods: int = 0
    process_pods: int = 0
    rss_bytes: int = 0
    threads: int = 0
    gc_pause_ns: int = 0
    wall_ns: int = 0

    def __add__(self, other: BuiltinSample) -> BuiltinSample:
        return BuiltinSample(
            calls=self.calls + other.calls,
            errors=self.errors + other.errors,
            latency_buckets=_add_buckets(self.latency_buckets, other.latency_buckets),
            restarts=self.restarts + other.restarts,
            pods=self.pods + other.pods,
            process_pods=self.process_pods + other.process_pods,
            rss_bytes=self.rss_bytes + other.rss_bytes,
            threads=self.threads + other.threads,
            gc_pause_ns=self.gc_pause_ns + other.gc_pause_ns,
            wall_ns=self.wall_ns + other.wall_ns,
        )

    @classmethod
    def total(cls, samples: Iterable[BuiltinSample]) -> BuiltinSample:
        """The sum of per-pod samples."""
        result = cls()
        for sample in samples:
            result = result + sample
        return result

    def since(self, earlier: BuiltinSample) -> BuiltinSample:
        """The window between two cumulative reports of the same pod and digest.

        A counter that went down was reset (the application restarted): the
        later report is then the whole window, as Prometheus' ``increase`` does.
        """
        if self.calls < earlier.calls or self.errors < earlier.errors:
            return self
        before = dict(earlier.latency_buckets)
        buckets = tuple(
            (bound, count - before.get(bound, 0)) for bound, count in self.latency_buckets
        )
        if any(count < 0 for _, count in buckets):
            return self
        # Memory and threads are levels: the later report's.  GC pauses and wall time
        # are cumulative; a drop is a restarted process, whose later figures are the window.
        paused = self.gc_pause_ns - earlier.gc_pause_ns
        wall = self.wall_ns - earlier.wall_ns
        if paused < 0 or wall < 0:
            paused, wall = self.gc_pause_ns, self.wall_ns
        return BuiltinSample(
            calls=self.calls - earlier.calls,
            errors=self.errors - earlier.errors,
            latency_buckets=buckets,
            restarts=max(0, self.restarts - earlier.restarts),
            pods=self.pods,
            process_pods=self.process_pods,
            rss_bytes=self.rss_bytes,
            threads=self.threads,
            gc_pause_ns=paused,
            wall_ns=wall,
        )


def _add_buckets(
    left: Sequence[tuple[float, int]], right: Sequence[tuple[float, int]]
) -> tuple[tuple[float, int], ...]:
    if not left:
        return tuple(right)
    if not right:
        return tuple(left)
    bounds = sorted({bound for bound, _ in left} | {bound for bound, _ in right})
    return tuple(
        (bound, _cumulative_at(left, bound) + _cumulative_at(right, bound)) for bound in bounds
    )


def _cumulative_at(buckets: Sequence[tuple[float, int]], bound: float) -> int:
    """Calls at or below ``bound`` (the largest bucket bound not above it)."""
    count = 0
    for upper, cumulative in buckets:
        if upper > bound:
            break
        count = cumulative
    return count


def histogram_quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float | None:
    """The ``q`` quantile of cumulative buckets, interpolated as Prometheus does.

    None without observations.  A quantile in the last (open) bucket is its
    lower bound's upper neighbour: the largest finite bound.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower_bound
            in_bucket = cumulative - lower_count
            if in_bucket <= 0:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / in_bucket
        lower_bound, lower_count = upper, cumulative
    return lower_bound


_QUANTILES: Final = {"latencyP50": 0.5, "latencyP95": 0.95, "latencyP99": 0.99}


def builtin_value(metric: Metric, sample: BuiltinSample) -> MetricValue:
    """``metric`` (a builtin one) computed from one digest's sample."""
    kind = metric.builtin
    if kind == "errorRate":
        value = sample.errors / sample.calls if sample.calls else None
        return MetricValue(value=value, samples=sample.calls)
    if kind == "restarts":
        value = sample.restarts / sample.pods if sample.pods else None
        return MetricValue(value=value, samples=sample.pods)
    if kind in _QUANTILES:
        observed = sample.latency_buckets[-1][1] if sample.latency_buckets else 0
        return MetricValue(
            value=histogram_quantile(_QUANTILES[kind], sample.latency_buckets), samples=observed
        )
    pods = sample.process_pods
    if kind == "residentMemory":
        return MetricValue(value=sample.rss_bytes / pods if pods else None, samples=pods)
    if kind == "threadCount":
        return MetricValue(value=sample.threads / pods if pods else None, samples=pods)
    if kind == "gcPauseFraction":
        value = sample.gc_pause_ns / sample.wall_ns if pods and sample.wall_ns > 0 else None
        return MetricValue(value=value, samples=pods)
    raise ValueError(f"metric {metric.name!r} is not a builtin metric")


# --- verdicts -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class AnalysisVerdict:
    """One measurement's verdict over every metric.

    ``verdict`` is ``Passed``, ``Failed`` or ``NoData``; ``reason`` is one
    line for a condition message or an event; ``metrics`` are the figures,
    ready for ``status.analysis.metrics``.
    """

    verdict: Verdict
    reason: str
    metrics: tuple[MetricResult, ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "Passed"

    @property
    def failed(self) -> bool:
        return self.verdict == "Failed"

    @property
    def inconclusive(self) -> bool:
        return self.verdict == "NoData"


def _usable(value: MetricValue | None) -> float | None:
    if value is None or value.value is None or math.isnan(value.value):
        return None
    return value.value


def _number(value: float) -> str:
    """3 significant digits, without an exponent for everyday magnitudes."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _fmt(value: float, builtin: str | None = None) -> str:
    """``value`` for a person: rates in percent, latencies in ms or s, memory in MiB."""
    if builtin in ("errorRate", "gcPauseFraction"):
        return f"{_number(value * 100)}%"
    if builtin == "residentMemory":
        return f"{_number(value / 2**20)} MiB"
    if builtin in _QUANTILES:
        return f"{_number(value * 1000)} ms" if abs(value) < 1 else f"{_number(value)} s"
    return _number(value)


def _rounded(value: float | None) -> float | None:
    """``value`` as the status keeps it: 4 significant digits (the verdict used all of them)."""
    return None if value is None else float(f"{value:.4g}")


def judge_metric(
    *,
    metric: Metric,
    values: MetricValues,
    min_samples: int,
    stable_no_data: str = "skip",
) -> MetricResult:
    """The verdict of one metric: thresholds, ratio to stable, and the sample count.

    The result carries the figures (rounded for the status), the thresholds it
    was judged by and the sample counts, so a verdict can be read without the spec.
    """
    candidate = _usable(values.candidate)
    samples = values.candidate.samples
    stable = _usable(values.stable)
    stable_samples = values.stable.samples if values.stable is not None else None
    unit = metric.builtin

    def fmt(value: float) -> str:
        return _fmt(value, unit)

    base: dict[str, object] = {
        "name": metric.name,
        "candidate": _rounded(candidate),
        "stable": _rounded(stable),
        "samples": samples if samples is not None else (0 if candidate is None else min_samples),
        "stable_samples": stable_samples or 0,
        "min_samples": min_samples,
        "maximum": metric.maximum,
        "minimum": metric.minimum,
        "max_ratio_to_stable": metric.max_ratio_to_stable,
    }

    def result(verdict: Verdict, message: str, ratio: float | None = None) -> MetricResult:
        return MetricResult.model_validate(
            {**base, "ratio": _rounded(ratio), "verdict": verdict, "message": message[:1024]}
        )

    if values.candidate.error is not None:
        return result("NoData", f"the candidate's query failed: {values.candidate.error}")
    if candidate is None or (samples is not None and samples < min_samples):
        count = samples if samples is not None else 0
        return result("NoData", f"too few samples: {count} < {min_samples}")
    stable_error = values.stable.error if values.stable is not None else None
    if metric.max_ratio_to_stable is not None and stable_error is not None:
        return result(
            "NoData", f"the stable digest's query failed ({stable_error}): no ratio to judge"
        )
    failures: list[str] = []
    if metric.maximum is not None and candidate > metric.maximum:
        failures.append(f"{fmt(candidate)} > max {fmt(metric.maximum)}")
    if metric.minimum is not None and candidate < metric.minimum:
        failures.append(f"{fmt(candidate)} < min {fmt(metric.minimum)}")
    notes: list[str] = []
    ratio: float | None = None
    if metric.max_ratio_to_stable is not None:
        why = _no_ratio(stable, stable_samples, min_samples)
        if why is not None and stable_no_data == "hold" and not failures:
            return result("NoData", f"ratio to stable held: {why} (stableNoData: hold)")
        if why is not None:
            notes.append(f"ratio to stable skipped: {why} (stableNoData: skip)")
        elif stable is not None:
            ratio = candidate / stable
            if ratio > metric.max_ratio_to_stable:
                failures.append(
                    f"{fmt(candidate)} is {_number(ratio)}x stable {fmt(stable)} "
                    f"> maxRatioToStable {_number(metric.max_ratio_to_stable)}x"
                )
    if failures:
        return result("Failed", "; ".join(failures + notes), ratio)
    return result("Passed", "; ".join(notes), ratio)


def _no_ratio(stable: float | None, stable_samples: int | None, min_samples: int) -> str | None:
    """Why stable gives no ratio to judge by (None: it does)."""
    if stable is None:
        return "stable has no data"
    if stable_samples is not None and stable_samples < min_samples:
        return f"stable has too few samples ({stable_samples} < {min_samples})"
    if stable == 0:
        return "stable value is 0"
    return None


def judge(*, analysis: Analysis, values: Mapping[str, MetricValues]) -> AnalysisVerdict:
    """Judge every metric of ``analysis``; ``values`` maps metric names to their figures.

    Any failed metric fails the verdict (a clear failure is not hidden by
    another metric's missing data); otherwise any metric without enough
    samples makes it ``NoData``; otherwise it passes.  A metric missing from
    ``values`` has no data.
    """
    results: list[MetricResult] = []
    for metric in analysis.effective_metrics():
        figures = values.get(
            metric.name, MetricValues(candidate=MetricValue(value=None, samples=0))
        )
        results.append(
            judge_metric(
                metric=metric,
                values=figures,
                min_samples=analysis.effective_min_samples(metric),
                stable_no_data=analysis.stable_no_data,
            )
        )
    failed = [r for r in results if r.verdict == "Failed"]
    if failed:
        reason = "; ".join(f"{r.name}: {r.message}" for r in failed)
        return AnalysisVerdict(verdict="Failed", reason=reason, metrics=tuple(results))
    missing = [r for r in results if r.verdict == "NoData"]
    if missing:
        reason = "; ".join(f"{r.name}: {r.message}" for r in missing)
        return AnalysisVerdict(verdict="NoData", reason=reason, metrics=tuple(results))
    figures_ = summarize(results, analysis)
    skipped = [f"{r.name}: {r.message}" for r in results if r.message]
    return AnalysisVerdict(
        verdict="Passed",
        reason=f"{len(results)} metric(s) within thresholds: {figures_}"
        + (f" ({'; '.join(skipped)})" if skipped else ""),
        metrics=tuple(results),
    )


def summarize(results: Iterable[MetricResult], analysis: Analysis) -> str:
    """``error-rate 1.2% (n=340, 0.8x stable), latency-p95 12 ms (n=340)``: for events."""
    units = {metric.name: metric.builtin for metric in analysis.effective_metrics()}
    return ", ".join(_figures(r, units.get(r.name)) for r in results)


def _figures(result: MetricResult, builtin: str | None) -> str:
    """``error-rate 1.2% (n=340, 0.8x stable)``: one metric's figures, for a person."""
    if result.candidate is None:
        return f"{result.name} no data"
    parts = [f"n={result.samples}"]
    if result.ratio is not None:
        parts.append(f"{_number(result.ratio)}x stable")
    return f"{result.name} {_fmt(result.candidate, builtin)} ({', '.join(parts)})"


def judge_builtin(
    *, analysis: Analysis, candidate: BuiltinSample, stable: BuiltinSample | None
) -> AnalysisVerdict:
    """Judge the builtin metrics from the agents' figures for both digests.

    A metric with a ``query`` here is a spec error the CRD already refuses
    with the builtin provider; it is judged as having no data.
    """
    values: dict[str, MetricValues] = {}
    for metric in analysis.effective_metrics():
        if metric.builtin is None:
            continue
        values[metric.name] = MetricValues(
            candidate=builtin_value(metric, candidate),
            stable=builtin_value(metric, stable) if stable is not None else None,
        )
    return judge(analysis=analysis, values=values)


# --- PromQL templates -----------------------------------------------------------

_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)
_NAME_RE: Final = re.compile(DNS_SUBDOMAIN_PATTERN)


def escape_label_value(value: str) -> str:
    """``value`` escaped for a PromQL double-quoted string (``\\``, ``"`` and newlines)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_query(
    template: str, *, namespace: str, bundle: str, digest: str, stable_digest: str
) -> str:
    """``template`` with ``{{namespace}}``, ``{{bundle}}``, ``{{digest}}``, ``{{stable_digest}}``.

    Values are checked against their formats (a digest, DNS names) *and*
    escaped for a PromQL string, so a placeholder cannot break out of the
    quotes it is written in.  Any other placeholder is refused.
    """
    if not _DIGEST_RE.fullmatch(digest) or not _DIGEST_RE.fullmatch(stable_digest):
        raise ValueError("digest and stable_digest must be sha256:<64 hex> digests")
    if not _NAME_RE.fullmatch(namespace) or not _NAME_RE.fullmatch(bundle):
        raise ValueError("namespace and bundle must be Kubernetes object names")
    values = {
        "namespace": namespace,
        "bundle": bundle,
        "digest": digest,
        "stable_digest": stable_digest,
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unknown placeholder {{{{{name}}}}} in query")
        return escape_label_value(values[name])

    return _PLACEHOLDER_RE.sub(substitute, template)
