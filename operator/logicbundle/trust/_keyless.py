"""Keyless verification: a Sigstore bundle checked by sigstore-python, then its statement.

sigstore-python does the cryptography (certificate chain at the log's integrated time, the
embedded SCT, the transparency-log inclusion proof, checkpoint and signed entry timestamp,
the signature, and the log entry's consistency with the bundle). This module chooses the
right entry point for the bundle's content, checks what the signed payload says about the
artifact, and turns sigstore's terse errors into reasons an operator can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle
from sigstore.verify import Verifier
from sigstore_models.common.v1 import HashAlgorithm

from logicbundle.trust._errors import Rejection
from logicbundle.trust._policy import IdentityNotAllowed, IdentityPolicy
from logicbundle.trust._statement import Method, check_in_toto

_ROOT_HINT = (
    "Make sure the trusted root (spec.verify.trustedRoot) belongs to the Sigstore instance "
    "that signed the artifact, then re-sign if the signature itself is broken."
)
_POLICY_HINT = (
    "Add the signer to spec.verify.keyless, or have an allowed identity sign the artifact."
)


@dataclass(frozen=True)
class _Reason:
    meaning: str
    hint: str


_OTHER_DIGEST: Final = _Reason(
    "the signature is for another artifact digest",
    "The signature belongs to another artifact; sign this manifest digest.",
)
_OUTSIDE_VALIDITY: Final = _Reason(
    "the signing certificate was not valid when the transparency log recorded the "
    "signature (used outside its validity period)",
    "Sign again: keyless certificates are short-lived and must be used right away.",
)
_UNTRUSTED_CA: Final = _Reason(
    "the signing certificate does not chain to a certificate authority in the trusted "
    "root (untrusted CA)",
    _ROOT_HINT,
)
_NO_SCT: Final = _Reason(
    "the signing certificate carries no valid signed certificate timestamp (SCT) from a "
    "CT log in the trusted root",
    _ROOT_HINT,
)
_TAMPERED_CHECKPOINT: Final = _Reason(
    "the transparency log checkpoint is not signed by a log in the trusted root "
    "(tampered checkpoint)",
    _ROOT_HINT,
)
_NOT_INCLUDED: Final = _Reason(
    "the transparency log entry does not prove inclusion of this signature",
    _ROOT_HINT,
)
_ALTERED: Final = _Reason(
    "the signature does not match the signed content (the payload or digest was altered)",
    "Do not trust these bytes; sign the artifact again and re-push the signature.",
)

_LOG_ENTRY = "invalid log entry: "
_CHAIN = "failed to build timestamp certificate chain: "

# sigstore's messages start with fixed text and go on to quote what they were checking: the
# inclusion proof with its checkpoint note, certificate names, hashes as Python bytes. The
# signer chooses that material, so it can contain any word of this table ("checkpoint" is
# in every inclusion proof error). A message is therefore classified by how it starts,
# never by what it contains, and the longest matching start wins, whatever the order here.
_REASONS_BY_PREFIX: Final[Mapping[str, _Reason]] = {
    "Bundle message digest mismatch": _OTHER_DIGEST,
    # Step 1, the certificate chain at the log's integrated time (cryptography's verifier).
    _CHAIN: _UNTRUSTED_CA,
    _CHAIN + "validation failed: cert is not valid at validation time": _OUTSIDE_VALIDITY,
    "invalid signing cert: expired at time of signing": _OUTSIDE_VALIDITY,
    # Step 2.
    "failed to verify SCT on signing certificate": _NO_SCT,
    # Steps 4 and 5 are wrapped in "invalid log entry: ": the Merkle inclusion proof, the
    # checkpoint's root hash against the proof's, the signed entry timestamp (inclusion
    # promise) — all about inclusion — except the checkpoint note and its signature.
    _LOG_ENTRY: _NOT_INCLUDED,
    _LOG_ENTRY + "checkpoint: ": _TAMPERED_CHECKPOINT,
    _LOG_ENTRY + "malformed LogCheckpoint": _TAMPERED_CHECKPOINT,
    _LOG_ENTRY + "malformed Note": _TAMPERED_CHECKPOINT,
    _LOG_ENTRY + "note must contain": _TAMPERED_CHECKPOINT,
    # Step 7, the signature over the content.
    "DSSE: invalid signature": _ALTERED,
    "Signature is invalid for input": _ALTERED,
    # Step 8, the log entry's body against the bundle: the entry is another signature's.
    "invalid DSSE log entry": _NOT_INCLUDED,
    "log entry payload hash does not match bundle": _NOT_INCLUDED,
    "log entry signatures do not match bundle": _NOT_INCLUDED,
    "transparency log entry is inconsistent with other materials": _NOT_INCLUDED,
}


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
        raise rejection_for(exc) from None
    if method == "keyless-dsse":
        check_in_toto(payload_type, payload, digest=digest)
    subject, issuer = policy.match(bundle.signing_certificate)
    return subject, issuer, method


def rejection_for(error: SigstoreError) -> Rejection:
    """Why sigstore refused a bundle, in words an operator can act on."""
    if isinstance(error, IdentityNotAllowed):
        # Our own policy's message: it names the identity found and the ones allowed.
        return Rejection(str(error), hint=_POLICY_HINT)
    message = str(error)
    matching = [prefix for prefix in _REASONS_BY_PREFIX if message.startswith(prefix)]
    if not matching:
        return Rejection(f"sigstore rejected the bundle: {message}", hint=_ROOT_HINT)
    reason = _REASONS_BY_PREFIX[max(matching, key=len)]
    return Rejection(reason.meaning, hint=reason.hint)
