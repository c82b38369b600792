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


def test_the_command_line_does_not_load_kopf_or_the_kubernetes_client_until_asked() -> None:
    code = (
        "import sys; from logicbundle.cli import main; main(['version']);"
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"
