"""`logicbundle operator` runs kopf against the cluster and stops cleanly on SIGTERM.

It watches a namespace of its own: earlier suites leave LogicBundles behind in
namespaces being deleted, and a cluster-wide operator then spends its shutdown
retrying events the API server refuses there (kopf's event poster backs off
up to 9 times), which is not what this test is about.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from e2e.harness.cluster import Cluster
from e2e.harness.proc import free_port, http_status, wait_for


def test_the_operator_starts_against_the_cluster_and_exits_cleanly_on_sigterm(
    cluster: Cluster, namespace: str, tmp_path: Path, logicbundle_crd: str
) -> None:
    # The CRD is installed here, not by whichever suite ran before (alone, its start-up
    # failed: "the LogicBundle CRD ... is not installed").
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "logicbundle.cli",
                "operator",
                "--liveness",
                liveness,
                "--namespace",
                namespace,
            ],
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
    assert f"starting the operator (namespaces {namespace}, standalone," in text
    assert "the operator stopped" in text
