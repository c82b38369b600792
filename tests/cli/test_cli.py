"""The `logicbundle` command: sub-commands, usage errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from logicbundle import __version__
from logicbundle.cli import main


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_an_unknown_sub_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_standalone_and_peering_cannot_both_be_asked_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["operator", "--standalone", "--peering", "p"])
    assert exc.value.code == 2


def test_a_pod_name_without_its_namespace_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert main(["operator", "--pod-name", "operator-0"]) == 2
    assert "--pod-namespace" in capsys.readouterr().err


def test_the_operators_pod_defaults_to_the_downward_api_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from logicbundle.cli import build_parser

    monkeypatch.setenv("POD_NAME", "operator-0")
    monkeypatch.setenv("POD_NAMESPACE", "logicbundle-system")
    args = build_parser().parse_args(["operator"])
    assert (args.pod_name, args.pod_namespace) == ("operator-0", "logicbundle-system")
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("POD_NAMESPACE")
    args = build_parser().parse_args(["operator"])
    assert (args.pod_name, args.pod_namespace) == (None, None)


def test_the_command_line_does_not_load_kopf_or_the_kubernetes_client_until_asked() -> None:
    code = (
        "import sys; from logicbundle.cli import main; main(['version']);"
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--agent-env", "NOVALUE"], "--agent-env wants NAME=VALUE"),
        (["--agent-env", "=x"], "--agent-env wants NAME=VALUE"),
        (["--agent-resources", "not json"], "--agent-resources wants a JSON object"),
        (["--agent-resources", '{"limits": {"memory": 64}}'], "--agent-resources wants"),
        (["--agent-resources", '{"limit": {}}'], "--agent-resources wants"),
    ],
)
def test_a_malformed_agent_setting_is_a_usage_error(
    flag: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["operator", "--webhook-port", "9443", "--agent-image", "img:1", *flag]
    assert main(args) == 2
    assert message in capsys.readouterr().err
