"""The application process's own health: memory, threads and garbage-collection pauses.

Sampled when the agent asks for stats (its reporting path, every few
seconds), never on a call: a bundle call costs exactly what it cost before.
Resident memory and the thread count are read from ``/proc/self`` (two small
files; elsewhere the peak RSS from :func:`resource.getrusage` and the Python
threads).  GC pauses are timed by a :data:`gc.callbacks` hook, installed on
the first sample: two clock reads per collection, a few hundred nanoseconds
against a collection's tens of microseconds (``tests/sdk/test_process.py``
measures it).  A rollout judges a candidate against the stable version on
these (``residentMemory``, ``threadCount``, ``gcPauseFraction``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

if sys.platform != "win32":
    import resource

_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class GcPauses:
    """Total time spent in garbage collections since :meth:`install`, in nanoseconds."""

    def __init__(self) -> None:
        self.paused_ns = 0
        self.collections = 0
        self.since_ns = time.monotonic_ns()
        self._started = 0
        self._installed = False
        self._lock = threading.Lock()

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        # Runs inside the collector, on whichever thread triggered it: no allocation
        # beyond an int, no lock (the collector holds the interpreter).
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started:
            self.paused_ns += time.perf_counter_ns() - self._started
            self.collections += 1
            self._started = 0

    def install(self) -> None:
        """Start timing collections (once per process; later calls do nothing)."""
        with self._lock:
            if self._installed:
                return
            self.since_ns = time.monotonic_ns()
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        """Stop timing collections (tests)."""
        with self._lock:
            if self._installed:
                gc.callbacks.remove(self._callback)
                self._installed = False


PAUSES: Final = GcPauses()
"""The process's one timer of GC pauses."""


def _rss_bytes() -> int | None:
    try:
        return int(Path("/proc/self/statm").read_bytes().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        return None
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except OSError:
        return None
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _threads() -> int:
    try:
        # Field 20 (num_threads), counted after the command name's closing parenthesis.
        return int(Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return threading.active_count()


def sample() -> dict[str, int]:
    """The process's figures now: ``rssBytes``, ``threads``, ``gcPauseNs``, ``wallNs``.

    ``gcPauseNs`` and ``gcCollections`` count from the first sample, and
    ``wallNs`` is the time since then: their increases between two samples
    give the fraction of wall-clock time spent paused in the collector.
    """
    PAUSES.install()
    figures = {
        "threads": _threads(),
        "gcPauseNs": PAUSES.paused_ns,
        "gcCollections": PAUSES.collections,
        "wallNs": time.monotonic_ns() - PAUSES.since_ns,
    }
    rss = _rss_bytes()
    if rss is not None:
        figures["rssBytes"] = rss
    return figures
