"""Harness processes are stopped by their own process id, children included."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from e2e.harness.proc import HarnessError, Process, group_members, pid_alive, wait_for


def test_stopping_a_process_stops_its_children_too(tmp_path: Path) -> None:
    proc = Process(
        "parent",
        ["/bin/sh", "-c", "sleep 300 & sleep 300 & wait"],
        run_dir=tmp_path,
    )
    members = wait_for(
        lambda: m if len(m := group_members(proc.pid)) >= 3 else None,
        what="the children to start",
        timeout=10,
    )
    proc.stop(grace=5)
    # A SIGKILLed child is gone once the kernel has run its exit, which on a loaded
    # machine is a moment after the signal: wait for it, with a deadline.
    wait_for(
        lambda: not [p for p in members if pid_alive(p)],
        what="every member of the group gone",
        timeout=10,
    )
    assert group_members(proc.pid) == []


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    proc = Process(
        "stubborn",
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('ready', flush=True); time.sleep(300)",
        ],
        run_dir=tmp_path,
    )
    wait_for(lambda: "ready" in proc.log_path.read_text(), what="ready", timeout=10)
    proc.stop(grace=0.5)
    assert not pid_alive(proc.pid)


def test_waiting_fails_at_once_with_the_log_when_a_watched_process_exits(tmp_path: Path) -> None:
    proc = Process("crasher", ["/bin/sh", "-c", "echo boom-from-the-log; exit 3"], run_dir=tmp_path)
    with pytest.raises(HarnessError, match=r"(?s)crasher exited with code 3.*boom-from-the-log"):
        wait_for(lambda: False, what="never", timeout=30, watch=[proc])
    proc.stop()


def test_waiting_times_out_with_the_last_error() -> None:
    def never() -> bool:
        raise ValueError("still not there")

    with pytest.raises(HarnessError, match=r"timed out.*waiting for the thing.*still not there"):
        wait_for(never, what="the thing", timeout=0.2, interval=0.01)


def test_waiting_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert (
        wait_for(lambda: next(counter) >= 3 and "done", what="count", timeout=5, interval=0)
        == "done"
    )


def test_a_restarted_process_runs_again_with_the_same_arguments_and_log(tmp_path: Path) -> None:
    script = "import os, time; print('up', os.getpid(), flush=True); time.sleep(300)"
    proc = Process("again", [sys.executable, "-c", script], run_dir=tmp_path)
    wait_for(lambda: "up" in proc.log_path.read_text(), what="first start", timeout=10)
    first = proc.pid
    proc.restart(grace=5)
    wait_for(lambda: f"up {proc.pid}" in proc.log_path.read_text(), what="second start", timeout=10)
    assert proc.pid != first
    assert not pid_alive(first)
    assert proc.alive()
    assert proc.log_path.read_text().splitlines() == [f"up {first}", f"up {proc.pid}"]
    proc.stop(grace=5)
    assert not pid_alive(proc.pid)
