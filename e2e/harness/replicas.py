"""Distributor replicas as local processes, with real pod-bound tokens (issue 10).

``logicbundle distributor`` replicas serve the fleet's agents; the operator
reads their summed reports and hands them the verified bytes.  Each process
stands for a pod: a kwok Pod of the right ServiceAccount exists for it, and
its token comes from the TokenRequest API bound to that Pod, so the
operator's and the replicas' TokenReviews see exactly what they would in a
cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from e2e.harness.cluster import Cluster
from e2e.harness.proc import Process, free_port, wait_for

OPERATOR_ACCOUNT = "lb-operator"
REPLICA_ACCOUNT = "lb-distributor"
READER_ACCOUNT = "lb-status-reader"


def stand_in(cluster: Cluster, namespace: str, pod: str, account: str, token_file: Path) -> None:
    """A kwok Pod of ``account`` standing for a process; its bound token written to a file."""
    with contextlib.suppress(Exception):  # one ServiceAccount for several pods
        cluster.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        )
    body = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "serviceAccountName": account,
                "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": "registry.invalid/lb:1"}],
            },
        },
    )
    token = cluster.pod_token(namespace, account, pod=pod, uid=body["metadata"]["uid"])
    token_file.write_text(str(token))


@dataclass
class Replica:
    """One running ``logicbundle distributor`` (plain HTTP on 127.0.0.1)."""

    process: Process
    port: int
    cache: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        cluster: Cluster,
        run_dir: Path,
        *,
        name: str,
        namespace: str | None,
        upstream: str,
        token_file: Path,
        operator_namespace: str,
        port: int | None = None,
    ) -> Replica:
        run_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        cache = run_dir / f"{name}-cache"
        process = Process(
            name,
            [
                sys.executable,
                "-m",
                "logicbundle.cli",
                "distributor",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--insecure-http",
                "--cache-dir",
                str(cache),
                *(("--namespace", namespace) if namespace else ()),
                "--upstream",
                upstream,
                "--token-file",
                str(token_file),
                "--operator-service-account",
                f"{operator_namespace}:{OPERATOR_ACCOUNT}",
                "--status-reader-service-account",
                f"{operator_namespace}:{READER_ACCOUNT}",
            ],
            run_dir=run_dir,
            env=cluster.env(),
        )
        replica = cls(process=process, port=port, cache=cache)
        replica.wait_serving()
        return replica

    def wait_serving(self) -> None:
        log = self.process.log_path
        wait_for(
            lambda: re.search(rf"distributor serving on port {self.port}\b", log.read_text()),
            what=f"{self.process.name} serving",
            timeout=60,
            watch=[self.process],
        )

    def cached(self) -> set[str]:
        """The manifest digests in this replica's cache."""
        folder = self.cache / "manifests" / "sha256"
        return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.is_dir() else set()

    def kill(self) -> None:
        """SIGKILL, as a node failure would; the process is gone at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop()
