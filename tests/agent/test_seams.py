"""The test seams' pause-once mode: a restarted container passes the step it stopped at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

STEP_THEN_PRINT = "from logicbundle.agent import _seams; _seams.step('unpacked'); print('passed')"


def _run(tmp_path: Path, *, once: bool) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LOGICBUNDLE_AGENT_TEST_PAUSE": "unpacked,swapped",
        "LOGICBUNDLE_AGENT_TEST_PAUSE_DIR": str(tmp_path),
    }
    if once:
        env["LOGICBUNDLE_AGENT_TEST_PAUSE_ONCE"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", STEP_THEN_PRINT], env=env, stdout=subprocess.PIPE, text=True
    )


def _wait_for_marker(marker: Path, proc: subprocess.Popen[str]) -> None:
    """Until the marker holds the process's pid (it is created, then written)."""
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text() == str(proc.pid)):
        assert proc.poll() is None, "the process went past a step it should stop at"
        assert time.monotonic() < deadline, "the step's marker never appeared"
        time.sleep(0.01)  # polling a file the child writes; the deadline bounds it


def test_a_listed_step_stops_the_process_and_leaves_its_marker(tmp_path: Path) -> None:
    proc = _run(tmp_path, once=True)
    try:
        _wait_for_marker(tmp_path / "unpacked", proc)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()


def test_with_pause_once_a_step_whose_marker_exists_is_passed(tmp_path: Path) -> None:
    (tmp_path / "unpacked").write_text("1")
    proc = _run(tmp_path, once=True)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "passed"


def test_without_pause_once_an_existing_marker_still_stops_the_step(tmp_path: Path) -> None:
    marker = tmp_path / "unpacked"
    marker.write_text("1")
    proc = _run(tmp_path, once=False)
    try:
        _wait_for_marker(marker, proc)
    finally:
        proc.kill()
        proc.communicate()


def test_a_missing_pause_directory_lets_every_step_pass(tmp_path: Path) -> None:
    proc = _run(tmp_path / "absent", once=False)
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == "passed"
    assert not (tmp_path / "absent").exists()
