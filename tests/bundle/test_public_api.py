"""The public surface of logicbundle.bundle is exactly its __all__, and it stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

from logicbundle import bundle
from logicbundle.bundle import BundleError, UnpackError
from logicbundle.errors import LogicBundleError

PACKAGE = Path(bundle.__file__).parent


def test_every_public_name_is_exported_and_importable() -> None:
    exceptions = [n for n in bundle.__all__ if n.endswith("Error")]
    assert all(issubclass(getattr(bundle, n), LogicBundleError) for n in exceptions)
    assert sorted(bundle.__all__) == sorted(set(bundle.__all__))
    for name in bundle.__all__:
        assert getattr(bundle, name) is not None, name


def test_everything_but_the_init_module_is_private() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py")}
    assert all(m.startswith("_") for m in modules), modules


def test_every_error_derives_from_the_project_root_and_has_its_own_reason() -> None:
    errors = [
        obj
        for obj in (getattr(bundle, n) for n in bundle.__all__)
        if isinstance(obj, type) and issubclass(obj, LogicBundleError)
    ]
    assert len(errors) > 30
    assert all(issubclass(e, BundleError) for e in errors)
    reasons = [e.reason for e in errors]
    assert len(reasons) == len(set(reasons)), "each rejection needs a distinct reason"
    assert all(not e.retryable for e in errors)
    assert issubclass(bundle.HashMismatchError, UnpackError)


def test_the_package_does_no_network_io() -> None:
    forbidden = {"socket", "http", "urllib", "requests", "aiohttp", "ssl", "subprocess"}
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{source.name} imports {name}"


def test_the_media_types_are_named_once_in_the_package() -> None:
    hits = [
        p.name
        for p in PACKAGE.glob("*.py")
        if "application/vnd.logicbundle.bundle.v1" in p.read_text()
    ]
    assert hits == ["_media.py"]
