"""Verification with cosign public keys, done with ``cryptography``.

sigstore-python verifies only certificate-bound signatures, so bare keys are handled here,
for the two formats cosign writes with ``--key``:

* cosign v3 (new bundle format): a Sigstore bundle whose verification material is a public
  key hint, holding a DSSE envelope (an in-toto statement signed over its PAE) or, from
  ``sign-blob``, a message signature over the manifest digest. The key hint is
  unauthenticated and ignored; every policy key is tried. A transparency-log entry, if any,
  is not needed for trust here: the key is the trust root.
* cosign v2 (legacy ``sha256-<digest>.sig``): the simple-signing JSON payload and the base64
  signature from the ``dev.cosignproject.cosign/signature`` annotation.

Signature schemes follow cosign's defaults: ECDSA with SHA-256 (ASN.1 DER signatures),
RSA PKCS#1 v1.5 with SHA-256, and pure Ed25519.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from logicbundle.trust._errors import Rejection
from logicbundle.trust._policy import CosignKey, CosignPublicKey
from logicbundle.trust._statement import Method, check_in_toto, check_simple_signing

_WRONG_KEY_HINT = (
    "The signature was made with a key the policy does not list: add its public key to "
    "spec.verify.keys, or sign with one of the listed keys."
)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def verify_key_bundle(
    document: dict[str, Any],
    *,
    digest: str,
    digest_bytes: bytes,
    keys: Sequence[CosignPublicKey],
) -> tuple[str, Method]:
    """A public-key Sigstore bundle; returns ``(key_id, method)`` or rejects."""
    if not keys:
        raise Rejection(
            "the bundle is signed with a public key, but the policy lists no keys",
            hint="Add the signer's cosign public key to spec.verify.keys.",
        )
    envelope = document.get("dsseEnvelope")
    if isinstance(envelope, dict):
        payload_type = envelope.get("payloadType")
        payload = _b64(envelope.get("payload"), what="DSSE payload")
        if not isinstance(payload_type, str):
            raise Rejection("the DSSE envelope has no payloadType", hint=_MALFORMED)
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise Rejection("the DSSE envelope has no signatures", hint=_MALFORMED)
        signed = pae(payload_type, payload)
        for entry in signatures:
            sig = _b64(entry.get("sig") if isinstance(entry, dict) else None, what="signature")
            key = _first_key(keys, sig, signed, prehashed=False)
            if key is not None:
                check_in_toto(payload_type, payload, digest=digest)
                return key.key_id, "key-dsse"
        raise _wrong_key(keys)
    message = document.get("messageSignature")
    if isinstance(message, dict):
        sig = _b64(message.get("signature"), what="message signature")
        key = _first_key(keys, sig, digest_bytes, prehashed=True)
        if key is None:
            raise _wrong_key(keys, note=" or it is for another digest")
        return key.key_id, "key-message"
    raise Rejection(
        "the bundle has neither a DSSE envelope nor a message signature", hint=_MALFORMED
    )


def verify_legacy(
    payload: bytes, signature: str, *, digest: str, keys: Sequence[CosignPublicKey]
) -> tuple[str, Method]:
    """A cosign v2 simple-signing signature; returns ``(key_id, method)`` or rejects."""
    if not keys:
        raise Rejection(
            "legacy cosign signatures are key signatures, but the policy lists no keys",
            hint="Add the signer's cosign public key to spec.verify.keys.",
        )
    sig = _b64(signature, what="dev.cosignproject.cosign/signature annotation")
    key = _first_key(keys, sig, payload, prehashed=False)
    if key is None:
        raise _wrong_key(keys, note=" or the payload was altered")
    check_simple_signing(payload, digest=digest)
    return key.key_id, "key-legacy"


_MALFORMED = "The signature is malformed; sign the artifact again with cosign or logicbundle."


def _first_key(
    keys: Sequence[CosignPublicKey], signature: bytes, data: bytes, *, prehashed: bool
) -> CosignPublicKey | None:
    for key in keys:
        if _verifies(key.key, signature, data, prehashed=prehashed):
            return key
    return None


def _verifies(key: CosignKey, signature: bytes, data: bytes, *, prehashed: bool) -> bool:
    algorithm: hashes.HashAlgorithm | Prehashed = (
        Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256()
    )
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if prehashed:
                return False  # Ed25519 signs whole messages, never a bare digest
            key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _wrong_key(keys: Sequence[CosignPublicKey], *, note: str = "") -> Rejection:
    listed = ", ".join(k.key_id for k in keys)
    return Rejection(
        f"the signature does not verify with any policy key ({listed}): wrong key{note}",
        hint=_WRONG_KEY_HINT,
    )


def _b64(value: object, *, what: str) -> bytes:
    if not isinstance(value, str):
        raise Rejection(f"the {what} is missing", hint=_MALFORMED)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(f"the {what} is not valid base64", hint=_MALFORMED) from None
