"""`python -m e2e.harness.cluster up` / `down` work, and stopping leaves no process behind."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from e2e.harness import services
from e2e.harness.proc import group_members, pid_alive, wait_for

REPO = Path(__file__).resolve().parents[2]


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def test_up_prints_a_working_kubeconfig_and_down_stops_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "LOGICBUNDLE_E2E_RUN_DIR": str(tmp_path / "state")}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2e.harness.cluster",
            "up",
            "--nodes",
            "1",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(up.stdout, out), daemon=True).start()
    try:
        line = wait_for(out.get_nowait, what="the KUBECONFIG line", timeout=180)
        assert line.startswith("KUBECONFIG=")
        kubeconfig = line.strip().split("=", 1)[1]
        nodes = subprocess.run(
            [str(services.kubectl()), f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        assert nodes == ["node/kwok-node-0"]
        state = json.loads((tmp_path / "state" / "cluster.json").read_text())
        pids = [int(p) for p in state["processes"].values()]
        assert set(state["processes"]) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert all(pid_alive(p) for p in pids)

        subprocess.run(
            [sys.executable, "-m", "e2e.harness.cluster", "down"],
            cwd=REPO,
            env=env,
            timeout=120,
            check=True,
        )
        assert up.wait(timeout=60) == 0
        assert [p for p in pids if pid_alive(p)] == []
        assert [m for p in pids for m in group_members(p)] == []
        assert not (tmp_path / "state" / "cluster.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        assert up.stdout is not None
        up.stdout.close()


def test_stopping_the_registry_and_prometheus_leaves_no_process_behind(tmp_path: Path) -> None:
    registry = services.Registry.start(tmp_path / "registry")
    prometheus = services.Prometheus.start(tmp_path / "prometheus", config={"scrape_configs": []})
    pids = [registry.pid, prometheus.pid]
    assert all(pid_alive(p) for p in pids)
    registry.stop()
    prometheus.stop()
    assert [p for p in pids if pid_alive(p)] == []
    assert [m for p in pids for m in group_members(p)] == []
