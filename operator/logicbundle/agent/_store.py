"""One bundle's directory in the shared volume, and the AtomicWriter swap of ``current``.

Layout (what the SDK reads; the names are :mod:`logicbundle.contract`'s)::

    <root>/<bundle>/.versions/<digest>/                 one unpacked, checked version
    <root>/<bundle>/.versions/<digest>.manifest.json    its bundle manifest (config blob)
    <root>/<bundle>/current -> .versions/<digest>       swapped with rename(2)
    <root>/<bundle>/split.json                          the request split, while one is on

Order of writes, so that a kill at any instant leaves a state the next start
understands: the manifest file (temporary name, fsync, rename), then the
version directory (the unpacker's private ``.partial`` directory, fsync,
rename), then the split descriptor (temporary name, fsync, rename; removed
when there is no split), then a temporary symlink renamed over ``current``.
Anything else found on start -- temporary files and symlinks, ``.partial``
and ``.deleting`` directories, a manifest without its directory, a split
descriptor that does not go with ``current`` -- is debris of an interrupted
step and removed; ``current`` itself is never touched by the clean-up.
Readers therefore only ever see a whole version.

The split descriptor, ``{"digest": <primary>, "candidate": <digest>,
"weight": <0-100>}``, is what lets an application that (re)starts restore a
request split on its own (the SDK's ``load_current``): it counts only while
its ``digest`` is the one ``current`` names, so a reader between the two
renames sees the primary alone, never a split of another primary.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from logicbundle.agent import _seams
from logicbundle.agent._targets import DIGEST_RE
from logicbundle.contract import CURRENT_LINK, MANIFEST_SUFFIX, SPLIT_FILE, VERSIONS_DIR

MAX_SPLIT_BYTES: Final = 4096


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleStore:
    """The on-disk versions and the ``current`` symlink of one bundle."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self.versions = self.dir / VERSIONS_DIR
        self.current = self.dir / CURRENT_LINK
        self.split = self.dir / SPLIT_FILE

    def version_path(self, digest: str) -> Path:
        return self.versions / digest

    def manifest_path(self, digest: str) -> Path:
        return self.versions / f"{digest}{MANIFEST_SUFFIX}"

    def has(self, digest: str) -> bool:
        return self.version_path(digest).is_dir() and self.manifest_path(digest).is_file()

    def prepare(self) -> list[str]:
        """Create the directories and remove the debris of interrupted steps; return what went."""
        self.versions.mkdir(parents=True, exist_ok=True)
        removed: list[str] = []
        for entry in self.dir.iterdir():
            if entry.name in (CURRENT_LINK, VERSIONS_DIR, SPLIT_FILE):
                continue
            removed.append(entry.name)
            _remove(entry)
        for entry in self.versions.iterdir():
            name = entry.name
            if name.endswith(MANIFEST_SUFFIX):
                digest = name[: -len(MANIFEST_SUFFIX)]
                if DIGEST_RE.fullmatch(digest) and self.version_path(digest).is_dir():
                    continue
            elif (
                DIGEST_RE.fullmatch(name)
                and entry.is_dir()
                and not entry.is_symlink()
                and self.manifest_path(name).is_file()
            ):
                continue
            removed.append(f"{VERSIONS_DIR}/{name}")
            _remove(entry)
        active = self.active()
        if active is None and self.current.is_symlink():
            removed.append(CURRENT_LINK)  # points at nothing we hold: useless to any reader
            self.current.unlink()
        if self.active_split() is None and (self.split.exists() or self.split.is_symlink()):
            removed.append(SPLIT_FILE)  # of another primary, or naming what we do not hold
            _remove(self.split)
        return removed

    def active(self) -> str | None:
        """The digest ``current`` points at, if it points at a version we hold."""
        try:
            target = self.current.readlink()
        except OSError:
            return None
        name = target.name
        if str(target.parent) != VERSIONS_DIR or not DIGEST_RE.fullmatch(name):
            return None
        return name if self.has(name) else None

    def active_split(self) -> tuple[str, int] | None:
        """``(candidate, weight)`` of the split descriptor, if it goes with ``current``."""
        active = self.active()
        if active is None:
            return None
        parsed = _parse_split(self._read_split())
        if parsed is None or parsed[0] != active or not self.has(parsed[1]):
            return None
        return parsed[1], parsed[2]

    def _read_split(self) -> bytes | None:
        try:
            fd = os.open(self.split, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as src:
                return src.read(MAX_SPLIT_BYTES + 1)
        except OSError:
            return None

    def write_split(
        self, digest: str, candidate: str | None, weight: int, *, durable: bool = True
    ) -> None:
        """Describe the split of primary ``digest`` (temporary file + rename); None removes it."""
        if candidate is None:
            if self.split.exists() or self.split.is_symlink():
                _remove(self.split)
                if durable:
                    fsync_dir(self.dir)
            return
        data = json.dumps(
            {"digest": digest, "candidate": candidate, "weight": weight},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        if self._read_split() == data:
            return
        _write_whole(self.dir / f".{SPLIT_FILE}.{os.getpid()}.tmp", self.split, data, durable)
        if durable:
            fsync_dir(self.dir)

    def on_disk(self) -> list[str]:
        """Digests held, newest first."""
        found = [
            p for p in self.versions.iterdir() if DIGEST_RE.fullmatch(p.name) and self.has(p.name)
        ]
        found.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        return [p.name for p in found]

    def write_manifest(self, digest: str, data: bytes) -> None:
        final = self.manifest_path(digest)
        _write_whole(final.with_name(f".{final.name}.{os.getpid()}.tmp"), final, data, True)

    def point_current(self, digest: str | None, *, durable: bool = True) -> None:
        """Swap ``current`` to ``digest`` (temporary symlink + rename(2)); None removes it."""
        if digest is None:
            with contextlib.suppress(FileNotFoundError):
                self.current.unlink()
            return
        temporary = self.dir / f".{CURRENT_LINK}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(f"{VERSIONS_DIR}/{digest}")
        _seams.step("symlink-created")
        try:
            temporary.replace(self.current)
        except OSError:
            _discard(temporary)
            raise
        if durable:
            fsync_dir(self.dir)

    def remove(self, digest: str) -> None:
        """Delete a version (renamed aside first, so no reader sees half of it)."""
        path = self.version_path(digest)
        if path.is_dir():
            aside = self.versions / f".deleting-{digest.partition(':')[2][:16]}-{os.getpid()}"
            path.replace(aside)
            _rmtree(aside, halfway=lambda: _seams.step("deleting"))
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path(digest).unlink()


def _write_whole(temporary: Path, final: Path, data: bytes, durable: bool) -> None:
    """Write ``data`` to ``temporary`` and rename it over ``final``.

    A failed write (a full volume: ``ENOSPC``) removes the temporary file before the
    error goes on, so a failed swap leaves no debris behind it, not only after a restart.
    """
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        temporary.replace(final)
    except BaseException:
        _discard(temporary)
        raise


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _parse_split(data: bytes | None) -> tuple[str, str, int] | None:
    """``(primary, candidate, weight)`` from a descriptor's bytes, or None when it is not one."""
    try:
        raw = json.loads(data) if data is not None and len(data) <= MAX_SPLIT_BYTES else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return None
    digest, candidate, weight = raw.get("digest"), raw.get("candidate"), raw.get("weight")
    if (
        isinstance(digest, str)
        and DIGEST_RE.fullmatch(digest)
        and isinstance(candidate, str)
        and DIGEST_RE.fullmatch(candidate)
        and isinstance(weight, int)
        and not isinstance(weight, bool)
        and 0 <= weight <= 100
    ):
        return digest, candidate, weight
    return None


def _rmtree(path: Path, *, halfway: Callable[[], None] | None = None) -> None:
    """Remove a tree; ``halfway`` (the test seam) is called with part of it gone.

    With ``halfway``, the first entry goes on its own before the call, so a kill there
    leaves what a kill in the middle of a removal leaves: a half-deleted tree.
    """
    # shutil brings bz2 and lzma (about 0.5 MB of RSS): imported by the first removal.
    import shutil  # noqa: PLC0415

    if halfway is not None:
        with contextlib.suppress(OSError):
            first = min(path.iterdir(), default=None)
            if first is not None:
                _remove(first)
        halfway()
    shutil.rmtree(path, ignore_errors=True)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        _rmtree(entry)
    else:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
