"""Who may sign: the trust policy, and its keyless half as a sigstore ``VerificationPolicy``.

A policy is any-of: a keyless identity (an OIDC issuer, matched exactly, with a subject
matched exactly or by a regular expression) or a cosign public key. sigstore-python only
matches identities exactly, so :class:`IdentityPolicy` implements the regex form itself,
always anchored at both ends (``re.fullmatch``): ``.*@example\\.com`` must not accept
``mallory@example.com.evil``. An empty policy is refused (fail closed), as sigstore's own
``AnyOf``/``AllOf`` should be.

Policies are frozen and hashable because verification results are cached by
``(digest, policy)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sigstore.errors import VerificationError as SigstoreVerificationError

from logicbundle.trust._errors import VerificationError

_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_SIGSTORE_OTHERNAME = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")

CosignKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class KeylessIdentity:
    """One allowed keyless signer: an OIDC issuer and a subject (exact or regex).

    ``issuer`` is compared exactly with the certificate's OIDC issuer extension.
    Exactly one of ``subject`` (exact match with an email, URI or Sigstore SAN) and
    ``subject_regex`` (a Python regular expression that must match the *whole* SAN) is set.
    """

    issuer: str
    subject: str | None = None
    subject_regex: str | None = None
    _pattern: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.issuer:
            raise VerificationError(
                "a keyless identity needs an OIDC issuer",
                hint="Set issuer, e.g. https://token.actions.githubusercontent.com.",
            )
        if (self.subject is None) == (self.subject_regex is None):
            raise VerificationError(
                f"the keyless identity for issuer {self.issuer!r} must set exactly one of "
                "subject and subjectRegex",
                hint="Use subject for one signer, subjectRegex for a family of signers.",
            )
        if self.subject_regex is not None:
            try:
                pattern = re.compile(self.subject_regex)
            except re.error as exc:
                raise VerificationError(
                    f"subjectRegex {self.subject_regex!r} is not a valid regular expression: {exc}",
                    hint="The expression uses Python `re` syntax and must match the whole "
                    "subject; do not add ^ and $.",
                ) from None
            object.__setattr__(self, "_pattern", pattern)

    def matches(self, *, subject: str, issuer: str) -> bool:
        """Whether a certificate with this SAN and issuer is this signer."""
        if issuer != self.issuer:
            return False
        if self._pattern is not None:
            return self._pattern.fullmatch(subject) is not None
        return subject == self.subject

    def describe(self) -> str:
        who = (
            f"subject={self.subject!r}" if self.subject else f"subjectRegex={self.subject_regex!r}"
        )
        return f"{who} issuer={self.issuer!r}"


@dataclass(frozen=True)
class CosignPublicKey:
    """A cosign public key (PEM): ECDSA P-256/P-384, Ed25519 or RSA >= 2048 bits."""

    pem: bytes
    _key: CosignKey = field(init=False, repr=False, compare=False, hash=False)
    _key_id: str = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            key = serialization.load_pem_public_key(self.pem)
        except ValueError as exc:
            raise VerificationError(
                f"the public key is not a PEM-encoded public key: {exc}",
                hint="Pass the content of cosign.pub (`-----BEGIN PUBLIC KEY-----`).",
            ) from None
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
                raise VerificationError(
                    f"ECDSA curve {key.curve.name} is not supported",
                    hint="Use a P-256 key (`cosign generate-key-pair`).",
                )
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise VerificationError(
                    f"a {key.key_size}-bit RSA key is too weak",
                    hint="Use a P-256 key, or RSA of at least 2048 bits.",
                )
        elif not isinstance(key, ed25519.Ed25519PublicKey):
            raise VerificationError(
                f"{type(key).__name__} keys are not supported",
                hint="Use an ECDSA P-256, Ed25519 or RSA key.",
            )
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_key_id", "sha256:" + hashlib.sha256(spki).hexdigest())

    @property
    def key(self) -> CosignKey:
        return self._key

    @property
    def key_id(self) -> str:
        """``sha256:`` of the DER SubjectPublicKeyInfo: how results name a key signer."""
        return self._key_id


@dataclass(frozen=True)
class TrustPolicy:
    """Any-of: a signature passes when one identity or one key accepts it.

    Sequences are stored as tuples so that the policy is hashable (results are cached by
    ``(digest, policy)``). A policy with neither identities nor keys is refused.
    """

    identities: tuple[KeylessIdentity, ...] = ()
    keys: tuple[CosignPublicKey, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "identities", tuple(self.identities))
        object.__setattr__(self, "keys", tuple(self.keys))
        if not self.identities and not self.keys:
            raise VerificationError(
                "the trust policy allows no signer: it has neither keyless identities nor keys",
                hint="Set spec.verify.keyless (issuer + subject or subjectRegex) or "
                "spec.verify.keys; an empty policy never passes.",
            )


class IdentityNotAllowed(SigstoreVerificationError):
    """The signing certificate's identity is none of the allowed ones.

    Its own type, raised from inside sigstore's verification, so that the caller can tell it
    from sigstore's errors without reading the message (which quotes certificate fields).
    """


class IdentityPolicy:
    """A sigstore ``VerificationPolicy``: the certificate is one of the allowed identities."""

    def __init__(self, identities: Iterable[KeylessIdentity]) -> None:
        self._identities = tuple(identities)
        if not self._identities:
            raise VerificationError(
                "no keyless identity to verify against",
                hint="Add at least one issuer + subject/subjectRegex to the policy.",
            )

    def match(self, cert: x509.Certificate) -> tuple[str, str]:
        """The ``(subject, issuer)`` of the first allowed identity, or sigstore's error."""
        issuer = certificate_issuer(cert)
        subjects = certificate_subjects(cert)
        for identity in self._identities:
            for subject in subjects:
                if identity.matches(subject=subject, issuer=issuer):
                    return subject, issuer
        raise IdentityNotAllowed(
            f"the certificate identity {', '.join(map(repr, subjects)) or '(none)'} "
            f"issued by {issuer!r} is not allowed by the policy "
            f"(allowed: {'; '.join(i.describe() for i in self._identities)})"
        )

    def verify(self, cert: x509.Certificate) -> None:
        self.match(cert)


def certificate_issuer(cert: x509.Certificate) -> str:
    """The OIDC issuer: the DER extension (.1.8) if present, else the legacy raw one (.1.1)."""
    for oid, decode in ((_OIDC_ISSUER_V2, _der_utf8), (_OIDC_ISSUER_V1, _raw_utf8)):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        if isinstance(ext, x509.UnrecognizedExtension):
            return decode(ext.value)
    return ""


def certificate_subjects(cert: x509.Certificate) -> list[str]:
    """Every identity the SAN carries: emails, URIs and Sigstore's own other-name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    subjects: list[str] = [*san.get_values_for_type(x509.RFC822Name)]
    subjects += san.get_values_for_type(x509.UniformResourceIdentifier)
    subjects += [
        _der_utf8(other.value)
        for other in san.get_values_for_type(x509.OtherName)
        if other.type_id == _SIGSTORE_OTHERNAME
    ]
    return subjects


def _raw_utf8(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _der_utf8(raw: bytes) -> str:
    """Decode a DER UTF8String (tag 0x0C); malformed input decodes to an impossible value."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return "\ufffd"
    length, offset = raw[1], 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 2 or len(raw) < 2 + size:
            return "\ufffd"
        length, offset = int.from_bytes(raw[2 : 2 + size], "big"), 2 + size
    if len(raw) != offset + length:
        return "\ufffd"
    return raw[offset:].decode("utf-8", errors="replace")
