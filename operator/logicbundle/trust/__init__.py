"""Trust: decide whether a logic bundle's manifest digest was signed by an allowed signer.

Nothing reaches a pod unless :meth:`TrustVerifier.verify` accepted its digest. Keyless
signatures (Sigstore bundles) are verified by sigstore-python against a trusted root read
from bytes (public-good by default, never refreshed from the network, nothing written to
``$HOME``); cosign key signatures are verified with ``cryptography``. The policy is any-of,
fail closed, and results are cached by ``(digest, policy)``.

Finding and attaching signatures in a registry, the way cosign v3 does (Sigstore bundle
referrers, and the legacy ``sha256-<hex>.sig`` tag), is :func:`discover_signatures` and
:func:`attach_signature`; :func:`verify_reference` does it all for a tag or digest.
"""

from logicbundle.trust._discovery import (
    MAX_SIGNATURE_BYTES,
    attach_signature,
    discover_signatures,
    legacy_signature_tag,
    verify_reference,
)
from logicbundle.trust._errors import SigningError, VerificationError
from logicbundle.trust._policy import CosignPublicKey, KeylessIdentity, TrustPolicy
from logicbundle.trust._roots import (
    load_trusted_root,
    load_trusted_root_file,
    public_good_trusted_root,
)
from logicbundle.trust._sign import (
    BUNDLE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    SignatureArtifact,
    cosign_statement,
    public_good_signing_context,
    sign_keyless,
    sign_legacy_with_key,
    sign_with_key,
    signing_context_from_config,
)
from logicbundle.trust._statement import (
    COSIGN_SIGN_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    Method,
)
from logicbundle.trust._verifier import (
    BundleSignature,
    LegacySignature,
    SignatureCandidate,
    TrustVerifier,
    Verified,
    verify_artifact,
)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "COSIGN_SIGN_PREDICATE_TYPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "BundleSignature",
    "CosignPublicKey",
    "KeylessIdentity",
    "LegacySignature",
    "Method",
    "SignatureArtifact",
    "SignatureCandidate",
    "SigningError",
    "TrustPolicy",
    "TrustVerifier",
    "VerificationError",
    "Verified",
    "attach_signature",
    "cosign_statement",
    "discover_signatures",
    "legacy_signature_tag",
    "load_trusted_root",
    "load_trusted_root_file",
    "public_good_signing_context",
    "public_good_trusted_root",
    "sign_keyless",
    "sign_legacy_with_key",
    "sign_with_key",
    "signing_context_from_config",
    "verify_artifact",
    "verify_reference",
]
