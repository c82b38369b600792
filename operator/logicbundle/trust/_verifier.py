"""One call that decides whether an artifact digest is trusted, with a result cache.

``TrustVerifier.verify`` takes the manifest digest, every candidate signature discovery
found (Sigstore bundles and legacy cosign signatures) and the trust policy. It returns who
signed, or raises one :class:`VerificationError` that lists why each candidate failed. It is
pure: no network and no file writes; the registry I/O that finds candidates lives elsewhere.

Successful results are cached by ``(digest, policy)``: what is signed is the digest, and a
digest never changes content, so once a policy accepted it the answer stands. Failures are
not cached, so a signature pushed later is seen on the next attempt.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sigstore.errors import Error as SigstoreError
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier

from logicbundle.trust._errors import Rejection, VerificationError
from logicbundle.trust._keyless import verify_keyless
from logicbundle.trust._keys import verify_key_bundle, verify_legacy
from logicbundle.trust._policy import IdentityPolicy, TrustPolicy
from logicbundle.trust._roots import public_good_trusted_root
from logicbundle.trust._statement import Method, parse_digest
from logicbundle.trust._windows import WindowedRoot

_MAX_BUNDLE_BYTES = 1 << 20  # a real bundle is a few kB; refuse to parse megabytes


@dataclass(frozen=True)
class BundleSignature:
    """A Sigstore bundle (v0.3 JSON), keyless or key-signed, as cosign v3 attaches it.

    ``source`` says where discovery found it (e.g. the referrer's digest), for messages.
    """

    content: bytes
    source: str = ""


@dataclass(frozen=True)
class LegacySignature:
    """A cosign v2 signature: the simple-signing payload layer and its signature annotation.

    ``signature`` is the base64 value of the ``dev.cosignproject.cosign/signature``
    annotation.
    """

    payload: bytes
    signature: str
    source: str = ""


SignatureCandidate = BundleSignature | LegacySignature


@dataclass(frozen=True)
class Verified:
    """Proof that ``digest`` was signed by a signer the policy allows.

    ``identity`` is the certificate subject (email/URI) for keyless signatures and the key id
    (``sha256:`` of the public key) for key signatures; ``issuer`` is the OIDC issuer, or
    ``None`` for key signatures.
    """

    digest: str
    identity: str
    issuer: str | None
    method: Method


class TrustVerifier:
    """Verifies artifacts against one trusted root; safe to share between threads.

    ``trusted_root`` defaults to the Sigstore public-good root embedded in the sigstore
    package, loaded on first keyless use. ``cache_size`` bounds the number of remembered
    results (least recently used are dropped).
    """

    def __init__(self, *, trusted_root: TrustedRoot | None = None, cache_size: int = 4096) -> None:
        self._trusted_root = trusted_root
        self._windowed: WindowedRoot | None = None
        self._cache: OrderedDict[tuple[str, TrustPolicy], Verified] = OrderedDict()
        self._cache_size = cache_size
        self._policies: dict[TrustPolicy, TrustPolicy] = {}
        self._lock = threading.Lock()

    def verify(
        self,
        *,
        digest: str,
        signatures: Sequence[SignatureCandidate],
        policy: TrustPolicy,
    ) -> Verified:
        """Return who signed ``digest`` under ``policy``, or raise ``VerificationError``."""
        key = (digest, policy)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        result = self._verify(digest=digest, signatures=signatures, policy=policy)
        with self._lock:
            # One policy object per distinct policy in the keys: each holds loaded public
            # keys (OpenSSL memory, about 2 KiB each), and a reconcile builds a new, equal
            # policy every time (the soak of issue 11 saw them pile up, one per digest).
            if len(self._policies) >= self._cache_size:
                self._policies.clear()
            key = (digest, self._policies.setdefault(policy, policy))
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def cached(self, *, digest: str, policy: TrustPolicy) -> Verified | None:
        """The remembered result for ``(digest, policy)``, if that digest was verified."""
        with self._lock:
            return self._cache.get((digest, policy))

    def forget(self) -> None:
        """Drop every cached result (e.g. after the trust policy's keys were revoked)."""
        with self._lock:
            self._cache.clear()

    def _verify(
        self, *, digest: str, signatures: Sequence[SignatureCandidate], policy: TrustPolicy
    ) -> Verified:
        try:
            digest_bytes = parse_digest(digest)
        except ValueError as exc:
            raise VerificationError(
                str(exc),
                hint="Resolve the tag to its manifest digest first; tags are never trusted.",
            ) from None
        if not signatures:
            raise VerificationError(
                f"{digest} is not signed: no signature was found for it",
                hint="Sign the digest (`logicbundle sign` or `cosign sign`) and push the "
                "signature to the same repository.",
            )
        rejections: list[tuple[str, Rejection]] = []
        for number, candidate in enumerate(signatures, start=1):
            label = _label(number, candidate)
            try:
                return self._verify_one(
                    candidate, digest=digest, digest_bytes=digest_bytes, policy=policy
                )
            except Rejection as rejection:
                rejections.append((label, rejection))
        reasons = "\n".join(f"  - {label}: {r.message}" for label, r in rejections)
        hints = list(dict.fromkeys(r.hint for _, r in rejections))
        raise VerificationError(
            f"no signature of {digest} satisfies the trust policy; "
            f"{len(rejections)} candidate(s) rejected:\n{reasons}",
            hint=" ".join(hints),
        )

    def _verify_one(
        self,
        candidate: SignatureCandidate,
        *,
        digest: str,
        digest_bytes: bytes,
        policy: TrustPolicy,
    ) -> Verified:
        if isinstance(candidate, LegacySignature):
            key_id, method = verify_legacy(
                candidate.payload, candidate.signature, digest=digest, keys=policy.keys
            )
            return Verified(digest=digest, identity=key_id, issuer=None, method=method)
        document = _bundle_document(candidate.content)
        material = document.get("verificationMaterial")
        if isinstance(material, dict) and material.get("publicKey") is not None:
            key_id, method = verify_key_bundle(
                document, digest=digest, digest_bytes=digest_bytes, keys=policy.keys
            )
            return Verified(digest=digest, identity=key_id, issuer=None, method=method)
        if not policy.identities:
            raise Rejection(
                "the bundle is a keyless (certificate) signature, but the policy lists no "
                "keyless identities",
                hint="Add the signer's issuer and subject to spec.verify.keyless.",
            )
        try:
            bundle = Bundle.from_json(candidate.content)
        except (SigstoreError, ValueError) as exc:
            raise Rejection(
                f"the Sigstore bundle is malformed: {exc}",
                hint="Sign the artifact again; the attached bundle cannot be parsed.",
            ) from None
        identities = IdentityPolicy(policy.identities)

        def check(verifier: Verifier) -> tuple[str, str, Method]:
            return verify_keyless(
                bundle,
                digest=digest,
                digest_bytes=digest_bytes,
                policy=identities,
                verifier=verifier,
            )

        # Only with the keys the trusted root held valid when the bundle was signed.
        subject, issuer, method = self._windowed_root().verify(bundle, check)
        return Verified(digest=digest, identity=subject, issuer=issuer, method=method)

    def _windowed_root(self) -> WindowedRoot:
        # Built lazily: key-only deployments never parse the public-good root.
        if self._windowed is None:
            self._windowed = WindowedRoot(self._trusted_root or public_good_trusted_root())
        return self._windowed


def _bundle_document(content: bytes) -> dict[str, Any]:
    if len(content) > _MAX_BUNDLE_BYTES:
        raise Rejection(
            f"the bundle is {len(content)} bytes, more than a signature can need",
            hint="Do not trust this signature; sign the artifact again.",
        )
    try:
        document = json.loads(content)
    except ValueError as exc:
        raise Rejection(f"the bundle is not JSON: {exc}", hint="Sign the artifact again.") from None
    if not isinstance(document, dict):
        raise Rejection("the bundle is not a JSON object", hint="Sign the artifact again.")
    media_type = document.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise Rejection(
            f"{media_type!r} is not a Sigstore bundle media type",
            hint="Only Sigstore bundles (application/vnd.dev.sigstore.bundle.v0.3+json) are "
            "accepted.",
        )
    return document


def _label(number: int, candidate: SignatureCandidate) -> str:
    kind = "legacy cosign signature" if isinstance(candidate, LegacySignature) else "bundle"
    where = f" from {candidate.source}" if candidate.source else ""
    return f"signature {number} ({kind}{where})"


_default: TrustVerifier | None = None
_default_lock = threading.Lock()


def verify_artifact(
    *,
    digest: str,
    signatures: Sequence[SignatureCandidate],
    policy: TrustPolicy,
) -> Verified:
    """Verify with a process-wide :class:`TrustVerifier` on the public-good trusted root.

    Use your own ``TrustVerifier(trusted_root=...)`` for a private Sigstore instance.
    """
    return default_verifier().verify(digest=digest, signatures=signatures, policy=policy)


def default_verifier() -> TrustVerifier:
    """The process-wide verifier on the public-good trusted root (one shared cache)."""
    global _default  # noqa: PLW0603 - one shared cache per process is the point
    with _default_lock:
        if _default is None:
            _default = TrustVerifier()
        return _default
