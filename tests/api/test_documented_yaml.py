"""Every YAML document in docs/ and examples/ is an object, chart values, a bundle descriptor
or a named fragment; descriptors are what ``logicbundle pack`` accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from logicbundle.artifact import read_layout
from logicbundle.cli import main
from tests.api.documented_yaml import FRAGMENTS, Document, documents, objects
from tests.cli.test_example_bundles import documented_commands


def test_the_docs_show_objects_of_the_product_and_of_the_gitops_tools() -> None:
    kinds = {(d.group, d.body["kind"]) for d in objects()}
    assert ("logicbundle.io", "LogicBundle") in kinds
    assert any(group.endswith("fluxcd.io") for group, _ in kinds)


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.where)
def test_every_yaml_document_is_an_object_a_descriptor_or_a_named_fragment(doc: Document) -> None:
    if doc.is_object or doc.is_descriptor or doc.is_values:
        return
    first = next(iter(doc.body)) if isinstance(doc.body, dict) else None
    assert (doc.page, first) in FRAGMENTS, f"{doc.where}: what checks this YAML?"


@pytest.mark.parametrize("doc", [d for d in documents() if d.is_descriptor], ids=lambda d: d.where)
def test_every_documented_descriptor_is_packed_by_the_documented_command(
    doc: Document, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "bundle"
    source.mkdir()
    (source / "logicbundle.yaml").write_text(yaml.safe_dump(doc.body))
    module = str(doc.body.get("entrypoint", "rules:x")).split(":")[0]
    (source / f"{module.replace('.', '/')}.py").write_text("VALUE = 1\n")
    (command, *_) = [c for c in documented_commands("pack") if "examples/" not in c]
    words = shlex.split(command)
    monkeypatch.chdir(tmp_path)
    assert main([words[1], str(source), *words[3:]]) == 0
    (written,) = [p for p in tmp_path.iterdir() if p.is_file()]
    manifest = read_layout(written).manifest
    assert (manifest.name, manifest.version) == (doc.body["name"], str(doc.body["version"]))
