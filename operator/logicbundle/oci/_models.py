"""OCI manifest, index and descriptor models, validated on parse.

Everything a registry serves is untrusted input: once a :class:`Manifest` or
:class:`Index` object exists it is well-formed (schema version, media types,
``sha256:`` digests, non-negative sizes), so callers never re-check shapes.
Only sha256 digests are accepted: it is what every registry and cosign use,
and one algorithm means one code path to get right.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from logicbundle.contract import DuplicateKeyError, loads_unique
from logicbundle.oci._errors import InvalidManifestError, InvalidReferenceError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY_CONFIG: Final = "application/vnd.oci.empty.v1+json"

MANIFEST_MEDIA_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_MEDIA_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ALL_MANIFEST_MEDIA_TYPES: Final = MANIFEST_MEDIA_TYPES | INDEX_MEDIA_TYPES

_DIGEST_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
_DIGEST_RE: Final = re.compile(_DIGEST_PATTERN)
# RFC 6838 type/subtype with an optional +suffix; parameters are not allowed.
_MEDIA_TYPE_PATTERN: Final = (
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)

Digest = Annotated[str, Field(pattern=_DIGEST_PATTERN)]
MediaType = Annotated[str, Field(pattern=_MEDIA_TYPE_PATTERN)]


def is_digest(value: str) -> bool:
    """True when *value* is a ``sha256:<64 lowercase hex>`` digest."""
    return bool(_DIGEST_RE.fullmatch(value))


def check_digest(value: str) -> str:
    """Return *value* when it is a sha256 digest, or raise :class:`InvalidReferenceError`."""
    if not is_digest(value):
        raise InvalidReferenceError(
            f"{value[:80]!r} is not a digest",
            hint="Use the form sha256:<64 lowercase hex characters>.",
        )
    return value


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    def to_json_bytes(self) -> bytes:
        """Canonical-enough JSON for pushing: aliases, no nulls, compact."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class Descriptor(_Model):
    """An OCI content descriptor: what a manifest or index points at."""

    media_type: MediaType = Field(alias="mediaType", description="Media type of the target.")
    digest: Digest = Field(description="sha256 digest of the target's bytes.")
    size: int = Field(ge=0, description="Size of the target in bytes.")
    artifact_type: MediaType | None = Field(
        default=None, alias="artifactType", description="Artifact type, for referrers."
    )
    annotations: dict[str, str] | None = Field(default=None, description="Free-form annotations.")


class Manifest(_Model):
    """An OCI image manifest (or the identical Docker v2 schema 2 shape)."""

    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: Literal[
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] = Field(default=OCI_MANIFEST, alias="mediaType")
    artifact_type: MediaType | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class Index(_Model):
    """An OCI image index (or Docker manifest list); also the referrers response."""

    schema_version: Literal[2] = Field(default=2, alias="schemaVersion")
    media_type: Literal[
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] = Field(default=OCI_INDEX, alias="mediaType")
    artifact_type: MediaType | None = Field(default=None, alias="artifactType")
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


def _load_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = loads_unique(data)
    except DuplicateKeyError as exc:
        raise InvalidManifestError(
            f"{what} is refused: {exc}",
            hint="JSON parsers disagree on which of two equal keys wins: re-push the "
            "artifact with each key once.",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidManifestError(
            f"{what} is not valid JSON ({type(exc).__name__})",
            hint="Re-push the artifact; the registry may be serving corrupt content.",
        ) from None
    if not isinstance(document, dict):
        raise InvalidManifestError(f"{what} is JSON but not an object")
    return document


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        location = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{location}: {err['msg']}")
    return "; ".join(parts)


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse and validate manifest or index bytes.

    *media_type* is the ``Content-Type`` the registry sent (or the descriptor's
    media type).  When the document names its own ``mediaType`` the two must
    agree, so a registry cannot make us read an index as a manifest.
    """
    document = _load_json_object(data, "manifest")
    declared = document.get("mediaType")
    if declared is not None and media_type is not None and declared != media_type:
        raise InvalidManifestError(
            f"manifest declares mediaType {str(declared)[:100]!r} "
            f"but was served as {media_type[:100]!r}",
            hint="The registry or the pushing tool is misbehaving; re-push the artifact.",
        )
    kind = declared if isinstance(declared, str) else media_type
    if kind is None:
        kind = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    try:
        if kind in MANIFEST_MEDIA_TYPES:
            return Manifest.model_validate(document)
        if kind in INDEX_MEDIA_TYPES:
            return Index.model_validate(document)
    except ValidationError as exc:
        raise InvalidManifestError(
            f"manifest of type {kind} is invalid: {_validation_summary(exc)}"
        ) from None
    raise InvalidManifestError(
        f"unsupported manifest media type {kind[:100]!r}",
        hint=f"Expected one of {', '.join(sorted(ALL_MANIFEST_MEDIA_TYPES))}.",
    )


def parse_index(data: bytes) -> Index:
    """Parse bytes that must be an OCI index (a referrers response or fallback tag)."""
    parsed = parse_manifest(data, None)
    if not isinstance(parsed, Index):
        raise InvalidManifestError("expected an OCI image index but got an image manifest")
    return parsed
