"""Signatures in the registry: find them, attach them, and verify a reference end to end.

This is where the OCI client and the verifier meet, in the shapes real ``cosign`` v3.1
reads and writes (observed against Debian's distribution 2.8 registry):

* **Sigstore bundle referrer** (``cosign sign`` v3 default): an OCI image manifest with
  ``artifactType`` ``application/vnd.dev.sigstore.bundle.v0.3+json``, the empty config
  ``{}`` (``application/vnd.oci.empty.v1+json``), one layer holding the bundle JSON, a
  ``subject`` naming the signed manifest and the annotations ``dev.sigstore.bundle.content``,
  ``dev.sigstore.bundle.predicateType`` and ``org.opencontainers.image.created``. It is found
  through the referrers API, or the ``sha256-<hex>`` index tag on registries without one
  (the client handles both).
* **Legacy** (cosign v2, ``--new-bundle-format=false``): the ``sha256-<hex>.sig`` tag, an
  image manifest whose layers are simple-signing payloads, each carrying its base64
  signature in the ``dev.cosignproject.cosign/signature`` annotation; a new signature is
  appended as one more layer.

Everything is pulled by digest and checked against it (the client does that), and every
signature blob is size-limited before a byte is read: the registry is untrusted and a
signature is a few kilobytes. A candidate that cannot be fetched or is malformed is skipped
and named in the error if nothing else verifies; an unreachable registry is raised
(retryable), so a transient failure is never reported as "unsigned".
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from logicbundle.oci import (
    OCI_EMPTY_CONFIG,
    OCI_MANIFEST,
    Descriptor,
    InvalidReferenceError,
    Manifest,
    NotFoundError,
    Reference,
    RegistryClient,
    RegistryError,
    SizeLimitError,
    fallback_tag,
)
from logicbundle.trust._errors import VerificationError
from logicbundle.trust._policy import TrustPolicy
from logicbundle.trust._sign import (
    BUNDLE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SignatureArtifact,
)
from logicbundle.trust._verifier import (
    BundleSignature,
    LegacySignature,
    TrustVerifier,
    Verified,
    default_verifier,
)

logger = logging.getLogger("logicbundle.trust")

MAX_SIGNATURE_BYTES: Final = 1 << 20
"""Largest signature blob (bundle or simple-signing payload) discovery will download."""
MAX_CANDIDATES: Final = 64
"""Most signatures looked at per artifact; more is a misbehaving or hostile registry."""

CREATED_ANNOTATION: Final = "org.opencontainers.image.created"
_EMPTY_CONFIG_CONTENT: Final = b"{}"
_OCI_IMAGE_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"  # what cosign writes in a .sig image config
_SIGN_HINT: Final = (
    "Sign it with `logicbundle sign` or `cosign sign` (key or keyless) and push the "
    "signature to the same repository as the artifact."
)


def legacy_signature_tag(digest: str) -> str:
    """The cosign v2 signature tag of a manifest digest: ``sha256-<hex>.sig``."""
    return fallback_tag(digest) + ".sig"


@dataclass(frozen=True)
class _Discovery:
    signatures: list[BundleSignature | LegacySignature]
    skipped: list[str]


def discover_signatures(
    client: RegistryClient, subject: Reference
) -> list[BundleSignature | LegacySignature]:
    """Every signature attached to *subject* (which must be pinned by digest).

    Sigstore bundle referrers first (referrers API or the ``sha256-<hex>`` tag fallback),
    then the legacy ``sha256-<hex>.sig`` tag; no signature at all is an empty list.
    Nothing here is trusted yet: hand the result to :class:`TrustVerifier`.
    """
    return _discover(client, subject).signatures


def _discover(client: RegistryClient, subject: Reference) -> _Discovery:
    digest = _pinned_digest(subject)
    found = _Discovery(signatures=[], skipped=[])
    for number, referrer in enumerate(
        client.referrers(subject, artifact_type=BUNDLE_MEDIA_TYPE), start=1
    ):
        if number > MAX_CANDIDATES or len(found.signatures) >= MAX_CANDIDATES:
            found.skipped.append(f"more than {MAX_CANDIDATES} referrers; the rest were ignored")
            break
        try:
            found.signatures.extend(_bundles_of(client, subject, digest, referrer))
        except RegistryError as exc:
            if exc.retryable:
                raise
            found.skipped.append(f"referrer {referrer.digest}: {exc.message}")
    try:
        found.signatures.extend(_legacy_of(client, subject, digest, found))
    except RegistryError as exc:
        if exc.retryable:
            raise
        found.skipped.append(f"tag {legacy_signature_tag(digest)}: {exc.message}")
    for reason in found.skipped:
        logger.warning("ignored a signature of %s: %s", subject.with_digest(digest), reason)
    return found


def _pinned_digest(subject: Reference) -> str:
    if subject.digest is None:
        raise InvalidReferenceError(
            f"{subject} is not pinned to a digest",
            hint="Signatures are attached to manifest digests; resolve the tag first.",
        )
    return subject.digest


def _bundles_of(
    client: RegistryClient, subject: Reference, digest: str, referrer: Descriptor
) -> list[BundleSignature]:
    pulled = client.pull_manifest(subject.with_digest(referrer.digest), accept=(OCI_MANIFEST,))
    manifest = pulled.manifest
    if not isinstance(manifest, Manifest):
        return []
    # The fallback index is a mutable tag: only trust what the referrer itself says.
    if manifest.subject is None or manifest.subject.digest != digest:
        logger.debug("referrer %s names another subject; ignored", referrer.digest)
        return []
    if (manifest.artifact_type or manifest.config.media_type) != BUNDLE_MEDIA_TYPE:
        return []
    source = f"referrer {referrer.digest}"
    return [
        BundleSignature(content=_pull_small(client, subject, layer), source=source)
        for layer in manifest.layers
        if layer.media_type == BUNDLE_MEDIA_TYPE
    ]


def _legacy_of(
    client: RegistryClient, subject: Reference, digest: str, found: _Discovery
) -> list[LegacySignature]:
    tag = legacy_signature_tag(digest)
    try:
        pulled = client.pull_manifest(subject.with_tag(tag), accept=(OCI_MANIFEST,))
    except NotFoundError:
        return []  # Never signed in the legacy format: the usual case.
    manifest = pulled.manifest
    if not isinstance(manifest, Manifest):
        return []
    legacy: list[LegacySignature] = []
    for number, layer in enumerate(manifest.layers, start=1):
        signature = (layer.annotations or {}).get(SIGNATURE_ANNOTATION)
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or not signature:
            continue
        if len(found.signatures) + len(legacy) >= MAX_CANDIDATES:
            found.skipped.append(f"more than {MAX_CANDIDATES} signatures; the rest were ignored")
            break
        payload = _pull_small(client, subject, layer)
        legacy.append(
            LegacySignature(payload=payload, signature=signature, source=f"{tag} layer {number}")
        )
    return legacy


def _pull_small(client: RegistryClient, repository: Reference, layer: Descriptor) -> bytes:
    if layer.size > MAX_SIGNATURE_BYTES:
        raise SizeLimitError(
            f"signature blob {layer.digest} claims {layer.size} bytes, more than the limit "
            f"of {MAX_SIGNATURE_BYTES}; not downloaded"
        )
    sink = io.BytesIO()
    client.pull_blob_to(repository, layer, sink)
    return sink.getvalue()


# --- attaching -------------------------------------------------------------------------


def attach_signature(
    client: RegistryClient,
    subject: Reference,
    artifact: SignatureArtifact,
    *,
    created: datetime | None = None,
) -> Descriptor:
    """Push *artifact* as a signature of *subject* (pinned by digest), the way cosign v3 does.

    A Sigstore bundle becomes a referrer manifest (and an entry in the ``sha256-<hex>``
    index tag when the registry has no referrers API); a simple-signing payload from
    :func:`sign_legacy_with_key` is appended to the ``sha256-<hex>.sig`` manifest. Returns
    the descriptor of the manifest pushed. *created* is the referrer's
    ``org.opencontainers.image.created`` time (default: now).
    """
    digest = _pinned_digest(subject)
    if artifact.media_type == SIMPLE_SIGNING_MEDIA_TYPE:
        return _attach_legacy(client, subject, digest, artifact)
    if artifact.media_type != BUNDLE_MEDIA_TYPE:
        raise InvalidReferenceError(
            f"cannot attach a signature of media type {artifact.media_type[:100]!r}",
            hint=f"Attach a Sigstore bundle ({BUNDLE_MEDIA_TYPE}) or a cosign simple-signing "
            "payload, as made by sign_with_key, sign_keyless or sign_legacy_with_key.",
        )
    target = client.resolve(subject.with_digest(digest))
    artifact_type = artifact.artifact_type or BUNDLE_MEDIA_TYPE
    config = client.push_blob(subject, _EMPTY_CONFIG_CONTENT, media_type=OCI_EMPTY_CONFIG)
    layer = client.push_blob(subject, artifact.content, media_type=artifact.media_type)
    when = (created or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = {**artifact.annotations, CREATED_ANNOTATION: when}
    # Field order and shapes as cosign v3 writes them, artifactType on the config included.
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**_descriptor(OCI_EMPTY_CONFIG, config), "artifactType": artifact_type},
        "layers": [_descriptor(artifact.media_type, layer)],
        "annotations": dict(sorted(annotations.items())),
        "subject": _descriptor(target.media_type, target),
        "artifactType": artifact_type,
    }
    data = json.dumps(document, separators=(",", ":")).encode()
    return client.push_manifest(subject.with_tag(None), data, media_type=OCI_MANIFEST)


def _attach_legacy(
    client: RegistryClient, subject: Reference, digest: str, artifact: SignatureArtifact
) -> Descriptor:
    signature = artifact.annotations.get(SIGNATURE_ANNOTATION)
    if not signature:
        raise InvalidReferenceError(
            f"the simple-signing payload has no {SIGNATURE_ANNOTATION} annotation",
            hint="Make legacy signatures with sign_legacy_with_key.",
        )
    tag_ref = subject.with_tag(legacy_signature_tag(digest))
    payload = client.push_blob(subject, artifact.content, media_type=artifact.media_type)
    new_layer = {
        **_descriptor(artifact.media_type, payload),
        "annotations": dict(artifact.annotations),
    }
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {},
        "layers": [],
    }
    try:
        existing = client.pull_manifest(tag_ref, accept=(OCI_MANIFEST,))
    except NotFoundError:
        existing = None
    if existing is not None:
        document = json.loads(existing.data)
        for old in document.get("layers", []):
            annotations = old.get("annotations") or {}
            if old.get("digest") == payload.digest and annotations.get(SIGNATURE_ANNOTATION) == (
                signature
            ):
                return existing.descriptor  # Already attached: cosign does not duplicate.
    layers = [*document.get("layers", []), new_layer]
    config_bytes = _legacy_config([str(layer["digest"]) for layer in layers])
    config_type = str(document.get("config", {}).get("mediaType") or _OCI_IMAGE_CONFIG)
    config = client.push_blob(subject, config_bytes, media_type=config_type)
    document["config"] = _descriptor(config_type, config)
    document["layers"] = layers
    data = json.dumps(document, separators=(",", ":")).encode()
    media_type = str(document.get("mediaType") or OCI_MANIFEST)
    return client.push_manifest(tag_ref, data, media_type=media_type)


def _legacy_config(diff_ids: list[str]) -> bytes:
    """The image config cosign writes for a ``.sig`` manifest: one history entry per layer."""
    config = {
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in diff_ids],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _descriptor(media_type: str, blob: Descriptor) -> dict[str, Any]:
    return {"mediaType": media_type, "size": blob.size, "digest": blob.digest}


# --- verifying -------------------------------------------------------------------------


def verify_reference(
    *,
    client: RegistryClient,
    reference: Reference,
    policy: TrustPolicy,
    verifier: TrustVerifier | None = None,
) -> Verified:
    """Resolve *reference* to its manifest digest, find its signatures and verify them.

    A tag is only resolved, never trusted: the result names the digest that was verified,
    and everything after this must use that digest. Raises :class:`VerificationError` when
    no signature satisfies *policy* (including when there is none), and the registry
    client's errors when the registry cannot be read.
    """
    descriptor = client.resolve(reference)
    digest = descriptor.digest
    # A digest once verified under this policy stays verified (the signature covers the
    # digest, wherever the bytes are stored): no need to read signatures again.
    known = (verifier or default_verifier()).cached(digest=digest, policy=policy)
    if known is not None:
        return known
    pinned = reference.with_digest(digest)
    found = _discover(client, pinned)
    if not found.signatures:
        where = (
            f"looked for Sigstore bundle referrers (referrers API or tag "
            f"{fallback_tag(digest)}) and the legacy tag {legacy_signature_tag(digest)}"
        )
        skipped = "".join(f"\n  - skipped {reason}" for reason in found.skipped)
        raise VerificationError(
            f"no signature was found for {reference.registry}/{reference.repository}"
            f"@{digest}: {where}{skipped}",
            hint=_SIGN_HINT,
        )
    try:
        return (verifier or default_verifier()).verify(
            digest=digest, signatures=found.signatures, policy=policy
        )
    except VerificationError as exc:
        if not found.skipped:
            raise
        skipped = "".join(f"\n  - skipped {reason}" for reason in found.skipped)
        raise VerificationError(exc.message + skipped, hint=exc.hint) from None
