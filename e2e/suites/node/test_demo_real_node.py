"""``make demo ARGS=--real-node``, non-interactive: the story told in real containers, checked.

It runs in a network namespace of its own (nested in the suite's), because a
real node takes the namespace's bridge, node address and DNS port, and the
suite's own real node holds those of this one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_the_real_node_demo_rolls_v2_out_in_stages_and_rolls_the_bad_v3_back() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2e.harness.netns",
            "--",
            sys.executable,
            "-m",
            "e2e.demo",
            "--real-node",
            "--check",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "check passed" in out
    for stage in ("stage internal", "stage canary", "stage everyone"):
        assert stage in out, out[-6000:]
    assert "v3 caught and rolled back on every pod" in out, out[-6000:]
    assert "container restarts in the 11 pods: 0" in out, out[-6000:]
