"""The test seams' pause-once mode: a restarted container passes the step it stopped at."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logicbundle.agent import BundleStore, _seams

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


class _Killed(Exception):
    """Raised by the hook: the removal stops there, as a SIGKILL would stop it."""


def test_a_kill_halfway_through_deleting_a_version_leaves_nothing_servable(
    tmp_path: Path,
) -> None:
    store = BundleStore(tmp_path, "pricing")
    store.prepare()
    old, new = f"sha256:{'a' * 64}", f"sha256:{'b' * 64}"
    for digest in (old, new):
        version = store.version_path(digest)
        (version / "tables").mkdir(parents=True)
        for name in ("pricing.py", "tables/a.json", "tables/b.json"):
            (version / name).write_text(name)
        store.write_manifest(digest, b"{}")
    store.point_current(new)
    seen: list[set[str]] = []

    def hook(step: str) -> None:
        if step == "deleting":
            aside = [p for p in store.versions.iterdir() if p.name.startswith(".deleting-")]
            seen.append({str(p.relative_to(aside[0])) for p in aside[0].rglob("*")})
            raise _Killed

    _seams.hook = hook
    try:
        with pytest.raises(_Killed):
            store.remove(old)
    finally:
        _seams.hook = None
    # Killed halfway: part of the old version is gone, and what is left is not a version.
    assert seen and seen[0] and seen[0] < {"pricing.py", "tables", "tables/a.json", "tables/b.json"}
    assert not store.has(old)
    assert old not in store.on_disk()

    again = BundleStore(tmp_path, "pricing")  # the agent started again
    removed = again.prepare()
    assert any(name.startswith(".versions/.deleting-") for name in removed), removed
    assert sorted(p.name for p in again.versions.iterdir()) == [new, f"{new}.manifest.json"]
    assert (again.active(), again.on_disk()) == (new, [new])
