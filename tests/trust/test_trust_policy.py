"""The trust policy: fail closed, validated on construction, hashable for the cache."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from logicbundle.errors import LogicBundleError
from logicbundle.trust import (
    BundleSignature,
    CosignPublicKey,
    KeylessIdentity,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    load_trusted_root,
)


def _public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(VerificationError, match="allows no signer") as caught:
        TrustPolicy()
    assert isinstance(caught.value, LogicBundleError)
    assert "an empty policy never passes" in caught.value.diagnostics()


def test_an_identity_needs_exactly_one_of_subject_and_subject_regex() -> None:
    with pytest.raises(VerificationError, match="exactly one of subject and subjectRegex"):
        KeylessIdentity(issuer="https://issuer.test")
    with pytest.raises(VerificationError, match="exactly one of subject and subjectRegex"):
        KeylessIdentity(issuer="https://issuer.test", subject="a@b.test", subject_regex=".*")


def test_an_identity_needs_an_issuer() -> None:
    with pytest.raises(VerificationError, match="needs an OIDC issuer"):
        KeylessIdentity(issuer="", subject="a@b.test")


def test_an_invalid_subject_regex_is_refused() -> None:
    with pytest.raises(VerificationError, match="not a valid regular expression"):
        KeylessIdentity(issuer="https://issuer.test", subject_regex="(unclosed")


def test_a_policy_is_hashable_and_equal_by_value() -> None:
    pem = _public_pem(ec.generate_private_key(ec.SECP256R1()))
    one = TrustPolicy(
        identities=[KeylessIdentity(issuer="https://i.test", subject_regex=".*")],  # type: ignore[arg-type]
        keys=[CosignPublicKey(pem)],  # type: ignore[arg-type]
    )
    two = TrustPolicy(
        identities=(KeylessIdentity(issuer="https://i.test", subject_regex=".*"),),
        keys=(CosignPublicKey(pem),),
    )
    assert one == two
    assert hash(one) == hash(two)
    assert isinstance(one.identities, tuple)


def test_a_weak_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    with pytest.raises(VerificationError, match="1024-bit RSA key is too weak"):
        CosignPublicKey(_public_pem(weak))


def test_an_unsupported_curve_is_refused() -> None:
    with pytest.raises(VerificationError, match="curve secp521r1 is not supported"):
        CosignPublicKey(_public_pem(ec.generate_private_key(ec.SECP521R1())))


def test_a_key_that_is_not_pem_is_refused() -> None:
    with pytest.raises(VerificationError, match="not a PEM-encoded public key"):
        CosignPublicKey(b"ssh-ed25519 AAAA")


def test_a_digest_that_is_not_a_sha256_manifest_digest_is_refused(
    author_policy: TrustPolicy,
) -> None:
    with pytest.raises(VerificationError, match="not a manifest digest") as caught:
        TrustVerifier().verify(
            digest="latest", signatures=[BundleSignature(b"{}")], policy=author_policy
        )
    assert "tags are never trusted" in str(caught.value)


def test_a_malformed_trusted_root_is_refused() -> None:
    with pytest.raises(VerificationError, match=r"not a valid Sigstore trusted_root\.json"):
        load_trusted_root(b'{"mediaType": "nope"}')


def test_a_bundle_with_an_unknown_media_type_is_rejected(
    author_policy: TrustPolicy, digest: str
) -> None:
    with pytest.raises(VerificationError, match="is not a Sigstore bundle media type"):
        TrustVerifier().verify(
            digest=digest,
            signatures=[BundleSignature(b'{"mediaType": "text/plain"}')],
            policy=author_policy,
        )


def test_subject_regex_is_documented_in_the_python_re_syntax_it_is_compiled_with() -> None:
    from logicbundle.api import Identity

    description = Identity.model_fields["subject_regex"].description or ""
    assert "Python `re` syntax" in description
    assert "(RE2 syntax)" not in description
    # A negative lookahead is Python `re`, not RE2: what the documentation promises works.
    identity = KeylessIdentity(
        issuer="https://issuer.test", subject_regex=r"(?!mallory@).*@b\.test"
    )
    assert identity.matches(subject="alice@b.test", issuer="https://issuer.test")
    assert not identity.matches(subject="mallory@b.test", issuer="https://issuer.test")


@pytest.mark.parametrize(
    "secret",
    [
        b"hunter2-password-in-some-other-secret",
        b'{"mediaType": "s3cr3t-t0ken-value", "tlogs": "AKIAEXAMPLEKEY"}',
        b'{"tlogs": [{"baseUrl": "https://user:p4ss@example.com"}]}',
    ],
)
def test_a_trusted_root_pointed_at_another_secret_never_quotes_its_content(secret: bytes) -> None:
    """Guards against reading any Secret through trustedRootRef: the error lands in events."""
    with pytest.raises(VerificationError) as raised:
        load_trusted_root(secret)
    text = str(raised.value) + raised.value.diagnostics()
    for fragment in (b"hunter2", b"s3cr3t", b"AKIA", b"p4ss", b"password"):
        assert fragment.decode() not in text, text
    assert "not a valid Sigstore trusted_root.json" in text
