"""Deterministic packing of a directory into a bundle layer and its manifest.

Same directory, same bytes, same digest: on any machine, at any time, as any
user.  That is what lets a CI job and a developer's laptop agree on a digest
and what keeps re-pushes of unchanged content from starting a rollout.  So the
tar is written with sorted entries, mtime 0, uid/gid 0, empty owner names and
normalised modes (0644, or 0755 when any execute bit is set), in PAX format,
and compressed with gzip mtime 0, no file name and a fixed level.  (Byte
equality holds for one zlib implementation; a different zlib, such as zlib-ng,
may compress differently, so a digest is reproduced with the same Python
build.)

Only regular files go into the layer, without directory entries: directories
are implied by the file paths and always unpack as 0755, so empty directories
are not carried.  Symbolic links are refused (:class:`LinkInSourceError`)
instead of being followed or stored, because the unpacker accepts no links at
all; a link would make the bundle's content depend on what lies outside it.
Devices, FIFOs and sockets are refused too.  ``__pycache__`` directories and
``*.pyc``/``*.pyo`` files are skipped (they are build products of the machine
that packs), and so are hidden entries (names starting with ``.``, such as
``.git`` or a stray ``.env``) unless ``include_hidden=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from pydantic import ValidationError

from logicbundle.bundle import _paths
from logicbundle.bundle._annotations import annotation_problem
from logicbundle.bundle._errors import (
    InvalidManifestError,
    LinkInSourceError,
    PackError,
    UnsupportedSourceFileError,
)
from logicbundle.bundle._manifest import (
    FILE_MODE_EXECUTABLE,
    FILE_MODE_REGULAR,
    BundleManifest,
    FileEntry,
    Interface,
    interface_hash,
    parse_manifest,
)

GZIP_LEVEL: Final = 6
"""Compression level of the layer; part of the format, since it changes the bytes."""

_CHUNK: Final = 1 << 20
_SKIPPED_DIRS: Final = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES: Final = (".pyc", ".pyo")


def sha256_digest(data: bytes) -> str:
    """The OCI digest (``sha256:<hex>``) of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_digest(layer: bytes | IO[bytes]) -> str:
    """The OCI digest of a layer given as bytes or as a binary stream (read to its end)."""
    if isinstance(layer, bytes):
        return sha256_digest(layer)
    hasher = hashlib.sha256()
    while chunk := layer.read(_CHUNK):
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


@dataclass(frozen=True)
class PackResult:
    """What :func:`pack_directory_to` wrote: the manifest and the layer's digest and size."""

    manifest: BundleManifest
    layer_digest: str
    layer_size: int

    @property
    def config(self) -> bytes:
        """The config blob: the manifest's canonical JSON."""
        return self.manifest.to_json()

    @property
    def config_digest(self) -> str:
        """The OCI digest of the config blob."""
        return sha256_digest(self.config)


@dataclass(frozen=True)
class PackedBundle(PackResult):
    """A packed bundle held in memory: :class:`PackResult` plus the layer bytes."""

    layer: bytes


@dataclass(frozen=True)
class _SourceFile:
    path: str
    absolute: Path


class _DigestWriter:
    """Counts and hashes what passes through on its way to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


class _HashingReader:
    """Reads exactly what tarfile asks for from a file, hashing it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.hasher = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.hasher.update(data)
        self.size += len(data)
        return data


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def collect_source_files(source: Path, *, include_hidden: bool = False) -> list[str]:
    """The canonical paths that :func:`pack_directory` would pack from ``source``, sorted."""
    return [f.path for f in _collect(source, include_hidden=include_hidden)]


def _collect(source: Path, *, include_hidden: bool) -> list[_SourceFile]:
    if not source.is_dir():
        raise PackError(
            f"cannot pack {str(source)!r}: it is not a directory",
            hint="Give the directory that holds the bundle's files.",
        )
    found: list[_SourceFile] = []

    def walk(directory: Path, prefix: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not include_hidden and _is_hidden(entry.name):
                    continue
                rel = f"{prefix}{entry.name}"
                if entry.is_symlink():
                    raise LinkInSourceError(
                        f"cannot pack {rel!r}: it is a symbolic link, and bundles carry no links",
                        hint="Replace the link with a copy of its target, or move it out of "
                        "the bundle directory.",
                    )
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in _SKIPPED_DIRS:
                        walk(Path(entry.path), f"{rel}/")
                    continue
                if not entry.is_file(follow_symlinks=False):
                    raise UnsupportedSourceFileError(
                        f"cannot pack {rel!r}: it is not a regular file (device, FIFO or socket)",
                        hint="Bundles carry regular files only; remove it from the directory.",
                    )
                if entry.name.endswith(_SKIPPED_SUFFIXES):
                    continue
                try:
                    _paths.check_canonical(rel)
                except _paths.PathRuleError as exc:
                    raise PackError(
                        f"cannot pack {rel!r}: {exc}",
                        hint="Rename the file: bundle paths may not contain backslashes or "
                        "control characters.",
                    ) from None
                found.append(_SourceFile(path=rel, absolute=Path(entry.path)))

    walk(source, "")
    found.sort(key=lambda f: f.path)
    return found


def _tarinfo(path: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _write_layer(files: list[_SourceFile], out: IO[bytes]) -> tuple[list[FileEntry], str, int]:
    sink = _DigestWriter(out)
    entries: list[FileEntry] = []
    with (
        gzip.GzipFile(
            filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar,
    ):
        for src in files:
            fd = os.open(src.absolute, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as raw:
                st = os.fstat(raw.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise UnsupportedSourceFileError(
                        f"cannot pack {src.path!r}: it stopped being a regular file while packing"
                    )
                mode = FILE_MODE_EXECUTABLE if st.st_mode & 0o111 else FILE_MODE_REGULAR
                reader = _HashingReader(raw)
                try:
                    tar.addfile(_tarinfo(src.path, st.st_size, mode), reader)
                except OSError as exc:
                    raise PackError(
                        f"cannot pack {src.path!r}: {exc}",
                        hint="Do not change the bundle directory while it is being packed.",
                    ) from None
                if raw.read(1):
                    raise PackError(
                        f"cannot pack {src.path!r}: it grew while it was being packed",
                        hint="Do not change the bundle directory while it is being packed.",
                    )
                entries.append(
                    FileEntry(
                        path=src.path,
                        sha256=reader.hasher.hexdigest(),
                        size=reader.size,
                        mode=mode,
                    )
                )
    return entries, "sha256:" + sink.hasher.hexdigest(), sink.size


def pack_directory_to(
    source: Path,
    out: IO[bytes],
    *,
    name: str,
    version: str,
    interface: Interface | Mapping[str, Any],
    entrypoint: str | None = None,
    min_agent_version: str = "0.0.0",
    labels: Mapping[str, str] | None = None,
    include_hidden: bool = False,
) -> PackResult:
    """Pack ``source`` deterministically, writing the tar.gz layer to ``out``.

    Reads every file once, hashing it as it is written.  Raises
    :class:`PackError` (or a subclass) for links, special files and unusable
    names, and :class:`InvalidManifestError` when the given name, version,
    entrypoint or interface break the manifest contract.  ``out`` may hold a
    partial layer when an error is raised.
    """
    iface = _interface(interface)
    files = _collect(source, include_hidden=include_hidden)
    if not files:
        raise PackError(
            f"cannot pack {str(source)!r}: it holds no files to pack",
            hint="Hidden files and __pycache__ are skipped; add the bundle's files.",
        )
    entries, digest, size = _write_layer(files, out)
    manifest = parse_manifest(
        {
            "name": name,
            "version": version,
            "entrypoint": entrypoint,
            "interface": iface.model_dump(mode="json", by_alias=True, exclude_none=True),
            "interfaceHash": interface_hash(iface),
            "minAgentVersion": min_agent_version,
            "files": [e.model_dump(mode="json", by_alias=True) for e in entries],
            "labels": dict(labels or {}),
        }
    )
    return PackResult(manifest=manifest, layer_digest=digest, layer_size=size)


def pack_directory(
    source: Path,
    *,
    name: str,
    version: str,
    interface: Interface | Mapping[str, Any],
    entrypoint: str | None = None,
    min_agent_version: str = "0.0.0",
    labels: Mapping[str, str] | None = None,
    include_hidden: bool = False,
) -> PackedBundle:
    """Pack ``source`` deterministically into memory; see :func:`pack_directory_to`."""
    buffer = io.BytesIO()
    result = pack_directory_to(
        source,
        buffer,
        name=name,
        version=version,
        interface=interface,
        entrypoint=entrypoint,
        min_agent_version=min_agent_version,
        labels=labels,
        include_hidden=include_hidden,
    )
    return PackedBundle(
        manifest=result.manifest,
        layer_digest=result.layer_digest,
        layer_size=result.layer_size,
        layer=buffer.getvalue(),
    )


def _interface(interface: Interface | Mapping[str, Any]) -> Interface:
    if isinstance(interface, Interface):
        checked = interface
    else:
        try:
            checked = Interface.model_validate(dict(interface))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'interface'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise InvalidManifestError(
                f"the bundle interface is invalid: {problems}",
                hint="Describe the interface as {'functions': {...}} and/or {'jsonSchema': {...}}.",
            ) from None
    _check_types(checked)
    return checked


def _check_types(interface: Interface) -> None:
    """Refuse a declared type that is not a Python annotation (``integer`` for ``int``)."""
    for name, signature in interface.functions.items():
        declared = [(f"params.{p.name}", p.type) for p in signature.params]
        declared.append(("returns", signature.returns))
        for where, text in declared:
            problem = annotation_problem(text)
            if problem is not None:
                raise InvalidManifestError(
                    f"interface.functions.{name}.{where}: {problem}",
                    hint="Types are Python annotations, as the application declares them: "
                    "int, str, float, bool, dict[str, float], list[Order], str | None.",
                )
