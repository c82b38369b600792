"""Bundles written straight to disk, laid out as the agent lays them out.

``write_bundle`` needs nothing but the SDK: it writes the files into
``<root>/<bundle>/.versions/<digest>/`` and the manifest next to it, with the
SDK's own interface hash, so these tests do not depend on the bundle package
(one test cross-checks against it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import LogicHost, interface_hash

BUNDLE = "calc"
IFACE: dict[str, Any] = {
    "functions": {
        "ident": {"params": [], "returns": "str"},
        "add": {"params": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}]},
    }
}

SIMPLE = """
NAME = {name!r}

class Logic:
    def ident(self):
        return NAME

    def add(self, a, b):
        return a + b

logic = Logic()
"""


@dataclass(frozen=True)
class Written:
    digest: str
    path: Path


WriteBundle = Callable[..., Written]


def write_bundle_at(
    root: Path,
    files: Mapping[str, str],
    *,
    bundle: str = BUNDLE,
    interface: Mapping[str, Any] | None = None,
    entrypoint: str = "logic:logic",
    version: str = "1.0.0",
) -> Written:
    """Lay out one version under ``root`` and return its digest and directory."""
    iface = dict(interface or IFACE)
    manifest = {
        "name": bundle,
        "version": version,
        "entrypoint": entrypoint,
        "interface": iface,
        "interfaceHash": interface_hash(iface),
    }
    hasher = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    digest = "sha256:" + hasher.hexdigest()
    versions = root / bundle / ".versions"
    path = versions / digest
    if not path.exists():
        for name, content in files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        (versions / f"{digest}.manifest.json").write_text(json.dumps(manifest))
    return Written(digest, path)


RELATIVE = {
    "logic.py": (
        "from . import table\n"
        "from .sub import deep\n"
        "class Logic:\n"
        "    def ident(self):\n"
        "        return table.NAME + '/' + deep.WHERE\n"
        "    def add(self, a, b):\n"
        "        return a + b\n"
        "logic = Logic()\n"
    ),
    "table.py": "NAME = {name!r}\n",
    "sub/__init__.py": "",
    "sub/deep.py": "WHERE = 'deep'\n",
}


def relative(name: str) -> dict[str, str]:
    """A bundle of relative imports (a subpackage too) whose ``ident()`` is ``name/deep``."""
    return {k: v.format(name=name) if k == "table.py" else v for k, v in RELATIVE.items()}


def simple(name: str) -> dict[str, str]:
    """A bundle whose ``ident()`` returns ``name``."""
    return {"logic.py": SIMPLE.format(name=name)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "volume"


@pytest.fixture
def write_bundle(root: Path) -> WriteBundle:
    def write(files: Mapping[str, str], **kwargs: Any) -> Written:
        return write_bundle_at(root, files, **kwargs)

    return write


@pytest.fixture
def host(root: Path) -> Iterator[LogicHost]:
    host = LogicHost(name=BUNDLE, interface=IFACE, root=root, drain_timeout=10)
    yield host
    host.close(timeout=10)
