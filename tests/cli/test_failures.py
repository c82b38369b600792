"""An expected failure is one `error:` line (and a `Hint:`), a documented exit code, no traceback.

The API server is a closed port on 127.0.0.1 or an absent kubeconfig, the
registry the in-process mock or a closed port: what a user meets on a bad day.
No message may carry any part of a credential, with or without ``-v``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import logicbundle
from logicbundle.cli import _plugin, main
from logicbundle.cli._errors import redact
from tests.oci.mock_registry import MockRegistry

TOKEN = "sekrit-token-4f9a2c"
BUNDLE = {
    "name": "pricing",
    "version": "1.0.0",
    "interface": {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}},
}


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No kubeconfig anywhere and not in a pod."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return tmp_path


@pytest.fixture
def cluster_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A kubeconfig whose API server is a closed port; returns the port."""
    port = closed_port()
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("KUBECONFIG", str(config))
    return port


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("entry", [main, _plugin.main], ids=["logicbundle", "kubectl plugin"])
@pytest.mark.parametrize(
    "argv",
    [["status", "rules"], ["history", "rules"], ["promote", "rules"], ["status", "rules", "-w"]],
    ids=["status", "history", "promote", "status --watch"],
)
def test_the_api_server_down_is_one_line_and_exit_1(
    entry: object, argv: list[str], cluster_down: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(entry)
    assert entry(argv) == 1
    err = capsys.readouterr().err
    assert _lines(err) == [
        f"error: cannot reach the API server at https://127.0.0.1:{cluster_down}: "
        "connection refused",
        "Hint: Is the cluster up and is this the right one? Check --kubeconfig, --context "
        "and `kubectl cluster-info`.",
    ]


def test_v_after_the_sub_command_adds_the_traceback_and_never_the_token(
    cluster_down: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "rules", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-2].startswith("error: cannot reach the API server")
    assert TOKEN not in err
    assert _plugin.main(["status", "rules", "-v"]) == 1
    assert TOKEN not in capsys.readouterr().err


@pytest.mark.parametrize("entry", [main, _plugin.main], ids=["logicbundle", "kubectl plugin"])
def test_no_kubeconfig_is_one_line_and_v_is_taken_after_the_name(
    entry: object, no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert callable(entry)
    assert entry(["status", "rules"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _lines(err)[0].startswith("error: cannot use the kubeconfig")
    assert entry(["status", "rules", "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_says_run_with_v_and_shows_no_credential(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from logicbundle.cli import _bundles

    def broken(_: object) -> int:
        raise RuntimeError(
            "boom at https://robot:hunter2@registry.example.com/v2/?token=abc123 "
            "with Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
        )

    monkeypatch.setattr(_bundles, "cmd_inspect", broken)
    assert main(["inspect", "registry.example.com/a:b"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert _lines(err) == [
        "error: unexpected RuntimeError: boom at https://***@registry.example.com/v2/?*** "
        "with Bearer ***",
        "Hint: Run again with -v for the traceback, and report it.",
    ]
    assert main(["inspect", "registry.example.com/a:b", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "hunter2" not in err.splitlines()[-1]


def test_redaction_leaves_ordinary_sentences_alone() -> None:
    text = "is the operator running? check spec.source.ref: a tag is missing"
    assert redact(text) == text


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "rules.py").write_text("def price(item):\n    return 1.0\n")
    (src / "logicbundle.yaml").write_text(yaml.safe_dump(BUNDLE))
    return src


def test_a_registry_that_is_down_gets_a_hint_in_flags_not_in_crd_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["inspect", f"127.0.0.1:{closed_port()}/shop/pricing:1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--insecure" in err and "retried later" not in err


def test_plain_http_without_insecure_says_the_flag(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with MockRegistry() as registry:
        assert main(["push", str(bundle_dir), f"{registry.host}/shop/pricing:1"]) == 1
    err = capsys.readouterr().err
    assert "--insecure" in err
    assert "insecure: true" not in err


def test_a_signature_by_another_key_points_at_the_key_flag(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    signer, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "signer.key").write_bytes(
        signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "other.pub").write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with MockRegistry() as registry:
        ref = f"{registry.host}/shop/pricing:1"
        assert main(["push", str(bundle_dir), ref, "--insecure"]) == 0
        assert main(["sign", ref, "--key", str(tmp_path / "signer.key"), "--insecure"]) == 0
        capsys.readouterr()
        assert main(["verify", ref, "--key", str(tmp_path / "other.pub"), "--insecure"]) == 3
    out = capsys.readouterr().out
    assert "spec.verify" not in out
    assert "--key" in out


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["push", "{tmp}/absent", "registry.example.com/a:1"], 1, "no such file or directory"),
        (["pack", "{tmp}/absent", "--output-file", "{tmp}/o.tar"], 1, "is not a directory"),
        (["inspect", "registry.example.com/a:1", "--ca-file", "{tmp}/absent.pem"], 2, "--ca-file"),
        (["verify", "registry.example.com/a:1", "--key", "{tmp}/absent.pub"], 1, "absent.pub"),
        (["sign", "registry.example.com/a@sha256:" + "1" * 64, "--legacy"], 2, "--legacy"),
        (["verify", "registry.example.com/a:1", "--issuer", "https://x.example"], 2, "--issuer"),
        (["pack", "{tmp}"], 2, "pack needs --output-file FILE"),
    ],
    ids=[
        "push a missing dir",
        "pack a missing dir",
        "missing CA",
        "missing key",
        "legacy",
        "issuer",
        "pack without a file",
    ],
)
def test_a_missing_file_or_a_wrong_flag_is_one_line_with_its_exit_code(
    argv: list[str], code: int, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ") and said in err.splitlines()[0]


# --- the operator, with no cluster to talk to -------------------------------------------------


def _operator(env_kubeconfig: str, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": env_kubeconfig}
    env["PYTHONPATH"] = str(Path(logicbundle.__file__).parents[1])  # the code under test
    return subprocess.run(
        [sys.executable, "-m", "logicbundle.cli", "operator", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,  # before: it never exits (a traceback a minute)
        check=False,
    )


def test_the_operator_without_a_kubeconfig_exits_1_at_once(tmp_path: Path) -> None:
    done = _operator(str(tmp_path / "absent"), tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "error: no cluster to talk to" in done.stderr


def test_the_operator_gives_up_on_an_unreachable_api_server_after_its_startup_timeout(
    tmp_path: Path,
) -> None:
    port = closed_port()
    config = kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}")
    started = time.monotonic()
    done = _operator(str(config), tmp_path, "--startup-timeout", "2s")
    assert done.returncode == 1
    assert time.monotonic() - started < 60
    assert "Traceback" not in done.stderr
    assert (
        f"error: cannot reach the API server at https://127.0.0.1:{port}: connection refused"
        in (done.stderr)
    )
    assert TOKEN not in done.stderr


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"major": "1", "minor": "35"}' if self.status == 200 else b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "said"),
    [(401, "refused the credentials (401)"), (503, "HTTP 503 (")],
    ids=["401 is final", "503 is retried until the deadline"],
)
def test_the_operators_start_check_stops_on_401_and_retries_a_5xx_until_its_deadline(
    status: int, said: str
) -> None:
    from kubernetes import client

    from logicbundle.controller import ApiServerUnreachableError
    from logicbundle.controller._run import wait_for_api_server

    handler: type[_Answer] = type("Handler", (_Answer,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    try:
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_port}"
        api = client.ApiClient(configuration)
        with pytest.raises(ApiServerUnreachableError, match=re.escape(said)):
            wait_for_api_server(10.0, api_client=api, clock=lambda: now[0], sleep=sleep)
        if status == 401:
            assert sleeps == []
        else:
            assert sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]  # doubling, cut at the deadline
        handler.status = 200
        wait_for_api_server(10.0, api_client=api, clock=lambda: now[0], sleep=sleep)
    finally:
        server.shutdown()
        server.server_close()


def test_status_and_version_print_yaml_and_json_for_scripts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from logicbundle.cli import _actions

    class One:
        namespace = "shop"

        def get(self, name: str) -> dict[str, object]:
            return {"metadata": {"name": name, "namespace": "shop", "generation": 2}, "status": {}}

    assert _actions.show_status(One(), "rules", output="yaml") == 0  # type: ignore[arg-type]
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["name"], shown["namespace"], shown["generation"]) == ("rules", "shop", 2)
    assert main(["version", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": logicbundle.__version__}


def test_the_distributor_without_a_kubeconfig_says_so_in_one_line(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["distributor", "--cache-dir", str(no_cluster / "cache"), "--insecure-http"]
    assert main([*argv, "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: no cluster to talk to: ")
