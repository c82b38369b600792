"""The example bundles pack and push with the commands the docs print, as written.

Every ``logicbundle pack`` and ``logicbundle push`` line in a fenced shell block
of the README, ``docs/`` and ``examples/`` is run through the CLI: a directory
the line names in the repository is packed as it is, a placeholder directory
(``./pricing``) stands for each example bundle, and the documented registry
host is swapped for a local one.  What comes out must be what the sample
application accepts: its interface hash, entrypoint and version.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from examples.sample_app.bundles import BUNDLE_NAME, ENTRYPOINT, EXAMPLES_DIR, INTERFACE, VERSIONS
from logicbundle.artifact import read_layout
from logicbundle.cli import main
from logicbundle.sdk import interface_hash
from tests.oci.mock_registry import MockRegistry

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DIRS = sorted(p for p in EXAMPLES_DIR.iterdir() if p.is_dir())
_FENCE = re.compile(r"^```(?:sh|shell|bash|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_DOCUMENTED_HOST = "registry.example.com"


def documented_commands(verb: str) -> list[str]:
    """Each ``logicbundle <verb> …`` line in a fenced shell block of the docs (comments cut)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pages += sorted((REPO / "examples").rglob("*.md"))
    found = []
    for page in pages:
        for block in _FENCE.findall(page.read_text()):
            for line in block.splitlines():
                if line.split()[:2] == ["logicbundle", verb]:
                    found.append(shlex.join(shlex.split(line, comments=True)))
    return found


def _sources(words: list[str]) -> Iterator[tuple[list[str], Path]]:
    """The command once per bundle it stands for: its own directory, else every example."""
    source = words[2]
    if (REPO / source).is_dir():
        yield [*words[:2], str(REPO / source), *words[3:]], REPO / source
        return
    for example in EXAMPLE_DIRS:
        yield [*words[:2], str(example), *words[3:]], example


def test_every_example_bundle_has_a_descriptor_matching_the_sample_application() -> None:
    assert [p.name for p in EXAMPLE_DIRS] == sorted(VERSIONS)
    for example in EXAMPLE_DIRS:
        descriptor = yaml.safe_load((example / "logicbundle.yaml").read_text())
        assert descriptor["name"] == BUNDLE_NAME, example.name
        assert descriptor["version"] == VERSIONS[example.name], example.name
        assert descriptor["entrypoint"] == ENTRYPOINT, example.name
        assert interface_hash(descriptor["interface"]) == interface_hash(INTERFACE), example.name


def test_the_docs_show_packing_an_example_bundle_and_a_bundle_of_ones_own() -> None:
    commands = documented_commands("pack")
    assert any("examples/bundles/" in c for c in commands), commands
    assert any("examples/bundles/" not in c for c in commands), commands


@pytest.mark.parametrize("command", documented_commands("pack"))
def test_a_documented_pack_command_packs_every_bundle_it_stands_for(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv, source in _sources(shlex.split(command)):
        for old in tmp_path.glob("*"):
            old.unlink()
        assert main(argv[1:]) == 0, f"{shlex.join(argv)} failed"
        (written,) = tmp_path.glob("*")
        manifest = read_layout(written).manifest
        assert manifest.interface_hash == interface_hash(INTERFACE), source.name
        assert (manifest.name, manifest.entrypoint) == (BUNDLE_NAME, ENTRYPOINT)
        assert manifest.version == VERSIONS[source.name]


@pytest.mark.parametrize(
    "command", [c for c in documented_commands("push") if c.split()[2].startswith(("./", "ex"))]
)
def test_a_documented_push_of_a_directory_pushes_every_bundle_it_stands_for(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with MockRegistry() as registry:
        for documented, source in _sources(shlex.split(command)):
            argv = [a.replace(_DOCUMENTED_HOST, registry.host) for a in documented]
            assert main([*argv[1:], "--insecure"]) == 0, f"{shlex.join(argv)} failed"
            assert registry.requests("PUT", "/manifests/"), source.name
