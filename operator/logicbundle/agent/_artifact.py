"""The two documents of a bundle artifact, parsed with the standard library, as hostile input.

The OCI image manifest (fetched by the digest the operator assigned, checked
against it before parsing) names the config blob and the one layer; the
config blob is the bundle manifest, whose file list drives the safe unpack
(:func:`logicbundle.bundle.unpack_bundle` takes any object with ``files`` and
``total_size``).  The pydantic model of the bundle package would cost the
agent about 13 MB of RSS in every pod, so this module checks what the
unpacker relies on itself: digests, sizes, modes, canonical unique paths.
The interface contract is the SDK's to check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from logicbundle.agent._errors import ArtifactInvalidError, DigestMismatchError
from logicbundle.agent._targets import is_digest
from logicbundle.bundle import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    PathRuleError,
    check_canonical,
    collision_key,
)
from logicbundle.contract import DuplicateKeyError, loads_unique

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
MAX_CONFIG_BYTES: Final = 4 * 1024 * 1024
MAX_FILES: Final = 10_000
OCI_MANIFEST_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
_HEX64: Final = re.compile(r"^[a-f0-9]{64}$")
_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SEMVER: Final = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
_MODES: Final = (0o644, 0o755)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_bytes(data: bytes, digest: str, what: str) -> None:
    """Raise :class:`DigestMismatchError` unless ``data`` hashes to ``digest``."""
    actual = sha256_digest(data)
    if actual != digest:
        raise DigestMismatchError(
            f"{what} hashes to {actual}, not {digest}: the bytes were altered in transit or "
            "in a cache and are not used"
        )


@dataclass(frozen=True, slots=True)
class BlobRef:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """What the agent needs of the OCI image manifest: the config blob and the one layer."""

    digest: str
    config: BlobRef
    layer: BlobRef


def _int(value: object, what: str, *, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ArtifactInvalidError(f"{what} must be an integer within 0..{limit}, not {value!r}")
    return value


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        raw = loads_unique(data)
    except DuplicateKeyError as exc:
        raise ArtifactInvalidError(f"{what} is refused: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactInvalidError(f"{what} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ArtifactInvalidError(f"{what} is not a JSON object")
    return raw


def _blob(raw: object, what: str, *, media_type: str, limit: int) -> BlobRef:
    if not isinstance(raw, dict):
        raise ArtifactInvalidError(f"{what} is not a descriptor object")
    if raw.get("mediaType") != media_type:
        raise ArtifactInvalidError(
            f"{what} has media type {raw.get('mediaType')!r}, not {media_type}"
        )
    digest = raw.get("digest")
    if not is_digest(digest):
        raise ArtifactInvalidError(f"{what} has no sha256 digest")
    assert isinstance(digest, str)  # noqa: S101 - is_digest said so
    return BlobRef(digest=digest, size=_int(raw.get("size"), f"{what}.size", limit=limit))


def parse_image_manifest(data: bytes, *, digest: str, max_layer_bytes: int) -> ImageManifest:
    """Check ``data`` against ``digest``, then parse it as a one-layer bundle artifact."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArtifactInvalidError(f"the OCI manifest of {digest} is larger than 4 MiB")
    check_bytes(data, digest, "the OCI manifest")
    raw = _json_object(data, f"the OCI manifest {digest}")
    if raw.get("schemaVersion") != 2:
        raise ArtifactInvalidError(f"the OCI manifest {digest} is not schemaVersion 2")
    media = raw.get("mediaType", OCI_MANIFEST_TYPE)
    if media != OCI_MANIFEST_TYPE:
        raise ArtifactInvalidError(f"{digest} is a {media!r}, not an OCI image manifest")
    artifact_type = raw.get("artifactType")
    if artifact_type is not None and artifact_type != ARTIFACT_TYPE:
        raise ArtifactInvalidError(f"{digest} is a {artifact_type!r}, not a logic bundle")
    layers = raw.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise ArtifactInvalidError(f"a bundle artifact has exactly one layer; {digest} has not")
    return ImageManifest(
        digest=digest,
        config=_blob(
            raw.get("config"), "config", media_type=CONFIG_MEDIA_TYPE, limit=MAX_CONFIG_BYTES
        ),
        layer=_blob(layers[0], "layers[0]", media_type=LAYER_MEDIA_TYPE, limit=max_layer_bytes),
    )


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a bundle: satisfies the unpacker's file entry protocol."""

    path: str
    sha256: str
    size: int
    mode: int


@dataclass(frozen=True, slots=True)
class BundleSpec:
    """The parts of the bundle manifest (the config blob) the agent checks and unpacks by."""

    name: str
    version: str
    min_agent_version: str
    files: tuple[FileSpec, ...]
    raw: bytes

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


_BUNDLE_KEYS: Final = frozenset(
    {
        "name",
        "version",
        "entrypoint",
        "interface",
        "interfaceHash",
        "minAgentVersion",
        "files",
        "labels",
    }
)


def parse_bundle_manifest(data: bytes, *, digest: str, max_file_size: int) -> BundleSpec:
    """Check ``data`` against the config ``digest`` and parse the bundle manifest strictly."""
    check_bytes(data, digest, "the bundle manifest (config blob)")
    raw = _json_object(data, "the bundle manifest")
    unknown = sorted(set(raw) - _BUNDLE_KEYS)
    if unknown:
        raise ArtifactInvalidError(
            f"the bundle manifest has unknown field(s) {', '.join(unknown)}; "
            "is the agent older than the bundle format?"
        )
    name = raw.get("name")
    version = raw.get("version")
    if not isinstance(name, str) or len(name) > 56 or not _NAME.fullmatch(name):
        raise ArtifactInvalidError(f"the bundle manifest's name {name!r} is not a DNS label")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ArtifactInvalidError(f"the bundle manifest's version {version!r} is invalid")
    min_agent = raw.get("minAgentVersion", "0.0.0")
    if not isinstance(min_agent, str) or not re.fullmatch(r"\d+\.\d+\.\d+", min_agent):
        raise ArtifactInvalidError(f"minAgentVersion {min_agent!r} is not x.y.z")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw or len(files_raw) > MAX_FILES:
        raise ArtifactInvalidError(f"the bundle manifest must list 1..{MAX_FILES} files")
    files: list[FileSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(files_raw):
        what = f"files[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"path", "sha256", "size", "mode"}:
            raise ArtifactInvalidError(f"{what} must be an object of path, sha256, size, mode")
        path = entry.get("path")
        if not isinstance(path, str) or not path or len(path) > 4096:
            raise ArtifactInvalidError(f"{what}.path must be a non-empty string")
        try:
            check_canonical(path)
        except PathRuleError as exc:
            raise ArtifactInvalidError(f"{what}.path is refused: {exc}") from None
        key = collision_key(path)
        if key in seen:
            raise ArtifactInvalidError(f"{what}.path {path!r} is listed twice")
        seen.add(key)
        sha = entry.get("sha256")
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise ArtifactInvalidError(f"{what}.sha256 must be 64 lower-case hex digits")
        mode = entry.get("mode", 0o644)
        if isinstance(mode, bool) or mode not in _MODES:
            raise ArtifactInvalidError(f"{what}.mode must be 420 (0644) or 493 (0755)")
        size = _int(entry.get("size"), f"{what}.size", limit=max_file_size)
        files.append(FileSpec(path=path, sha256=sha, size=size, mode=int(mode)))
    return BundleSpec(
        name=name,
        version=version,
        min_agent_version=min_agent,
        files=tuple(files),
        raw=data,
    )


def version_tuple(version: str) -> tuple[int, int, int]:
    match = _SEMVER.match(version)
    if match is None:
        return (0, 0, 0)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)))
