"""What a signature must say about the artifact: the payload checks shared by every method.

A valid signature over the wrong statement proves nothing, so after the cryptography passes
the signed payload itself is checked: for cosign v3 (``cosign sign``) a DSSE envelope of
type ``application/vnd.in-toto+json`` carrying an in-toto Statement with predicate type
``https://sigstore.dev/cosign/sign/v1`` whose subject digest is the manifest digest; for
cosign v2 the "simple signing" payload whose ``docker-manifest-digest`` is the manifest
digest. Payloads are parsed only after their signature verified.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from logicbundle.trust._errors import Rejection

Method = Literal["keyless-dsse", "keyless-hashedrekord", "key-dsse", "key-message", "key-legacy"]
"""How a signature was verified: keyless or key, and which signed form."""

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
_STATEMENT_TYPES = frozenset(
    {"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"}
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

_RESIGN = "Sign the manifest digest with `logicbundle sign` or `cosign sign` and push again."


def parse_digest(digest: str) -> bytes:
    """The raw bytes of a ``sha256:<64 lowercase hex>`` digest; anything else is refused."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(
            f"{digest!r} is not a manifest digest of the form sha256:<64 lowercase hex>"
        )
    return bytes.fromhex(digest[len("sha256:") :])


def check_in_toto(payload_type: str, payload: bytes, *, digest: str) -> None:
    """The DSSE payload is cosign's signing statement about exactly ``digest``."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise Rejection(
            f"the DSSE payload type is {payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}",
            hint="Only in-toto statements made by `cosign sign` are accepted as signatures.",
        )
    statement = _json_object(payload, what="in-toto statement")
    if statement.get("_type") not in _STATEMENT_TYPES:
        raise Rejection(
            f"the signed payload is not an in-toto statement (_type={statement.get('_type')!r})",
            hint=_RESIGN,
        )
    predicate_type = statement.get("predicateType")
    if predicate_type != COSIGN_SIGN_PREDICATE_TYPE:
        raise Rejection(
            f"the statement's predicateType is {predicate_type!r}, not "
            f"{COSIGN_SIGN_PREDICATE_TYPE!r}: it is an attestation, not a signature",
            hint=_RESIGN,
        )
    subjects = statement.get("subject")
    if not isinstance(subjects, list):
        raise Rejection("the statement has no subject list", hint=_RESIGN)
    signed = [
        f"sha256:{s['digest'].get('sha256')}"
        for s in subjects
        if isinstance(s, dict) and isinstance(s.get("digest"), dict)
    ]
    if digest not in signed:
        raise Rejection(
            f"the signature is for {', '.join(signed) or 'no sha256 digest'}, not for {digest}",
            hint="The signature belongs to another artifact; sign this manifest digest.",
        )


def check_simple_signing(payload: bytes, *, digest: str) -> None:
    """The cosign v2 simple-signing payload names exactly ``digest``."""
    document = _json_object(payload, what="simple-signing payload")
    critical = document.get("critical")
    if not isinstance(critical, dict) or critical.get("type") != SIMPLE_SIGNING_TYPE:
        raise Rejection(
            f"the signed payload is not a cosign simple-signing payload "
            f"(critical.type must be {SIMPLE_SIGNING_TYPE!r})",
            hint=_RESIGN,
        )
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed != digest:
        raise Rejection(
            f"the signature is for {signed!r}, not for {digest}",
            hint="The signature belongs to another artifact; sign this manifest digest.",
        )


def _json_object(payload: bytes, *, what: str) -> dict[str, Any]:
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise Rejection(f"the {what} is not JSON: {exc}", hint=_RESIGN) from None
    if not isinstance(document, dict):
        raise Rejection(f"the {what} is not a JSON object", hint=_RESIGN)
    return document
