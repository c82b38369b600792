"""The operator's test seams: off unless a test's environment lists a point, never in the chart.

A listed point stops only the reconcile that reaches it (the event loop goes
on) after leaving its marker; an unknown point name stops the process at
import, so a misspelt end-to-end test cannot pass without ever pausing.
Where each point sits in a reconcile is checked in test_reconcile.py and by
the end-to-end kill tests (e2e/suites/test_rollout.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from logicbundle.controller import _seams

REPO = Path(__file__).resolve().parents[2]

REACH_THEN_GO_ON = """
import asyncio
from logicbundle.controller import _seams

async def main():
    paused = asyncio.create_task(_seams.reached("analysis", namespace="shop", name="pricing"))
    await asyncio.sleep(0)  # the task runs up to its first wait: the seam's, or its end
    print("paused" if not paused.done() else "passed", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _run(code: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_listed_point_leaves_its_marker_and_stops_that_reconcile_only(tmp_path: Path) -> None:
    proc = _run(
        REACH_THEN_GO_ON,
        LOGICBUNDLE_OPERATOR_TEST_PAUSE="rollback,analysis",
        LOGICBUNDLE_OPERATOR_TEST_PAUSE_DIR=str(tmp_path),
    )
    try:
        assert proc.stdout is not None
        # The event loop went on past the paused coroutine (it printed), and that one waits.
        assert proc.stdout.readline().strip() == "paused"
        assert (tmp_path / "analysis").read_text() == "shop/pricing"
        assert not (tmp_path / "rollback").exists()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.communicate()


def test_without_the_environment_every_point_passes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_seams.PAUSE_ENV)}
    proc = subprocess.run(
        [sys.executable, "-c", REACH_THEN_GO_ON.replace("await asyncio.Event().wait()", "")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "passed"
    assert _seams.enabled() == (), "the unit tests run without pause points"


def test_a_missing_pause_directory_lets_every_point_pass(tmp_path: Path) -> None:
    proc = _run(
        REACH_THEN_GO_ON.replace("await asyncio.Event().wait()", ""),
        LOGICBUNDLE_OPERATOR_TEST_PAUSE="analysis",
        LOGICBUNDLE_OPERATOR_TEST_PAUSE_DIR=str(tmp_path / "absent"),
    )
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "passed"
    assert not (tmp_path / "absent").exists()


def test_an_unknown_point_name_stops_the_process_at_import() -> None:
    proc = _run(
        "import logicbundle.controller._seams",
        LOGICBUNDLE_OPERATOR_TEST_PAUSE="analysis,status-writen",
        LOGICBUNDLE_OPERATOR_TEST_PAUSE_DIR="/nonexistent",
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "unknown points status-writen" in err


def test_the_chart_and_the_image_never_set_a_pause_point() -> None:
    """Production cannot stop at a seam by accident: nothing shipped names the variables."""
    shipped = [
        path
        for path in [*(REPO / "charts").rglob("*"), REPO / "Dockerfile"]
        if path.is_file() and path.suffix not in {".png", ".tgz"}
    ]
    assert len(shipped) > 10
    for path in shipped:
        text = path.read_text(errors="replace")
        assert "TEST_PAUSE" not in text, f"{path.relative_to(REPO)} names a test pause point"
