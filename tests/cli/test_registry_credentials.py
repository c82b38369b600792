"""push, sign, verify and inspect log in with the user's docker config, as docker and oras do.

The registry is the in-process mock demanding basic auth; the credential
helper is a shell script on ``PATH`` speaking the docker-credential-helpers
protocol (``get``, the server on stdin, ``{"Username", "Secret"}`` out).
The password must never appear in anything printed or logged, even with ``-v``.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from logicbundle.cli import main
from logicbundle.cli._credentials import config_file, registry_auth
from tests.oci.mock_registry import MockRegistry

USER = "robot"
PASSWORD = "s3cr3t-passw0rd"  # the mock registry's
BUNDLE = {
    "name": "pricing",
    "version": "1.0.0",
    "interface": {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}},
}
HELPER = """#!/bin/sh
read -r server
echo "$1 $server" >> "{log}"
case "$server" in
  {host}) printf '{{"ServerURL": "%s", "Username": "{user}", "Secret": "{secret}"}}' "$server" ;;
  broken) echo "internal failure near {secret}"; exit 3 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def registry() -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        running.state.auth = "basic"
        yield running


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of our own with no docker config, and no config named by the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "LOGICBUNDLE_REGISTRY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "rules.py").write_text("def price(item):\n    return 1.0\n")
    (src / "logicbundle.yaml").write_text(yaml.safe_dump(BUNDLE))
    return src


def install_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, name: str, host: str
) -> Path:
    """``docker-credential-<name>`` on PATH; returns the log of its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(HELPER.format(log=log, host=host, user=USER, secret=PASSWORD))
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def write_config(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


def inline(host: str) -> dict[str, object]:
    return {"auths": {host: {"username": USER, "password": PASSWORD}}}


def push(bundle_dir: Path, registry: MockRegistry, *extra: str) -> int:
    return main(["push", str(bundle_dir), f"{registry.host}/shop/pricing:1", "--insecure", *extra])


def test_without_any_config_the_push_is_anonymous_and_the_hint_says_docker_login(
    user_env: Path, bundle_dir: Path, registry: MockRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert push(bundle_dir, registry) == 1
    err = capsys.readouterr().err
    assert "docker login" in err
    assert "pull secret" not in err


@pytest.mark.parametrize("where", ["home", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"])
def test_the_auths_of_the_users_docker_config_are_used(
    where: str,
    user_env: Path,
    tmp_path: Path,
    bundle_dir: Path,
    registry: MockRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if where == "home":
        write_config(user_env / ".docker" / "config.json", inline(registry.host))
    elif where == "DOCKER_CONFIG":
        write_config(tmp_path / "dc" / "config.json", inline(registry.host))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    else:
        auth = write_config(
            tmp_path / "containers" / "auth.json", inline(f"http://{registry.host}")
        )
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert push(bundle_dir, registry) == 0


def test_registry_config_wins_over_the_environment_and_a_missing_one_is_an_error(
    user_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = write_config(tmp_path / "named.json", {})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert config_file(explicit=str(named)) == named
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "absent.json"))
    assert config_file() == tmp_path / "absent.json"
    with pytest.raises(Exception, match="cannot read registry credentials"):
        registry_auth("registry.example.com")


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_a_credential_helper_is_run_for_the_registry_host(
    key: str,
    user_env: Path,
    tmp_path: Path,
    bundle_dir: Path,
    registry: MockRegistry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = install_helper(tmp_path, monkeypatch, name="lbtest", host=registry.host)
    document: dict[str, object] = (
        {"credHelpers": {registry.host: "lbtest"}}
        if key == "credHelpers"
        else {"credsStore": "lbtest"}
    )
    document["auths"] = {"other.example.com": {}}
    write_config(user_env / ".docker" / "config.json", document)
    caplog.set_level(logging.DEBUG)
    assert push(bundle_dir, registry, "-v") == 0
    assert log.read_text().splitlines() == [f"get {registry.host}"]
    printed = capsys.readouterr()
    assert PASSWORD not in printed.out + printed.err + caplog.text


def test_a_helper_without_credentials_for_the_host_falls_back_to_the_auths_entry(
    user_env: Path,
    tmp_path: Path,
    bundle_dir: Path,
    registry: MockRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_helper(tmp_path, monkeypatch, name="lbtest", host="elsewhere.example.com")
    write_config(
        user_env / ".docker" / "config.json", {**inline(registry.host), "credsStore": "lbtest"}
    )
    assert push(bundle_dir, registry) == 0


def test_a_helper_for_another_host_is_not_asked(
    user_env: Path,
    tmp_path: Path,
    bundle_dir: Path,
    registry: MockRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = install_helper(tmp_path, monkeypatch, name="lbtest", host=registry.host)
    document = {**inline(registry.host), "credHelpers": {"ghcr.io": "lbtest"}}
    write_config(user_env / ".docker" / "config.json", document)
    assert push(bundle_dir, registry) == 0
    assert not log.exists()


@pytest.mark.parametrize(
    ("helper", "host", "said"),
    [
        ("absent", "registry.example.com", "docker-credential-absent (named in"),
        ("lbtest", "broken", "docker-credential-lbtest failed for broken (exit 3)"),
        ("../../bin/sh", "registry.example.com", "is not a credential helper name"),
    ],
    ids=["not on PATH", "fails", "a path, not a name"],
)
def test_a_helper_that_cannot_answer_is_one_line_and_repeats_nothing_it_printed(
    helper: str,
    host: str,
    said: str,
    user_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_helper(tmp_path, monkeypatch, name="lbtest", host="registry.example.com")
    write_config(user_env / ".docker" / "config.json", {"credHelpers": {host: helper}})
    with pytest.raises(Exception, match="credential helper") as exc:
        registry_auth(host)
    assert said in str(exc.value)
    assert PASSWORD not in str(exc.value)


def test_a_helper_failure_through_the_command_is_one_line_without_traceback(
    user_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_helper(tmp_path, monkeypatch, name="lbtest", host="registry.example.com")
    write_config(user_env / ".docker" / "config.json", {"credsStore": "absent"})
    assert main(["inspect", "registry.example.com/shop/pricing:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the credential helper docker-credential-absent")
    assert "Traceback" not in err


def test_docker_hub_is_asked_for_as_docker_asks_for_it(
    user_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = install_helper(tmp_path, monkeypatch, name="lbtest", host="https://index.docker.io/v1/")
    write_config(user_env / ".docker" / "config.json", {"credsStore": "lbtest"})
    auth = registry_auth("docker.io")
    assert log.read_text().splitlines() == ["get https://index.docker.io/v1/"]
    credentials = auth.credentials_for("docker.io")
    assert credentials is not None and credentials.username == USER
    assert PASSWORD not in repr(auth)
