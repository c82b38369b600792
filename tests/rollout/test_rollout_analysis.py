"""Analysis verdicts: thresholds, ratios to stable, too few samples, PromQL templates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logicbundle.api import Analysis, Metric
from logicbundle.rollout import (
    BuiltinSample,
    MetricValue,
    MetricValues,
    histogram_quantile,
    judge,
    judge_builtin,
    judge_metric,
    render_query,
)
from tests.rollout._fixtures import D1, D2

ERRORS = Metric(name="error-rate", builtin="errorRate", maximum=0.05, max_ratio_to_stable=2.0)
LATENCY = Metric(name="latency-p95", builtin="latencyP95", max_ratio_to_stable=2.0)


def values(
    candidate: float | None,
    samples: int | None = 100,
    stable: float | None = None,
    stable_samples: int | None = 100,
) -> MetricValues:
    return MetricValues(
        candidate=MetricValue(value=candidate, samples=samples),
        stable=None if stable is None else MetricValue(value=stable, samples=stable_samples),
    )


@pytest.mark.parametrize(
    ("metric", "figures", "verdict", "message"),
    [
        (ERRORS, values(0.01, stable=0.01), "Passed", ""),
        (ERRORS, values(0.2, stable=0.19), "Failed", "20% > max 5%"),
        (ERRORS, values(0.04, stable=0.01), "Failed", "4% is 4x stable 1% > maxRatioToStable 2x"),
        (ERRORS, values(0.04, stable=0.0), "Passed", "ratio to stable skipped: stable value is 0"),
        (ERRORS, values(0.04), "Passed", "ratio to stable skipped: stable has no data"),
        (
            ERRORS,
            values(0.04, stable=0.01, stable_samples=3),
            "Passed",
            "stable has too few samples (3 < 20)",
        ),
        (ERRORS, values(0.5, samples=3), "NoData", "too few samples: 3 < 20"),
        (ERRORS, values(None, samples=0), "NoData", "too few samples: 0 < 20"),
        (ERRORS, values(math.nan, samples=None), "NoData", "too few samples: 0 < 20"),
        (
            Metric(name="q", query="x", minimum=10.0),
            values(5.0, samples=None),
            "Failed",
            "5 < min 10",
        ),
        (Metric(name="q", query="x", minimum=10.0), values(50.0, samples=None), "Passed", ""),
    ],
)
def test_one_metric_is_judged_against_its_thresholds(
    metric: Metric, figures: MetricValues, verdict: str, message: str
) -> None:
    result = judge_metric(metric=metric, values=figures, min_samples=20)
    assert result.verdict == verdict
    assert message in result.message


def test_a_failure_wins_over_another_metrics_missing_data() -> None:
    analysis = Analysis(metrics=(ERRORS, LATENCY))
    verdict = judge(analysis=analysis, values={"error-rate": values(0.5)})
    assert verdict.failed and "error-rate" in verdict.reason
    assert [m.verdict for m in verdict.metrics] == ["Failed", "NoData"]


def test_too_few_samples_is_its_own_verdict_never_a_pass() -> None:
    verdict = judge(
        analysis=Analysis(metrics=(ERRORS,)), values={"error-rate": values(0.0, samples=3)}
    )
    assert verdict.inconclusive and not verdict.passed
    assert verdict.reason == "error-rate: too few samples: 3 < 20"


def test_a_metrics_own_min_samples_wins() -> None:
    metric = ERRORS.model_copy(update={"min_samples": 2})
    assert judge(
        analysis=Analysis(metrics=(metric,)), values={"error-rate": values(0.0, samples=3)}
    ).passed


def buckets(*pairs: tuple[float, int]) -> tuple[tuple[float, int], ...]:
    return tuple(pairs)


def test_builtin_metrics_come_from_the_agents_figures() -> None:
    fast = buckets((0.001, 90), (0.01, 100), (math.inf, 100))
    slow = buckets((0.001, 0), (0.01, 10), (0.1, 100), (math.inf, 100))
    stable = BuiltinSample(calls=100, errors=1, latency_buckets=fast, pods=9)
    good = BuiltinSample(calls=100, errors=1, latency_buckets=fast, pods=1)
    assert judge_builtin(analysis=Analysis(), candidate=good, stable=stable).passed
    verdict = judge_builtin(
        analysis=Analysis(),
        candidate=BuiltinSample(calls=100, errors=1, latency_buckets=slow, pods=1),
        stable=stable,
    )
    assert verdict.failed and "latency-p95" in verdict.reason
    errors = judge_builtin(
        analysis=Analysis(),
        candidate=BuiltinSample(calls=100, errors=20, latency_buckets=fast),
        stable=stable,
    )
    assert errors.failed and "20% > max 5%" in errors.reason


def test_restarts_are_counted_per_pod() -> None:
    metric = Metric(name="restarts", builtin="restarts", maximum=0.0, min_samples=1)
    verdict = judge_builtin(
        analysis=Analysis(metrics=(metric,)),
        candidate=BuiltinSample(restarts=1, pods=2),
        stable=None,
    )
    assert verdict.failed and "0.5 > max 0" in verdict.reason


def test_per_pod_samples_add_up_and_windows_subtract() -> None:
    a = BuiltinSample(
        calls=10, errors=1, latency_buckets=buckets((0.01, 5), (math.inf, 10)), pods=1
    )
    b = BuiltinSample(
        calls=30, errors=0, latency_buckets=buckets((0.01, 30), (math.inf, 30)), pods=1
    )
    total = BuiltinSample.total([a, b])
    assert (total.calls, total.errors, total.pods) == (40, 1, 2)
    assert total.latency_buckets == ((0.01, 35), (math.inf, 40))
    assert total.since(a).calls == 30
    assert a.since(total) == a  # a reset counter: the later report is the whole window


def test_histogram_quantiles_interpolate_like_prometheus() -> None:
    assert histogram_quantile(0.5, buckets((1.0, 0), (2.0, 10))) == pytest.approx(1.5)
    assert histogram_quantile(0.99, buckets((1.0, 10), (math.inf, 20))) == 1.0
    assert histogram_quantile(0.5, ()) is None


@settings(max_examples=200, deadline=None)
@given(
    calls=st.integers(0, 10_000), errors=st.integers(0, 10_000), min_samples=st.integers(1, 1000)
)
def test_a_verdict_with_fewer_samples_than_required_is_never_a_pass(
    calls: int, errors: int, min_samples: int
) -> None:
    errors = min(errors, calls)
    analysis = Analysis(metrics=(ERRORS,), min_samples=min_samples)
    verdict = judge_builtin(
        analysis=analysis, candidate=BuiltinSample(calls=calls, errors=errors), stable=None
    )
    if calls < min_samples:
        assert not verdict.passed


def test_query_templates_are_rendered_with_escaped_values() -> None:
    template = (
        'sum(rate(calls{namespace="{{namespace}}",bundle="{{ bundle }}",digest="{{digest}}"}[5m]))'
        ' / on() x{d="{{stable_digest}}"}'
    )
    rendered = render_query(template, namespace="shop", bundle="rules", digest=D2, stable_digest=D1)
    expected = (
        f'sum(rate(calls{{namespace="shop",bundle="rules",digest="{D2}"}}[5m]))'
        f' / on() x{{d="{D1}"}}'
    )
    assert rendered == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {
                "namespace": 'shop"} or vector(1) #',
                "bundle": "rules",
                "digest": D2,
                "stable_digest": D1,
            },
            "object names",
        ),
        (
            {"namespace": "shop", "bundle": "rules", "digest": "latest", "stable_digest": D1},
            "digests",
        ),
    ],
)
def test_query_values_that_could_break_out_of_their_quotes_are_refused(
    kwargs: dict[str, str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        render_query('x{n="{{namespace}}"}', **kwargs)


def test_an_unknown_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        render_query("x{{pod}}", namespace="shop", bundle="rules", digest=D2, stable_digest=D1)


# --- a failed query is missing data; stableNoData decides about a stable without data ----------

RATIO_ONLY = Metric(name="ratio", query="q", max_ratio_to_stable=2.0)


def test_a_failed_stable_query_never_lets_a_ratio_only_metric_pass() -> None:
    figures = MetricValues(
        candidate=MetricValue(value=0.01),
        stable=MetricValue(value=None, error="HTTP 503"),
    )
    result = judge_metric(metric=RATIO_ONLY, values=figures, min_samples=1)
    assert result.verdict == "NoData"
    assert "HTTP 503" in result.message


def test_a_failed_candidate_query_is_missing_data_not_zero_samples() -> None:
    figures = MetricValues(candidate=MetricValue(value=None, error="timed out"))
    result = judge_metric(metric=ERRORS, values=figures, min_samples=1)
    assert (result.verdict, result.message) == ("NoData", "the candidate's query failed: timed out")


@pytest.mark.parametrize(
    "stable",
    [None, MetricValue(value=0.0, samples=100), MetricValue(value=0.01, samples=3)],
    ids=["no-data", "zero", "too-few-samples"],
)
def test_stable_no_data_holds_when_asked_and_is_said_when_skipped(
    stable: MetricValue | None,
) -> None:
    figures = MetricValues(candidate=MetricValue(value=0.04, samples=100), stable=stable)
    held = judge_metric(metric=ERRORS, values=figures, min_samples=20, stable_no_data="hold")
    assert held.verdict == "NoData"
    assert "stableNoData: hold" in held.message
    analysis = Analysis(metrics=(ERRORS,), stable_no_data="skip")
    verdict = judge(analysis=analysis, values={ERRORS.name: figures})
    assert verdict.verdict == "Passed"
    assert "ratio to stable skipped" in verdict.reason  # visible in the verdict


def test_holding_never_hides_an_absolute_failure() -> None:
    figures = MetricValues(candidate=MetricValue(value=0.5, samples=100))
    result = judge_metric(metric=ERRORS, values=figures, min_samples=20, stable_no_data="hold")
    assert result.verdict == "Failed"
