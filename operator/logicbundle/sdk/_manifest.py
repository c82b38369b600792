"""What the SDK reads of a bundle manifest, and where it finds it on disk.

The agent unpacks a version into ``<root>/<bundle>/.versions/<digest>/``,
which holds exactly the bundle's files, and writes the manifest (the config
blob of the artifact, JSON) next to it as ``<digest>.manifest.json``.  The
activation request may also name the manifest file explicitly.

Only the fields the SDK needs are read; the full schema is checked by the
agent with :mod:`logicbundle.bundle`, which needs pydantic and so cannot be
imported here.

A manifest read and checked once is remembered while its file stays the same
(device, inode, size and modification time, one ``stat``): activating a digest
again (a rollback) then does no file I/O, JSON or hashing while request threads
wait for the GIL (``docs/benchmarks.md``, "Swaps without a stall").  A file
that is gone or rewritten is read again, with the same errors as the first time.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from logicbundle.contract import MANIFEST_SUFFIX
from logicbundle.sdk._errors import ManifestError
from logicbundle.sdk._interface import interface_hash

_ENTRYPOINT: Final = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r":([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)$"
)
_MAX_MANIFEST_BYTES: Final = 4 << 20
CACHE_SIZE: Final = 16
"""Manifests remembered (most recently used), as many as the bytecode cache keeps trees."""


@dataclass(frozen=True)
class ManifestInfo:
    """The parts of a bundle manifest the SDK acts on."""

    name: str
    version: str
    module: str
    """The entrypoint's module, relative to the bundle root (``pricing`` or ``pkg.sub``)."""
    attribute: str
    """The entrypoint's object inside ``module`` (may be dotted)."""
    interface: dict[str, Any]
    interface_hash: str


def manifest_path_for(version_dir: Path) -> Path:
    """``.versions/<digest>.manifest.json`` for ``.versions/<digest>``."""
    return version_dir.with_name(version_dir.name + MANIFEST_SUFFIX)


_FileKey = tuple[str, int, int, int, int]
_remembered: OrderedDict[_FileKey, ManifestInfo] = OrderedDict()
_remembered_lock = threading.Lock()


def read_manifest_once(path: Path) -> ManifestInfo:
    """:func:`read_manifest`, remembered while the file at ``path`` stays the same."""
    try:
        st = path.stat()
    except OSError:
        return read_manifest(path)  # raises the error a first read would
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _remembered_lock:
        info = _remembered.get(key)
        if info is not None:
            _remembered.move_to_end(key)
            return info
    info = read_manifest(path)
    with _remembered_lock:
        _remembered[key] = info
        while len(_remembered) > CACHE_SIZE:
            _remembered.popitem(last=False)
    return info


def read_manifest(path: Path) -> ManifestInfo:
    """Read and check the manifest at ``path``; raise :class:`ManifestError` when unusable."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(
            f"cannot read the bundle manifest {str(path)!r}: {exc.strerror or exc}",
            hint=f"The agent writes it next to the version directory as <digest>{MANIFEST_SUFFIX}.",
        ) from None
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise ManifestError(f"the bundle manifest {str(path)!r} is larger than 4 MiB")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"the bundle manifest {str(path)!r} is not JSON: {exc}") from None
    return parse_manifest(data, source=str(path))


def parse_manifest(data: Any, *, source: str = "manifest") -> ManifestInfo:
    """Check the fields the SDK needs in a decoded manifest."""
    if not isinstance(data, dict):
        raise ManifestError(f"the bundle manifest {source!r} is not a JSON object")
    entrypoint = data.get("entrypoint")
    if entrypoint is None:
        raise ManifestError(
            f"the bundle in {source!r} has no entrypoint: it is a data bundle, not Python code",
            hint="Read data bundles from the `current` directory; the SDK hosts Python bundles.",
        )
    match = _ENTRYPOINT.match(entrypoint) if isinstance(entrypoint, str) else None
    if match is None:
        raise ManifestError(f"entrypoint {entrypoint!r} in {source!r} is not `module:object`")
    interface = data.get("interface")
    declared = data.get("interfaceHash")
    if not isinstance(interface, dict) or not isinstance(declared, str):
        raise ManifestError(f"the bundle manifest {source!r} lacks `interface`/`interfaceHash`")
    try:
        actual = interface_hash(interface)
    except ValueError as exc:
        raise ManifestError(f"the interface in {source!r} is invalid: {exc}") from None
    if actual != declared:
        raise ManifestError(
            f"the manifest {source!r} says interfaceHash {declared} but its interface "
            f"hashes to {actual}",
            hint="The manifest was altered after packing; repack the bundle.",
        )
    return ManifestInfo(
        name=str(data.get("name", "")),
        version=str(data.get("version", "")),
        module=match.group(1),
        attribute=match.group(2),
        interface=interface,
        interface_hash=declared,
    )
