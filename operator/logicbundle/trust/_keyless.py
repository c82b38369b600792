"""Keyless verification: a Sigstore bundle checked by sigstore-python, then its statement.

sigstore-python does the cryptography (certificate chain at the log's integrated time, the
embedded SCT, the transparency-log inclusion proof, checkpoint and signed entry timestamp,
the signature, and the log entry's consistency with the bundle). This module chooses the
right entry point for the bundle's content, checks what the signed payload says about the
artifact, and turns sigstore's terse errors into reasons an operator can act on.
"""

from __future__ import annotations

from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle
from sigstore.verify import Verifier
from sigstore_models.common.v1 import HashAlgorithm

from logicbundle.trust._errors import Rejection
from logicbundle.trust._policy import IdentityPolicy
from logicbundle.trust._statement import Method, check_in_toto

_ROOT_HINT = (
    "Make sure the trusted root (spec.verify.trustedRoot) belongs to the Sigstore instance "
    "that signed the artifact, then re-sign if the signature itself is broken."
)

# sigstore error text -> (what it means, what to do). First match wins.
_TRANSLATIONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    # First: the policy message quotes certificate fields, which could contain any word below.
    (
        ("not allowed by the policy",),
        "",
        "Add the signer to spec.verify.keyless, or have an allowed identity sign the artifact.",
    ),
    (
        ("message digest mismatch",),
        "the signature is for another artifact digest",
        "The signature belongs to another artifact; sign this manifest digest.",
    ),
    (
        ("not valid at validation time",),
        "the signing certificate was not valid when the transparency log recorded the "
        "signature (used outside its validity period)",
        "Sign again: keyless certificates are short-lived and must be used right away.",
    ),
    (
        ("certificate chain",),
        "the signing certificate does not chain to a certificate authority in the trusted "
        "root (untrusted CA)",
        _ROOT_HINT,
    ),
    (
        ("SCT",),
        "the signing certificate carries no valid signed certificate timestamp (SCT) from a "
        "CT log in the trusted root",
        _ROOT_HINT,
    ),
    (
        ("checkpoint",),
        "the transparency log checkpoint is not signed by a log in the trusted root "
        "(tampered checkpoint)",
        _ROOT_HINT,
    ),
    (
        ("inclusion proof", "inclusion promise", "log entry"),
        "the transparency log entry does not prove inclusion of this signature",
        _ROOT_HINT,
    ),
    (
        ("DSSE: invalid signature", "Signature is invalid", "digest mismatch"),
        "the signature does not match the signed content (the payload or digest was altered)",
        "Do not trust these bytes; sign the artifact again and re-push the signature.",
    ),
)


def verify_keyless(
    bundle: Bundle,
    *,
    digest: str,
    digest_bytes: bytes,
    policy: IdentityPolicy,
    verifier: Verifier,
) -> tuple[str, str, Method]:
    """Verify ``bundle`` for ``digest``; return ``(subject, issuer, method)`` or reject."""
    method: Method
    try:
        if bundle._inner.dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            method = "keyless-dsse"
        else:
            hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest_bytes)
            verifier.verify_artifact(hashed, bundle, policy)
            method = "keyless-hashedrekord"
    except SigstoreError as exc:
        raise _translate(str(exc)) from None
    if method == "keyless-dsse":
        check_in_toto(payload_type, payload, digest=digest)
    subject, issuer = policy.match(bundle.signing_certificate)
    return subject, issuer, method


def _translate(message: str) -> Rejection:
    for needles, meaning, hint in _TRANSLATIONS:
        if any(needle in message for needle in needles):
            return Rejection(meaning or message, hint=hint)
    return Rejection(f"sigstore rejected the bundle: {message}", hint=_ROOT_HINT)
