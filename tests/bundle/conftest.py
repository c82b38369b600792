"""Fixtures shared by the bundle tests: source directories and an empty landing place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

SAMPLE_INTERFACE = {
    "functions": {
        "decide": {
            "params": [{"name": "request", "type": "dict[str, str]"}],
            "returns": "bool",
        }
    }
}

SAMPLE_FILES: dict[str, bytes] = {
    "rules/__init__.py": b"from .core import decide\n",
    "rules/core.py": (
        b"import json\n\n\ndef decide(request):\n    return bool(json.dumps(request))\n"
    ),
    "tables/limits.json": b'{"max": 10}\n',
    "bin/refresh.sh": b"#!/bin/sh\necho refresh\n",
}

WriteTree = Callable[..., Path]


def write_tree(root: Path, files: Mapping[str, bytes], *, executables: frozenset[str]) -> Path:
    """Write ``files`` (path -> content) under ``root``; ``executables`` get mode 0755."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o755 if rel in executables else 0o644)
    return root


@pytest.fixture
def make_tree(tmp_path: Path) -> WriteTree:
    """A factory for source directories under the test's temporary directory."""
    counter = iter(range(1_000_000))

    def make(
        files: Mapping[str, bytes] | None = None,
        *,
        executables: frozenset[str] = frozenset({"bin/refresh.sh"}),
        name: str | None = None,
    ) -> Path:
        root = tmp_path / (name or f"src{next(counter)}")
        return write_tree(root, SAMPLE_FILES if files is None else files, executables=executables)

    return make


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """An empty directory that unpack destinations are created in (and must stay empty on error)."""
    path = tmp_path / "landing"
    path.mkdir()
    return path
