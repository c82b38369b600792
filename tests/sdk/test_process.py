"""The process's health in the stats reply: memory, threads, GC pauses, at no per-call cost."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

from logicbundle.sdk import _process
from tests.sdk.test_socket_protocol import Agent, agent, listener  # noqa: F401 - fixtures


@pytest.fixture
def pauses() -> Iterator[_process.GcPauses]:
    """A GC timer of the test's own, removed afterwards."""
    timer = _process.GcPauses()
    timer.install()
    yield timer
    timer.uninstall()


def _threads_seen_with_three_more() -> tuple[int, int]:
    """(threads before, threads while three more are parked), sampled by the SDK."""
    before = _process.sample()["threads"]
    started, done = threading.Barrier(4), threading.Event()

    def park() -> None:
        started.wait(10)
        done.wait(10)

    workers = [threading.Thread(target=park) for _ in range(3)]
    for worker in workers:
        worker.start()
    started.wait(10)  # all three are running
    try:
        during = _process.sample()["threads"]
    finally:
        done.set()
        for worker in workers:
            worker.join(10)
    return before, during


def test_a_sample_has_the_resident_memory_and_the_threads_of_the_process() -> None:
    before = _process.sample()
    assert before["rssBytes"] > 1 << 20
    # Threads other tests left behind may end meanwhile: a few tries, one must see all three.
    tries = [_threads_seen_with_three_more() for _ in range(5)]
    assert any(during >= start + 3 for start, during in tries), tries
    ballast = bytearray(64 << 20)  # touched: it is resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert _process.sample()["rssBytes"] >= before["rssBytes"] + (48 << 20)
    del ballast


def test_gc_pauses_and_wall_time_grow_with_each_collection(pauses: _process.GcPauses) -> None:
    start_paused, start_count = pauses.paused_ns, pauses.collections
    garbage = [[i] for i in range(100_000)]
    for _ in range(5):
        gc.collect()
    del garbage
    assert pauses.collections >= start_count + 5
    assert pauses.paused_ns > start_paused
    first = _process.sample()
    gc.collect()
    second = _process.sample()
    assert second["gcPauseNs"] > first["gcPauseNs"]
    assert second["gcCollections"] > first["gcCollections"]
    assert second["wallNs"] > first["wallNs"]


def test_timing_a_collection_costs_well_under_a_collection() -> None:
    """The hook's cost per collection, measured: young collections with and without it."""
    rounds = 20_000

    def young_collections() -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter_ns()
            for _ in range(rounds):
                gc.collect(0)
            best = min(best, (time.perf_counter_ns() - started) / rounds)
        return best

    without = young_collections()
    timer = _process.GcPauses()
    timer.install()
    try:
        with_hook = young_collections()
    finally:
        timer.uninstall()
    overhead = with_hook - without
    print(f"gc.collect(0): {without:.0f} ns, with the pause hook {with_hook:.0f} ns")
    # Two clock reads and a few attribute writes: well under 5 us on any machine.
    assert overhead < 5_000, (without, with_hook)


def test_the_stats_reply_carries_the_process_figures(agent: Agent) -> None:  # noqa: F811
    reply = agent.ask(op="stats", id=7)
    assert reply["ok"] is True
    process = reply["process"]
    assert set(process) == {"rssBytes", "threads", "gcPauseNs", "gcCollections", "wallNs"}
    assert process["rssBytes"] > 0 and process["threads"] >= 2  # the listener's thread too
