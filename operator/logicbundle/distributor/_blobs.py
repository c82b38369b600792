"""The verified, content-addressed cache the distributor serves bundles from.

The operator puts a bundle here only after it verified the signature, so the
registry is read once per digest instead of once per pod.  The cache checks
content addressing itself as well (fail closed): the OCI manifest must hash to
the digest it is stored under, the config blob and the layer to the digests
that manifest names.  The agent repeats those checks on its side, so a
corrupted disk can cost a retry, never a wrong bundle.

Layout, mirroring the registry so the agent's fetch logic is the same for both::

    <root>/manifests/sha256/<hex>   the OCI image manifest (its digest is the target digest)
    <root>/blobs/sha256/<hex>       config blobs (bundle manifests) and layers
    <root>/tmp/                     partial writes, renamed into place

Every file is written to ``tmp/``, fsynced and renamed, blobs before the
manifest, so a manifest that exists always has its blobs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from logicbundle.bundle import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE
from logicbundle.errors import LogicBundleError
from logicbundle.oci import Manifest, is_digest, sha256_digest

_CHUNK: Final = 1 << 20
MAX_MANIFEST_BYTES: Final = 1 << 20


class BlobCacheError(LogicBundleError):
    """A bundle was refused by the cache: its bytes do not match its digests."""

    reason = "CacheRejected"


@dataclass(frozen=True, slots=True)
class CachedBundle:
    """What the cache holds for one target digest."""

    digest: str
    """The OCI manifest digest (the pod's target)."""
    config_digest: str
    layer_digest: str
    layer_size: int

    def blobs(self) -> tuple[str, str]:
        return (self.config_digest, self.layer_digest)


def _hex(digest: str) -> str:
    if not is_digest(digest) or not digest.startswith("sha256:"):
        raise BlobCacheError(f"{digest!r} is not a sha256 digest")
    return digest.removeprefix("sha256:")


class BlobCache:
    """Content-addressed bundle storage on local disk; blocking I/O (call ``put`` in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._manifests = root / "manifests" / "sha256"
        self._blobs = root / "blobs" / "sha256"
        self._tmp = root / "tmp"
        for folder in (self._manifests, self._blobs, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, CachedBundle] = {}

    # -- writing ------------------------------------------------------------------

    def put(self, *, digest: str, manifest: bytes, config: bytes, layer: Path) -> CachedBundle:
        """Store a verified bundle: its OCI manifest bytes, config blob and layer file.

        Raises :class:`BlobCacheError` (and stores nothing new) when a byte
        does not match its digest or the manifest is not a one-layer bundle.
        """
        if len(manifest) > MAX_MANIFEST_BYTES or sha256_digest(manifest) != digest:
            raise BlobCacheError(f"the manifest bytes do not hash to {digest}")
        entry = self._parse(digest, manifest)
        if sha256_digest(config) != entry.config_digest:
            raise BlobCacheError(f"the config blob of {digest} does not match its digest")
        self._write_blob(entry.config_digest, config)
        self._copy_layer(entry, layer)
        self._write(self._manifests / _hex(digest), manifest)
        self._index[digest] = entry
        return entry

    def remove(self, digest: str) -> None:
        """Forget a bundle (its blobs stay until :meth:`prune` finds them unreferenced)."""
        self._index.pop(digest, None)
        with contextlib.suppress(FileNotFoundError):
            (self._manifests / _hex(digest)).unlink()

    def prune(self, keep: set[str]) -> None:
        """Delete every bundle not in ``keep`` and every blob no kept bundle references."""
        referenced: set[str] = set()
        for path in list(self._manifests.iterdir()):
            digest = f"sha256:{path.name}"
            entry = self.get(digest) if digest in keep else None
            if entry is None:
                self.remove(digest)
            else:
                referenced.update(entry.blobs())
        for path in list(self._blobs.iterdir()):
            if f"sha256:{path.name}" not in referenced:
                path.unlink(missing_ok=True)

    def newest_first(self) -> list[str]:
        """Every cached bundle's digest, the most recently stored first."""
        found = []
        for path in self._manifests.iterdir():
            with contextlib.suppress(FileNotFoundError):
                found.append((path.stat().st_mtime_ns, f"sha256:{path.name}"))
        return [digest for _, digest in sorted(found, reverse=True)]

    # -- reading ------------------------------------------------------------------

    def get(self, digest: str) -> CachedBundle | None:
        """The cached bundle with this manifest digest, or None."""
        entry = self._index.get(digest)
        if entry is not None:
            return entry
        try:
            data = self.manifest_bytes(digest)
        except BlobCacheError:
            return None
        if data is None:
            return None
        try:
            entry = self._parse(digest, data)
        except BlobCacheError:
            return None
        self._index[digest] = entry
        return entry

    def manifest_bytes(self, digest: str) -> bytes | None:
        path = self._manifests / _hex(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def blob_path(self, digest: str) -> Path | None:
        """The file of a config blob or layer, or None when absent."""
        path = self._blobs / _hex(digest)
        return path if path.is_file() else None

    # -- internals ----------------------------------------------------------------

    @staticmethod
    def _parse(digest: str, data: bytes) -> CachedBundle:
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise BlobCacheError(f"{digest} is not an OCI image manifest: {exc}") from None
        if manifest.config.media_type != CONFIG_MEDIA_TYPE:
            raise BlobCacheError(f"{digest} has config media type {manifest.config.media_type!r}")
        if len(manifest.layers) != 1 or manifest.layers[0].media_type != LAYER_MEDIA_TYPE:
            raise BlobCacheError(f"{digest} does not have exactly one {LAYER_MEDIA_TYPE} layer")
        layer = manifest.layers[0]
        return CachedBundle(
            digest=digest,
            config_digest=manifest.config.digest,
            layer_digest=layer.digest,
            layer_size=layer.size,
        )

    def _write_blob(self, digest: str, data: bytes) -> None:
        target = self._blobs / _hex(digest)
        if not target.is_file():
            self._write(target, data)

    def _write(self, target: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _copy_layer(self, entry: CachedBundle, layer: Path) -> None:
        target = self._blobs / _hex(entry.layer_digest)
        if target.is_file() and target.stat().st_size == entry.layer_size:
            return
        fd, tmp = tempfile.mkstemp(dir=self._tmp)
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, layer.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if f"sha256:{hasher.hexdigest()}" != entry.layer_digest or size != entry.layer_size:
                raise BlobCacheError(f"the layer of {entry.digest} does not match its digest")
            Path(tmp).replace(target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
