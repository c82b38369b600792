"""The two Python distributions build as wheels and work in clean virtual environments.

* ``logicbundle-sdk`` (``operator/sdk-distribution``): what an application
  installs.  Installed with ``--no-index`` and nothing else beside it, so a
  dependency would fail the install; importing the SDK loads only the standard
  library and the SDK's own modules.
* ``logicbundle`` (the repository's ``pyproject.toml``): the CLI, the operator,
  the distributor and the agent, with the ``logicbundle`` command and the
  ``kubectl-logicbundle`` plugin, which the harness's kubectl finds on the PATH.

Both are built offline with ``pip wheel`` from the harness's wheelhouse (the
build backend is there; the runtime dependencies of the CLI wheel install from
it too).  The SDK files of both wheels are the same bytes, so the two
distributions cannot drift apart.  Build times are printed (docs/operations.md,
"Python distributions").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.harness import images, services
from e2e.harness.proc import HarnessError

REPO = Path(__file__).resolve().parents[2]
SDK_PROJECT = REPO / "operator" / "sdk-distribution"
SDK_FILES = (
    "logicbundle/__init__.py",
    "logicbundle/errors.py",
    "logicbundle/contract/",
    "logicbundle/sdk/",
)


@dataclass(frozen=True)
class Wheels:
    sdk: Path
    cli: Path
    wheelhouse: Path
    seconds: dict[str, float]


def _run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})},
    )
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _build(project: Path, out: Path, wheelhouse: Path) -> tuple[Path, float]:
    started = time.monotonic()
    _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
        "--find-links", wheelhouse, "--wheel-dir", out, project,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel, time.monotonic() - started


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Wheels:
    wheelhouse = images.wheelhouse()
    root = tmp_path_factory.mktemp("wheels")
    sdk, sdk_seconds = _build(SDK_PROJECT, root / "sdk", wheelhouse)
    cli, cli_seconds = _build(REPO, root / "cli", wheelhouse)
    seconds = {"logicbundle-sdk": sdk_seconds, "logicbundle": cli_seconds}
    print(f"wheel build seconds: {seconds}")
    return Wheels(sdk=sdk, cli=cli, wheelhouse=wheelhouse, seconds=seconds)


def _venv(path: Path) -> Path:
    """A clean virtual environment (no pip, no site packages); its python."""
    _run(sys.executable, "-m", "venv", "--without-pip", path)
    return path / "bin" / "python"


def _install(python: Path, *args: str | Path) -> None:
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-index", *args)


def _installed(python: Path) -> list[str]:
    out = _run(sys.executable, "-m", "pip", "--python", python, "list", "--format=freeze")
    return sorted(line.split("==")[0].lower() for line in out.split())


@pytest.fixture(scope="module")
def cli_env(wheels: Wheels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    python = _venv(tmp_path_factory.mktemp("cli") / "venv")
    _install(python, "--find-links", wheels.wheelhouse, wheels.cli)
    yield python.parent


def _members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if name.startswith(SDK_FILES) and name.endswith(".py")
        }


def test_the_sdk_wheel_installs_alone_and_imports_only_the_standard_library(
    wheels: Wheels, tmp_path: Path
) -> None:
    python = _venv(tmp_path / "venv")
    _install(python, wheels.sdk)  # --no-index and no find-links: any dependency fails here
    assert _installed(python) == ["logicbundle-sdk"]
    probe = (
        "import sys\n"
        "import logicbundle.sdk as sdk\n"
        "h = sdk.interface_hash({'functions': {'price': {'params': [{'name': 'item'}]}}})\n"
        "assert h.startswith('sha256:'), h\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded - set(sys.stdlib_module_names) - {'__main__'}))\n"
        "print(sdk.__file__)\n"
    )
    out = _run(python, "-I", "-c", probe, env={"PYTHONPATH": ""}).splitlines()
    assert out[0] == "['logicbundle']", out
    assert out[1].startswith(str(tmp_path / "venv")), out


def test_the_cli_wheel_gives_the_command_and_the_kubectl_plugin(cli_env: Path) -> None:
    helped = _run(cli_env / "logicbundle", "--help")
    for command in ("pack", "push", "status", "operator", "agent"):
        assert command in helped
    assert "promote" in _run(cli_env / "kubectl-logicbundle", "--help")
    path = f"{cli_env}:{os.environ.get('PATH', '')}"
    plugins = _run(services.kubectl(), "plugin", "list", env={"PATH": path})
    assert str(cli_env / "kubectl-logicbundle") in plugins
    assert "promote" in _run(services.kubectl(), "logicbundle", "--help", env={"PATH": path})
    # kubectl logicbundle <Tab>: kubectl's own completion asks kubectl_complete-logicbundle.
    assert (cli_env / "kubectl_complete-logicbundle").is_file()
    offered = _run(
        services.kubectl(), "__complete", "logicbundle", "-n", "shop", "st", env={"PATH": path}
    )
    assert offered.splitlines()[:2] == ["status", ":4"], offered
    offered = _run(
        services.kubectl(), "__complete", "logicbundle", "status", "x", "-o", "", env={"PATH": path}
    )
    assert offered.splitlines()[:4] == ["text", "json", "yaml", ":4"], offered


def test_the_sdk_files_are_the_same_bytes_in_both_wheels(wheels: Wheels) -> None:
    sdk, cli = _members(wheels.sdk), _members(wheels.cli)
    assert any(name.startswith("logicbundle/sdk/") for name in sdk)
    assert sdk == cli


def test_both_wheels_build_in_seconds(wheels: Wheels) -> None:
    # Measured about 2 s each on the 2-core CI machine; a regression here costs every CI run.
    assert max(wheels.seconds.values()) < 120, wheels.seconds


def test_the_documented_build_command_builds_these_two_projects() -> None:
    """docs/operations.md builds with `pip wheel`; the projects it names are the ones built here."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Python distributions", 1)[1].split("\n## ", 1)[0]
    (command,) = [line for line in section.splitlines() if line.startswith("pip wheel ")]
    words = command.split("#")[0].split()
    projects = [w for w in words[2:] if not w.startswith("-") and w != "dist"]
    assert sorted(REPO / p for p in projects) == sorted([SDK_PROJECT, REPO])
    assert "kubectl-logicbundle" in section and "logicbundle_sdk-" in section
