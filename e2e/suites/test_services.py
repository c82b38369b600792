"""The registry, cosign, oras and Prometheus from the harness work for real."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, MetricsHandler

from e2e.harness import services
from e2e.harness.proc import wait_for
from e2e.harness.services import Prometheus, Registry

ARTIFACT_TYPE = "application/vnd.logicbundle.e2e.test"


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def pushed(registry: Registry, tmp_path: Path) -> tuple[str, str, bytes]:
    """An artifact pushed with oras: (repository reference, manifest digest, file content)."""
    content = os.urandom(4096)
    (tmp_path / "payload.bin").write_bytes(content)
    ref = f"{registry.host}/e2e/payload:v1"
    out = _run(
        services.oras(),
        "push",
        "--plain-http",
        "--artifact-type",
        ARTIFACT_TYPE,
        ref,
        "payload.bin:application/octet-stream",
        cwd=tmp_path,
    )
    match = re.search(r"Digest:\s*(sha256:[0-9a-f]{64})", out)
    assert match, out
    return f"{registry.host}/e2e/payload", match.group(1), content


def test_the_registry_accepts_an_oras_push_and_serves_it_back_by_digest(
    registry: Registry, pushed: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repo, digest, content = pushed
    request = urllib.request.Request(
        f"{registry.url}/v2/e2e/payload/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        manifest = resp.read()
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    out = tmp_path / "pulled"
    _run(services.oras(), "pull", "--plain-http", "-o", out, f"{repo}@{digest}", cwd=tmp_path)
    assert (out / "payload.bin").read_bytes() == content


def test_cosign_signs_with_a_fresh_key_pair_and_verifies_with_the_public_key(
    pushed: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repo, digest, _ = pushed
    env = {"COSIGN_PASSWORD": "e2e", "HOME": str(tmp_path), "TUF_ROOT": str(tmp_path / "tuf")}
    cosign = services.cosign()
    _run(cosign, "generate-key-pair", cwd=tmp_path, env=env)
    _run(
        cosign,
        "sign",
        "--yes",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--allow-http-registry",
        "--use-signing-config=false",
        f"{repo}@{digest}",
        cwd=tmp_path,
        env=env,
    )
    out = _run(
        cosign,
        "verify",
        "--key",
        "cosign.pub",
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        f"{repo}@{digest}",
        cwd=tmp_path,
        env=env,
    )
    assert digest in out


def test_cosign_verify_fails_with_another_key(
    pushed: tuple[str, str, bytes], tmp_path: Path
) -> None:
    repo, digest, _ = pushed
    env = {"COSIGN_PASSWORD": "e2e", "HOME": str(tmp_path), "TUF_ROOT": str(tmp_path / "tuf")}
    cosign = services.cosign()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _run(cosign, "generate-key-pair", cwd=tmp_path / "a", env=env)
    _run(cosign, "generate-key-pair", cwd=tmp_path / "b", env=env)
    _run(
        cosign,
        "sign",
        "--yes",
        "--key",
        "a/cosign.key",
        "--tlog-upload=false",
        "--allow-http-registry",
        "--use-signing-config=false",
        f"{repo}@{digest}",
        cwd=tmp_path,
        env=env,
    )
    proc = subprocess.run(
        [
            str(cosign),
            "verify",
            "--key",
            "b/cosign.pub",
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            f"{repo}@{digest}",
        ],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0


@pytest.fixture
def metrics_target() -> Iterator[int]:
    """A tiny /metrics endpoint exposing e2e_answer 42; yields its port."""
    registry = CollectorRegistry()
    Gauge("e2e_answer", "a fixed value to scrape", registry=registry).set(42)
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler.factory(registry))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_prometheus_starts_scrapes_a_target_and_answers_a_query(
    start_prometheus: Callable[[dict[str, Any]], Prometheus], metrics_target: int
) -> None:
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "e2e",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_target}"]}],
                }
            ],
        }
    )
    assert prometheus.query("vector(7)")["result"][0]["value"][1] == "7"
    answer = wait_for(
        lambda: prometheus.query('e2e_answer{job="e2e"}')["result"],
        what="the scraped series",
        timeout=30,
    )
    assert answer[0]["value"][1] == "42"
