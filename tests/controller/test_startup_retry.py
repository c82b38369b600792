"""A failed start-up undoes what it started, so that kopf's retry starts clean.

Found on the real node (issue 7's suite, in CI): an operator replica restarted
once at install.  A start-up that failed halfway (the API server not answering
yet) left its metrics listener bound, so every retry failed on its own port
until the kubelet's liveness probe, which kopf serves only after start-up,
killed the container.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import kopf
import pytest

from logicbundle.controller._handlers import (
    STARTUP_BACKOFF,
    STARTUP_RETRIES,
    ControllerSettings,
    Memo,
    register,
    start,
)

LOG = logging.getLogger("test")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def unreachable_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig naming an API server on a closed port, without credentials."""
    port = _free_port()
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(config))


@pytest.mark.usefixtures("unreachable_cluster")
def test_a_failed_start_up_undoes_itself_and_is_retried_cleanly(tmp_path: Path) -> None:
    metrics_port = _free_port()
    memo = Memo(
        settings=ControllerSettings(cache_dir=tmp_path / "cache", metrics_port=metrics_port)
    )
    for _attempt in range(2):  # the second attempt fails the same way, not on its own port
        with pytest.raises(kopf.TemporaryError) as caught:
            asyncio.run(start(memo, logger=LOG))
        assert str(caught.value) == (
            "start-up failed: the API server could not be reached (MaxRetryError)"
        ), caught.value
        assert caught.value.delay == STARTUP_BACKOFF
        assert memo.runtime is None and memo.metrics_server is None and memo.pods is None
        assert _bindable(metrics_port), "the metrics listener outlived the failed start-up"


def test_kopf_retries_the_start_up_a_bounded_number_of_times() -> None:
    registry = kopf.OperatorRegistry()
    register(registry)
    (handler,) = [h for h in registry._activities.get_all_handlers() if h.id == "start"]
    assert handler.retries == STARTUP_RETRIES and handler.backoff == STARTUP_BACKOFF


def test_a_missing_crd_is_named_and_the_operator_gives_up_in_one_line(tmp_path: Path) -> None:
    """A cluster without the LogicBundle CRD: each attempt says so; then one line, exit 1."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # an API server that serves no LogicBundle resource
            found = self.path == "/version"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"major":"1","minor":"37"}' if found else b'{"code":404}')

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{server.server_port}'}}}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    try:
        # The command as a user runs it: kopf tries STARTUP_RETRIES more times, then gives up.
        done = subprocess.run(
            [sys.executable, "-m", "logicbundle.cli", "operator", "--namespace", "shop"],
            env={**os.environ, "KUBECONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last == (
            "error: the operator could not start: the LogicBundle CRD "
            "(logicbundles.logicbundle.io/v1alpha1) is not installed "
            "(install the chart, or kubectl apply --server-side -f crds/)"
        ), done.stderr
    finally:
        server.shutdown()
        server.server_close()
