"""Errors of the registry client.

Each one says what failed and what to do, and sets ``retryable`` so the
controller can tell waiting (the registry is down) from stalling (the
artifact is wrong).  Messages are built only from redacted URLs and
registry error codes: never credentials, tokens, URL userinfo or query
strings (pre-signed storage URLs carry signatures in their queries).
"""

from __future__ import annotations

from logicbundle.errors import LogicBundleError


class RegistryError(LogicBundleError):
    """Root of every error the registry client raises."""

    reason = "RegistryError"


class InvalidReferenceError(RegistryError):
    """An artifact reference or digest string is malformed."""

    reason = "InvalidReference"


class InvalidManifestError(RegistryError):
    """A manifest or index is not valid JSON of the expected OCI shape."""

    reason = "InvalidManifest"


class InsecureTransportError(RegistryError):
    """Plain HTTP was needed but ``insecure`` was not set."""

    reason = "InsecureTransportRefused"


class AuthenticationError(RegistryError):
    """The registry refused our identity (401) or gave no usable token."""

    reason = "AuthenticationFailed"


class AccessDeniedError(RegistryError):
    """The registry knows who we are but refuses the operation (403)."""

    reason = "AccessDenied"


class NotFoundError(RegistryError):
    """The repository, tag, manifest or blob does not exist (404)."""

    reason = "ArtifactNotFound"


class DigestMismatchError(RegistryError):
    """Bytes served by the registry do not hash to the digest asked for.

    The registry is untrusted: this is treated as tampering, never retried.
    """

    reason = "DigestMismatch"


class SizeLimitError(RegistryError):
    """A manifest or blob is larger than allowed or than its descriptor says."""

    reason = "SizeLimitExceeded"


class TLSVerificationError(RegistryError):
    """The registry's TLS certificate could not be verified."""

    reason = "TLSVerificationFailed"


class RegistryRequestError(RegistryError):
    """The registry rejected a request for a reason not covered above (4xx)."""

    reason = "RegistryRequestRejected"


class RegistryUnavailableError(RegistryError):
    """The registry could not be reached or kept failing (connection errors, 5xx, 429)."""

    reason = "RegistryUnavailable"
    retryable = True
