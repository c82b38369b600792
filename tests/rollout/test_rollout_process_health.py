"""Runtime health as analysis input: memory, threads and GC pauses of each version's pods."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from logicbundle.api import Analysis, conditions
from logicbundle.rollout import BuiltinSample, judge_builtin
from tests.rollout._fixtures import (
    D1,
    D2,
    INTERNAL,
    T0,
    converge,
    installed,
    make_spec,
    ok,
    pods,
    run,
    stalled,
)

MiB = 2**20
S = timedelta(seconds=1)
HEALTH: dict[str, Any] = {
    "metrics": [
        {"name": "memory", "builtin": "residentMemory", "maxRatioToStable": 1.5, "minSamples": 2},
        {"name": "threads", "builtin": "threadCount", "maxRatioToStable": 2, "minSamples": 2},
        {"name": "gc", "builtin": "gcPauseFraction", "max": 0.05, "minSamples": 2},
    ]
}


def sample(*, pods: int, rss_mib: float, threads: int, gc_ms: float = 5) -> BuiltinSample:
    """``pods`` pods, each at ``rss_mib`` MiB with ``threads`` threads, over 60 s."""
    return BuiltinSample(
        process_pods=pods,
        rss_bytes=int(pods * rss_mib * MiB),
        threads=pods * threads,
        gc_pause_ns=int(pods * gc_ms * 1e6),
        wall_ns=pods * 60 * 10**9,
    )


def analysis() -> Analysis:
    return Analysis.model_validate(HEALTH)


STABLE = sample(pods=8, rss_mib=100, threads=10)


def test_a_candidate_whose_pods_use_what_the_stable_ones_use_passes() -> None:
    verdict = judge_builtin(
        analysis=analysis(), candidate=sample(pods=2, rss_mib=110, threads=12), stable=STABLE
    )
    assert verdict.verdict == "Passed", verdict.reason
    memory = verdict.metrics[0]
    # The status keeps 4 significant digits of the bytes.
    assert (memory.candidate, memory.stable, memory.ratio) == (1.153e8, 1.049e8, 1.1)


def test_a_candidate_whose_pods_grow_memory_fails_with_the_figures_in_the_verdict() -> None:
    verdict = judge_builtin(
        analysis=analysis(), candidate=sample(pods=2, rss_mib=250, threads=10), stable=STABLE
    )
    assert verdict.verdict == "Failed"
    assert verdict.reason == ("memory: 250 MiB is 2.5x stable 100 MiB > maxRatioToStable 1.5x"), (
        verdict.reason
    )
    assert [m.verdict for m in verdict.metrics] == ["Failed", "Passed", "Passed"]


def test_a_candidate_whose_pods_grow_threads_fails() -> None:
    verdict = judge_builtin(
        analysis=analysis(), candidate=sample(pods=2, rss_mib=100, threads=45), stable=STABLE
    )
    assert verdict.verdict == "Failed"
    assert "threads: 45 is 4.5x stable 10 > maxRatioToStable 2x" in verdict.reason


def test_gc_pauses_are_judged_as_a_fraction_of_wall_time_in_percent() -> None:
    verdict = judge_builtin(
        analysis=analysis(),
        candidate=sample(pods=2, rss_mib=100, threads=10, gc_ms=6000),
        stable=STABLE,
    )
    assert verdict.verdict == "Failed"
    assert "gc: 10% > max 5%" in verdict.reason


@pytest.mark.parametrize("pods_reporting", [0, 1])
def test_too_few_pods_reporting_their_process_is_no_data_never_a_pass(pods_reporting: int) -> None:
    candidate = sample(pods=pods_reporting, rss_mib=100, threads=10)
    verdict = judge_builtin(analysis=analysis(), candidate=candidate, stable=STABLE)
    assert verdict.verdict == "NoData"
    assert f"memory: too few samples: {pods_reporting} < 2" in verdict.reason


def test_process_figures_over_a_window_keep_levels_and_take_increases_of_gc_time() -> None:
    earlier = sample(pods=1, rss_mib=100, threads=10, gc_ms=5)
    later = BuiltinSample(
        process_pods=1, rss_bytes=120 * MiB, threads=11, gc_pause_ns=15_000_000, wall_ns=90 * 10**9
    )
    window = later.since(earlier)
    assert (window.rss_bytes, window.threads) == (120 * MiB, 11)
    assert (window.gc_pause_ns, window.wall_ns) == (10_000_000, 30 * 10**9)
    restarted = BuiltinSample(process_pods=1, rss_bytes=MiB, gc_pause_ns=1, wall_ns=10)
    assert restarted.since(earlier).gc_pause_ns == 1


def test_a_stage_whose_candidate_grew_memory_rolls_back_and_says_by_how_much() -> None:
    spec = make_spec(stages=[INTERNAL, {"name": "all", "all": True}], analysis=HEALTH)
    status, reports = installed(spec, pods(10, internal=(0, 1)))
    decision = run(spec=spec, status=status, reports=reports, now=T0 + 10 * S, verified=ok(D2))
    reports = converge(decision, reports)
    grown = judge_builtin(
        analysis=spec.rollout.analysis,
        candidate=sample(pods=2, rss_mib=300, threads=10),
        stable=STABLE,
    )
    rolled = run(spec=spec, status=decision.status, reports=reports, now=T0 + 20 * S, verdict=grown)
    assert stalled(rolled.status) == (conditions.TRUE, conditions.ROLLED_BACK)
    assert rolled.status.stable_digest == D1
    message = next(c.message for c in rolled.status.conditions if c.type == conditions.STALLED)
    assert "memory: 300 MiB is 3x stable 100 MiB > maxRatioToStable 1.5x" in message
    failed = rolled.status.history[0].stages[-1]
    assert failed.verdict == "Failed" and "300 MiB" in failed.message
