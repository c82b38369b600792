"""The package boundaries the import-linter contracts (pyproject.toml) do not express.

import-linter checks which package may import which; these check that every
package is placed in the layers, and that no package reaches into another's
private modules (``logicbundle.<package>._<module>``): a package's ``__init__``
is its interface.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import pytest

import logicbundle

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(logicbundle.__file__).parent


def _packages() -> set[str]:
    return {
        f"logicbundle.{p.name}"
        for p in PACKAGE_DIR.iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    } | {f"logicbundle.{p.stem}" for p in PACKAGE_DIR.glob("[!_]*.py")}


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def private_imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a package imports another's private module."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            parts = imported.split(".")
            if len(parts) < 3 or parts[0] != "logicbundle":
                continue
            if _package_of(importer) == _package_of(imported):
                continue
            if any(part.startswith("_") for part in parts[2:]):
                found.append((importer, imported))
    return found


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("logicbundle")


def test_no_package_imports_another_packages_private_module(graph: grimp.ImportGraph) -> None:
    assert private_imports(graph) == []


def test_a_private_import_across_packages_is_found() -> None:
    """The check above can fail: one such import, added to a graph, is reported."""
    graph = grimp.build_graph("logicbundle")
    graph.add_import(
        importer="logicbundle.controller._handlers",
        imported="logicbundle.distributor._reports",
    )
    assert private_imports(graph) == [
        ("logicbundle.controller._handlers", "logicbundle.distributor._reports")
    ]


def test_every_package_is_in_the_layers_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (layers,) = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    # The root module holds the version only; errors.py is the bottom layer.
    assert _packages() - placed == set()
