"""Every `logicbundle` and `kubectl logicbundle` line the docs show parses with today's parser.

A renamed flag (``pack -o FILE`` became ``--output-file``) or a removed
sub-command leaves docs that no longer work; this reads each fenced shell
block of the README, ``docs/`` and ``examples/`` and hands each command line
to the real parser.  What the commands do is tested elsewhere (the pack and
push lines are run by ``tests/cli/test_example_bundles.py``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from logicbundle.cli import _plugin, build_parser

REPO = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(?:sh|shell|bash|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PROGRAMS = {"logicbundle": build_parser, "kubectl-logicbundle": _plugin.build_parser}
_DIGEST = "sha256:" + "0" * 64


def _command(line: str) -> tuple[str, list[str]] | None:
    """(program, arguments) when ``line`` runs one of ours, else None."""
    try:
        words = shlex.split(line.replace("sha256:...", _DIGEST), comments=True)
    except ValueError:
        return None
    while words and (words[0].startswith("$") or "=" in words[0]):
        words.pop(0)  # `$NS`, `KUBECONFIG=...`
    if words[:2] == ["kubectl", "logicbundle"]:
        return "kubectl-logicbundle", words[2:]
    if words and Path(words[0]).name in _PROGRAMS:
        return Path(words[0]).name, words[1:]
    return None


def documented() -> list[tuple[str, str]]:
    """(page, command line) for each documented command of ours (continuations joined)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pages += sorted((REPO / "examples").rglob("*.md"))
    found = []
    for page in pages:
        for block in _FENCE.findall(page.read_text()):
            for raw in block.replace("\\\n", " ").splitlines():
                line = raw.removeprefix("$ ").strip()
                if _command(line) is not None:
                    found.append((str(page.relative_to(REPO)), line))
    return found


def test_the_docs_show_commands_of_ours() -> None:
    assert len(documented()) > 10


@pytest.mark.parametrize(("page", "line"), documented())
def test_a_documented_command_line_parses(page: str, line: str) -> None:
    command = _command(line)
    assert command is not None
    program, argv = command
    try:
        _PROGRAMS[program]().parse_args(argv)
    except SystemExit as exc:
        if exc.code:  # --help and --version exit 0
            pytest.fail(f"{page}: `{line}` does not parse")
