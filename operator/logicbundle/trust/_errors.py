"""The one error verification raises, and the per-signature reasons it collects.

Verification is any-of across candidate signatures, so a failure has several causes: each
candidate is rejected for its own reason (:class:`Rejection`), and the caller receives one
:class:`VerificationError` listing them all, with a hint that says what to do next.
"""

from __future__ import annotations

from logicbundle.errors import LogicBundleError


class VerificationError(LogicBundleError):
    """No candidate signature proved that the artifact comes from a trusted signer.

    Retrying cannot help: the same bytes and the same policy give the same answer. Either
    the artifact must be (re-)signed by an allowed signer or the policy must change.
    """

    retryable = False
    reason = "VerificationFailed"


class Rejection(Exception):
    """Why one candidate signature was not accepted (internal; folded into the error)."""

    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class SigningError(LogicBundleError):
    """Signing failed: a bad key, an unusable identity token, or the Sigstore services."""

    reason = "SigningFailed"
