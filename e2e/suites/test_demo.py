"""The README's first command, in its non-interactive mode, tells the whole story and checks it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_rolls_v2_out_in_stages_and_rolls_the_bad_v3_back() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "e2e.demo", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "check passed" in out
    for stage in ("stage internal", "stage canary", "stage everyone"):
        assert stage in out, out[-4000:]
    assert "v3 caught and rolled back" in out, out[-4000:]
