"""Cosign key signatures: the v3 key bundle (DSSE) and the legacy v2 simple-signing form."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from logicbundle.trust import (
    SIGNATURE_ANNOTATION,
    BundleSignature,
    CosignPublicKey,
    LegacySignature,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    sign_legacy_with_key,
    sign_with_key,
)

KeyFactory = Callable[[], PrivateKeyTypes]
KEYS: dict[str, KeyFactory] = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
}


def _pems(key: PrivateKeyTypes) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture(scope="module")
def p256() -> tuple[bytes, bytes]:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture
def verifier() -> TrustVerifier:
    return TrustVerifier()  # keys only: the public-good root is never even loaded


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_signed_bundle_round_trips(kind: str, verifier: TrustVerifier, digest: str) -> None:
    private, public = _pems(KEYS[kind]())
    artifact = sign_with_key(digest=digest, private_key_pem=private)
    policy = TrustPolicy(keys=(CosignPublicKey(public),))
    result = verifier.verify(
        digest=digest, signatures=[BundleSignature(artifact.content)], policy=policy
    )
    assert result.method == "key-dsse"
    assert result.identity == CosignPublicKey(public).key_id
    assert result.issuer is None


@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_a_legacy_simple_signing_signature_round_trips(
    kind: str, verifier: TrustVerifier, digest: str
) -> None:
    private, public = _pems(KEYS[kind]())
    artifact = sign_legacy_with_key(
        digest=digest, docker_reference="registry.test/bundles/pricing", private_key_pem=private
    )
    candidate = LegacySignature(artifact.content, artifact.annotations[SIGNATURE_ANNOTATION])
    policy = TrustPolicy(keys=(CosignPublicKey(public),))
    result = verifier.verify(digest=digest, signatures=[candidate], policy=policy)
    assert result.method == "key-legacy"


def test_the_key_bundle_has_the_shape_cosign_v3_writes(
    digest: str, p256: tuple[bytes, bytes]
) -> None:
    bundle = json.loads(sign_with_key(digest=digest, private_key_pem=p256[0]).content)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert set(bundle["verificationMaterial"]["publicKey"]) == {"hint"}
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert statement["subject"] == [{"digest": {"sha256": digest.removeprefix("sha256:")}}]


def test_a_key_message_signature_over_the_digest_is_verified(
    verifier: TrustVerifier, digest: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = bytes.fromhex(digest.removeprefix("sha256:"))
    signature = key.sign(raw, ec.ECDSA(Prehashed(hashes.SHA256())))
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": base64.b64encode(raw).decode()},
            "signature": base64.b64encode(signature).decode(),
        },
    }
    policy = TrustPolicy(keys=(CosignPublicKey(_pems(key)[1]),))
    result = verifier.verify(
        digest=digest, signatures=[BundleSignature(json.dumps(bundle).encode())], policy=policy
    )
    assert result.method == "key-message"


def test_a_bundle_signed_with_the_wrong_key_is_rejected(
    verifier: TrustVerifier, digest: str, p256: tuple[bytes, bytes]
) -> None:
    _, other_public = _pems(ec.generate_private_key(ec.SECP256R1()))
    artifact = sign_with_key(digest=digest, private_key_pem=p256[0])
    policy = TrustPolicy(keys=(CosignPublicKey(other_public),))
    with pytest.raises(VerificationError, match=r"does not verify with any policy key .*wrong key"):
        verifier.verify(
            digest=digest, signatures=[BundleSignature(artifact.content)], policy=policy
        )


def test_a_legacy_signature_with_the_wrong_key_is_rejected(
    verifier: TrustVerifier, digest: str, p256: tuple[bytes, bytes]
) -> None:
    _, other_public = _pems(ed25519.Ed25519PrivateKey.generate())
    artifact = sign_legacy_with_key(
        digest=digest, docker_reference="r.test/x", private_key_pem=p256[0]
    )
    candidate = LegacySignature(artifact.content, artifact.annotations[SIGNATURE_ANNOTATION])
    with pytest.raises(VerificationError, match="wrong key or the payload was altered"):
        verifier.verify(
            digest=digest,
            signatures=[candidate],
            policy=TrustPolicy(keys=(CosignPublicKey(other_public),)),
        )


def test_a_tampered_legacy_payload_is_rejected(
    verifier: TrustVerifier, digest: str, other_digest: str, p256: tuple[bytes, bytes]
) -> None:
    artifact = sign_legacy_with_key(
        digest=other_digest, docker_reference="r.test/x", private_key_pem=p256[0]
    )
    tampered = artifact.content.replace(other_digest.encode(), digest.encode())
    candidate = LegacySignature(tampered, artifact.annotations[SIGNATURE_ANNOTATION])
    with pytest.raises(VerificationError, match="wrong key or the payload was altered"):
        verifier.verify(
            digest=digest,
            signatures=[candidate],
            policy=TrustPolicy(keys=(CosignPublicKey(p256[1]),)),
        )


def test_a_legacy_signature_for_another_digest_is_rejected(
    verifier: TrustVerifier, digest: str, other_digest: str, p256: tuple[bytes, bytes]
) -> None:
    artifact = sign_legacy_with_key(
        digest=other_digest, docker_reference="r.test/x", private_key_pem=p256[0]
    )
    candidate = LegacySignature(artifact.content, artifact.annotations[SIGNATURE_ANNOTATION])
    with pytest.raises(
        VerificationError, match=f"the signature is for '{other_digest}', not for {digest}"
    ):
        verifier.verify(
            digest=digest,
            signatures=[candidate],
            policy=TrustPolicy(keys=(CosignPublicKey(p256[1]),)),
        )


def test_a_key_bundle_for_another_digest_is_rejected(
    verifier: TrustVerifier, digest: str, other_digest: str, p256: tuple[bytes, bytes]
) -> None:
    artifact = sign_with_key(digest=other_digest, private_key_pem=p256[0])
    with pytest.raises(
        VerificationError, match=f"the signature is for {other_digest}, not for {digest}"
    ):
        verifier.verify(
            digest=digest,
            signatures=[BundleSignature(artifact.content)],
            policy=TrustPolicy(keys=(CosignPublicKey(p256[1]),)),
        )


def test_a_key_bundle_is_rejected_when_the_policy_lists_only_identities(
    verifier: TrustVerifier, digest: str, p256: tuple[bytes, bytes], author_policy: TrustPolicy
) -> None:
    artifact = sign_with_key(digest=digest, private_key_pem=p256[0])
    with pytest.raises(VerificationError, match="the policy lists no keys"):
        verifier.verify(
            digest=digest, signatures=[BundleSignature(artifact.content)], policy=author_policy
        )


def test_the_cache_holds_one_policy_object_however_many_equal_policies_verify(
    p256: tuple[bytes, bytes], verifier: TrustVerifier
) -> None:
    """Each reconcile builds a new, equal policy (with its keys loaded into OpenSSL); the
    cache keeps the first, not one per digest (the soak of issue 11 saw them pile up)."""
    private, public = p256
    digests = ["sha256:" + f"{i:064x}" for i in range(20)]
    for digest in digests:
        artifact = sign_with_key(digest=digest, private_key_pem=private)
        verifier.verify(
            digest=digest,
            signatures=[BundleSignature(artifact.content)],
            policy=TrustPolicy(keys=(CosignPublicKey(public),)),
        )
    held = {id(policy) for _, policy in verifier._cache}
    assert len(verifier._cache) == len(digests)
    assert len(held) == 1
    again = TrustPolicy(keys=(CosignPublicKey(public),))
    assert verifier.cached(digest=digests[0], policy=again) is not None
