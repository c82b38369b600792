"""`logicbundle operator` runs kopf against the cluster and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from e2e.harness.cluster import Cluster
from e2e.harness.proc import free_port, http_status, wait_for


def test_the_operator_starts_against_the_cluster_and_exits_cleanly_on_sigterm(
    cluster: Cluster, tmp_path: Path
) -> None:
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "logicbundle.cli", "operator", "--liveness", liveness],
            env={**os.environ, **cluster.env()},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: proc.poll() is None and http_status(liveness) == 200,
                what="liveness",
                timeout=60,
            )
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert code == 0, text
    # Cluster-wide, but never the system namespaces unless named (issue 11, defect 6).
    started = re.search(r"starting the operator \(cluster-wide but ([^)]*), standalone,", text)
    assert started is not None, text
    assert {"kube-system", "kube-public", "kube-node-lease"} <= set(started.group(1).split(", "))
    assert "the operator stopped" in text
