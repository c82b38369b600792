"""Per-version call accounting that costs a few attribute writes per call.

A call touches only counters owned by its own thread (a :class:`ThreadStats`
reached through a ``threading.local``), so the call path takes no lock and
shares no cache line with other threads' writes.  Latency goes into fixed
power-of-two buckets (the schema of :mod:`logicbundle.contract`): the bucket
of a duration of ``d`` nanoseconds is ``bucket_of(d)``, one C call, and its
upper bound is ``bucket_upper_ns(k) == 2**k`` ns.  Nothing
is aggregated until somebody asks: :meth:`VersionStats.snapshot` sums the
threads' counters when Prometheus scrapes or the agent asks for a report.

Threads come and go (``ThreadingHTTPServer`` starts one per request), so the
counters of dead threads are folded into a single total, both when a report is
taken and when the list of threads grows past twice its live size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from logicbundle.contract import MAX_LATENCY_BUCKETS, bucket_upper_ns

EXPORTED_BUCKET_BITS: Final = tuple(range(10, 37, 2))
"""Bucket bounds exported to Prometheus: ``2**k`` ns for these ``k`` (about 1 µs to 69 s)."""


class ThreadStats:
    """Counters of one thread for one version; written only by that thread."""

    __slots__ = ("buckets", "errors", "started", "thread", "total_ns")

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.started = 0
        """Calls begun; those in flight are ``started - sum(buckets)``."""
        self.errors = 0
        self.total_ns = 0
        self.buckets = [0] * MAX_LATENCY_BUCKETS


@dataclass(frozen=True)
class StatsSnapshot:
    """Counters of one version summed over all threads, at one instant."""

    calls: int
    """Completed calls (successful or not)."""
    errors: int
    """Completed calls that raised."""
    inflight: int
    total_ns: int
    buckets: tuple[int, ...]
    """Non-cumulative counts per power-of-two bucket (:func:`logicbundle.contract.bucket_of`)."""

    def cumulative(self, bits: tuple[int, ...] = EXPORTED_BUCKET_BITS) -> list[tuple[int, int]]:
        """``(upper bound in ns, calls at or below it)`` for each exported bound."""
        out: list[tuple[int, int]] = []
        running = 0
        index = 0
        for k in bits:
            while index <= k and index < MAX_LATENCY_BUCKETS:
                running += self.buckets[index]
                index += 1
            out.append((bucket_upper_ns(k), running))
        return out

    def quantile_ns(self, q: float) -> int | None:
        """Upper bound of the bucket holding quantile ``q``; None without calls."""
        if self.calls == 0:
            return None
        rank = q * self.calls
        running = 0
        for k, count in enumerate(self.buckets):
            running += count
            if running >= rank and count:
                return bucket_upper_ns(k)
        return bucket_upper_ns(MAX_LATENCY_BUCKETS - 1)


class VersionStats:
    """All threads' counters of one version."""

    def __init__(self) -> None:
        self.local = threading.local()
        self._lock = threading.Lock()
        self._threads: list[ThreadStats] = []
        self._folded = ThreadStats(None)
        self._fold_at = 64

    def register(self) -> ThreadStats:
        """The calling thread's counters, created on its first call (the slow path)."""
        stats = ThreadStats(threading.current_thread())
        with self._lock:
            self._threads.append(stats)
            if len(self._threads) >= self._fold_at:
                self._fold_dead()
                self._fold_at = max(64, 2 * len(self._threads))
        self.local.stats = stats
        return stats

    def _fold_dead(self) -> None:
        alive: list[ThreadStats] = []
        folded = self._folded
        for stats in self._threads:
            thread = stats.thread
            if thread is not None and thread.is_alive():
                alive.append(stats)
                continue
            # A dead thread writes no more: its counters are final.
            folded.errors += stats.errors
            folded.total_ns += stats.total_ns
            folded.started += stats.started
            buckets = folded.buckets
            for k, count in enumerate(stats.buckets):
                if count:
                    buckets[k] += count
        self._threads = alive

    def inflight(self) -> int:
        """Calls started and not yet finished, over all threads.

        Never an under-count: each thread's finished calls are read before its
        started calls, so a call finishing meanwhile can only be counted as
        still in flight, never the other way round.  A drain that reads 0 is done.
        """
        with self._lock:
            threads = list(self._threads)
        total = 0
        for stats in threads:
            finished = sum(stats.buckets)
            total += stats.started - finished
        return total

    def snapshot(self) -> StatsSnapshot:
        """Sum every thread's counters (lock-free reads of monotonic integers)."""
        with self._lock:
            self._fold_dead()
            parts = [self._folded, *self._threads]
        buckets = [0] * MAX_LATENCY_BUCKETS
        errors = total = inflight = 0
        for part in parts:
            finished = 0
            for k, count in enumerate(part.buckets):
                if count:
                    buckets[k] += count
                    finished += count
            # errors is bumped just before the bucket; never report more errors than calls.
            errors += min(part.errors, finished)
            total += part.total_ns
            inflight += part.started - finished
        return StatsSnapshot(
            calls=sum(buckets),
            errors=errors,
            inflight=inflight,
            total_ns=total,
            buckets=tuple(buckets),
        )
