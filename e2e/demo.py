"""The local demo: the real control plane with the operator running against it.

``make demo`` (the README's first command) builds what is missing, starts the
control plane and the operator, prints how to look around, and runs until
Ctrl-C.  ``--check`` is the non-interactive mode: it starts everything,
checks the operator is live, and stops.

Today the operator has no LogicBundle handlers yet (they arrive with the
rollout issue); the demo grows with the project.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from e2e import versions
from e2e.cluster import Cluster
from e2e.proc import Process, free_port, wait_for


def _say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}", flush=True)


def _live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="non-interactive: start, check, stop (for CI)"
    )
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="logicbundle-demo-"))
    _say(
        f"starting Kubernetes {versions.KUBERNETES} (etcd, apiserver, controller-manager, "
        "scheduler, kwok) on 127.0.0.1; the first run builds it from the Go module proxy"
    )
    with Cluster.start(run_dir, nodes=2) as cluster:
        _say(f"control plane ready in {cluster.started_in:.1f}s")
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        operator = Process(
            "operator",
            [sys.executable, "-m", "logicbundle.cli", "operator", "--liveness", liveness],
            run_dir=run_dir,
            env=cluster.env(),
        )
        try:
            wait_for(lambda: _live(liveness), what="the operator", timeout=60, watch=[operator])
            _say(f"operator running (pid {operator.pid}, log {operator.log_path})")
            nodes = cluster.kubectl("get", "nodes")
            print(nodes, flush=True)
            _say(f"everything up in {time.monotonic() - t0:.1f}s")
            if args.check:
                _say("check passed: control plane ready, operator live")
                return 0
            _say("look around:")
            print(f"    export KUBECONFIG={cluster.kubeconfig}")
            print(f"    {cluster.kubectl_path} get nodes,pods -A")
            print(f"    tail -f {operator.log_path}")
            _say("Ctrl-C stops everything")
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            while not stop.wait(1.0):
                if not operator.alive():
                    _say(f"the operator exited; see {operator.log_path}")
                    return 1
            return 0
        finally:
            operator.stop()
            _say("stopped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
