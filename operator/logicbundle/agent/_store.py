"""One bundle's directory in the shared volume, and the AtomicWriter swap of ``current``.

Layout (what the SDK reads)::

    <root>/<bundle>/.versions/<digest>/                 one unpacked, checked version
    <root>/<bundle>/.versions/<digest>.manifest.json    its bundle manifest (config blob)
    <root>/<bundle>/current -> .versions/<digest>       swapped with rename(2)

Order of writes, so that a kill at any instant leaves a state the next start
understands: the manifest file (temporary name, fsync, rename), then the
version directory (the unpacker's private ``.partial`` directory, fsync,
rename), then a temporary symlink renamed over ``current``.  Anything else
found on start -- temporary files and symlinks, ``.partial`` and
``.deleting`` directories, a manifest without its directory -- is debris of
an interrupted step and removed; ``current`` itself is never touched by the
clean-up.  Readers therefore only ever see a whole version.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Final

from logicbundle.agent import _seams
from logicbundle.agent._targets import DIGEST_RE

MANIFEST_SUFFIX: Final = ".manifest.json"
VERSIONS: Final = ".versions"
CURRENT: Final = "current"


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
        self.versions = self.dir / VERSIONS
        self.current = self.dir / CURRENT

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
            if entry.name in (CURRENT, VERSIONS):
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
            removed.append(f"{VERSIONS}/{name}")
            _remove(entry)
        active = self.active()
        if active is None and self.current.is_symlink():
            removed.append(CURRENT)  # points at nothing we hold: useless to any reader
            self.current.unlink()
        return removed

    def active(self) -> str | None:
        """The digest ``current`` points at, if it points at a version we hold."""
        try:
            target = self.current.readlink()
        except OSError:
            return None
        name = target.name
        if str(target.parent) != VERSIONS or not DIGEST_RE.fullmatch(name):
            return None
        return name if self.has(name) else None

    def on_disk(self) -> list[str]:
        """Digests held, newest first."""
        found = [
            p for p in self.versions.iterdir() if DIGEST_RE.fullmatch(p.name) and self.has(p.name)
        ]
        found.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        return [p.name for p in found]

    def write_manifest(self, digest: str, data: bytes) -> None:
        final = self.manifest_path(digest)
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(final)

    def point_current(self, digest: str | None, *, durable: bool = True) -> None:
        """Swap ``current`` to ``digest`` (temporary symlink + rename(2)); None removes it."""
        if digest is None:
            with contextlib.suppress(FileNotFoundError):
                self.current.unlink()
            return
        temporary = self.dir / f".current.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        temporary.symlink_to(f"{VERSIONS}/{digest}")
        _seams.step("symlink-created")
        temporary.replace(self.current)
        if durable:
            fsync_dir(self.dir)

    def remove(self, digest: str) -> None:
        """Delete a version (renamed aside first, so no reader sees half of it)."""
        path = self.version_path(digest)
        if path.is_dir():
            aside = self.versions / f".deleting-{digest.partition(':')[2][:16]}-{os.getpid()}"
            path.replace(aside)
            _seams.step("deleting")
            shutil.rmtree(aside, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path(digest).unlink()


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
