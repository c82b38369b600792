"""Keyless verification through logicbundle.trust, against the private Sigstore fixture."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from sigstore.errors import VerificationError as SigstoreVerificationError

from logicbundle.trust import (
    BundleSignature,
    KeylessIdentity,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    load_trusted_root,
    public_good_trusted_root,
    sign_keyless,
)
from logicbundle.trust._keyless import rejection_for
from logicbundle.trust._policy import IdentityNotAllowed
from tests.trust.sigstore_fixture import (
    DEFAULT_ISSUER,
    DEFAULT_SUBJECT,
    BundleFlaw,
    PrivateSigstore,
    in_toto_statement,
)


def _reject(verifier: TrustVerifier, digest: str, bundle: bytes, policy: TrustPolicy) -> str:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(digest=digest, signatures=[BundleSignature(bundle)], policy=policy)
    return str(caught.value)


# --- acceptance ---


def test_a_cosign_sign_dsse_bundle_from_an_allowed_identity_is_verified(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    result = verifier.verify(
        digest=digest,
        signatures=[BundleSignature(sigstore.keyless_bundle(digest))],
        policy=author_policy,
    )
    assert (result.digest, result.identity, result.issuer, result.method) == (
        digest,
        DEFAULT_SUBJECT,
        DEFAULT_ISSUER,
        "keyless-dsse",
    )


def test_a_hashedrekord_bundle_over_the_manifest_digest_is_verified(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    bundle = sigstore.keyless_bundle(digest, kind="hashedrekord")
    result = verifier.verify(
        digest=digest, signatures=[BundleSignature(bundle)], policy=author_policy
    )
    assert result.method == "keyless-hashedrekord"
    assert result.identity == DEFAULT_SUBJECT


def test_sign_keyless_round_trips_through_the_private_sigstore(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    artifact = sign_keyless(
        digest=digest,
        identity_token=sigstore.identity_token(),
        signing_context=sigstore.signing_context(),
        name="registry.test/bundles/pricing",
    )
    assert artifact.artifact_type == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert artifact.annotations["dev.sigstore.bundle.predicateType"] == (
        "https://sigstore.dev/cosign/sign/v1"
    )
    result = verifier.verify(
        digest=digest, signatures=[BundleSignature(artifact.content)], policy=author_policy
    )
    assert result.identity == DEFAULT_SUBJECT


def test_a_uri_subject_is_matched_by_an_anchored_regex(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str
) -> None:
    workflow = "https://github.com/acme/bundles/.github/workflows/release.yml@refs/tags/v1.2.3"
    bundle = sigstore.keyless_bundle(digest, subject=workflow)
    policy = TrustPolicy(
        identities=(
            KeylessIdentity(
                issuer=DEFAULT_ISSUER,
                subject_regex=r"https://github\.com/acme/bundles/\.github/workflows/release\.yml@refs/tags/v.*",
            ),
        )
    )
    result = verifier.verify(digest=digest, signatures=[BundleSignature(bundle)], policy=policy)
    assert result.identity == workflow


def test_any_one_valid_signature_among_broken_ones_is_enough(
    sigstore: PrivateSigstore,
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_checkpoint_was_tampered: bytes,
) -> None:
    signatures = [
        BundleSignature(b"not json", source="sha256-tag"),
        BundleSignature(bundle_whose_checkpoint_was_tampered),
        BundleSignature(sigstore.keyless_bundle(digest), source="referrer"),
    ]
    result = verifier.verify(digest=digest, signatures=signatures, policy=author_policy)
    assert result.identity == DEFAULT_SUBJECT


def test_a_verified_digest_is_served_from_the_cache(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    first = verifier.verify(
        digest=digest,
        signatures=[BundleSignature(sigstore.keyless_bundle(digest))],
        policy=author_policy,
    )
    # No signatures at all: only a cache hit can answer.
    assert verifier.verify(digest=digest, signatures=[], policy=author_policy) is first
    verifier.forget()
    with pytest.raises(VerificationError, match="is not signed"):
        verifier.verify(digest=digest, signatures=[], policy=author_policy)


def test_a_failed_verification_is_not_cached(
    sigstore: PrivateSigstore,
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_for_another_digest: bytes,
) -> None:
    _reject(verifier, digest, bundle_for_another_digest, author_policy)
    good = BundleSignature(sigstore.keyless_bundle(digest))
    assert verifier.verify(digest=digest, signatures=[good], policy=author_policy).digest == digest


def test_verification_needs_no_network_and_writes_nothing_under_home(
    sigstore: PrivateSigstore,
    digest: str,
    author_policy: TrustPolicy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    monkeypatch.setenv("HOME", str(home))
    for variable in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(variable, raising=False)

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access during verification: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    verifier = TrustVerifier(trusted_root=load_trusted_root(sigstore.trusted_root_json()))
    bundle = BundleSignature(sigstore.keyless_bundle(digest))
    assert verifier.verify(digest=digest, signatures=[bundle], policy=author_policy)
    public_good_trusted_root()
    assert list(home.iterdir()) == []


def test_the_public_good_trusted_root_is_read_from_the_sigstore_wheel() -> None:
    root = public_good_trusted_root()
    assert root.get_fulcio_certs()
    assert any(t.base_url == "https://rekor.sigstore.dev" for t in root._inner.tlogs)


# --- rejections, one reason each ---


def test_a_tampered_payload_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_payload_was_tampered: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_whose_payload_was_tampered, author_policy)
    assert "signature does not match the signed content" in message


def test_a_signature_for_another_digest_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    other_digest: str,
    author_policy: TrustPolicy,
    bundle_for_another_digest: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_for_another_digest, author_policy)
    assert f"the signature is for {other_digest}, not for {digest}" in message


def test_a_hashedrekord_signature_for_another_digest_is_rejected(
    sigstore: PrivateSigstore,
    verifier: TrustVerifier,
    digest: str,
    other_digest: str,
    author_policy: TrustPolicy,
) -> None:
    bundle = sigstore.keyless_bundle(other_digest, kind="hashedrekord")
    message = _reject(verifier, digest, bundle, author_policy)
    assert "the signature is for another artifact digest" in message


def test_a_wrong_identity_is_rejected(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    bundle = sigstore.keyless_bundle(digest, subject="mallory@logicbundle.test")
    message = _reject(verifier, digest, bundle, author_policy)
    assert "'mallory@logicbundle.test'" in message
    assert "is not allowed by the policy" in message
    assert "Hint: Add the signer to spec.verify.keyless" in message


def test_a_wrong_issuer_is_rejected(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    bundle = sigstore.keyless_bundle(digest, issuer="https://evil-issuer.example")
    message = _reject(verifier, digest, bundle, author_policy)
    assert "issued by 'https://evil-issuer.example' is not allowed by the policy" in message


def test_an_identity_regex_that_matches_only_part_of_the_subject_is_rejected(
    verifier: TrustVerifier, digest: str, bundle_whose_subject_has_an_evil_suffix: bytes
) -> None:
    policy = TrustPolicy(
        identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject_regex=r".*@logicbundle\.test"),)
    )
    message = _reject(verifier, digest, bundle_whose_subject_has_an_evil_suffix, policy)
    assert "'mallory@logicbundle.test.evil.example'" in message
    assert "is not allowed by the policy" in message


def test_a_certificate_from_an_untrusted_ca_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_from_an_untrusted_ca: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_from_an_untrusted_ca, author_policy)
    assert "does not chain to a certificate authority in the trusted root" in message


def test_a_certificate_used_outside_its_validity_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_signed_after_its_certificate_expired: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_signed_after_its_certificate_expired, author_policy)
    assert "used outside its validity period" in message


def test_a_tampered_checkpoint_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_checkpoint_was_tampered: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_whose_checkpoint_was_tampered, author_policy)
    assert "tampered checkpoint" in message


def test_a_tampered_log_entry_body_is_rejected_as_not_included_not_as_a_tampered_checkpoint(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_log_entry_body_was_tampered: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_whose_log_entry_body_was_tampered, author_policy)
    assert "the transparency log entry does not prove inclusion of this signature" in message
    assert "checkpoint" not in message


def test_a_tampered_hashedrekord_log_entry_body_is_rejected_as_not_included(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    bundle = sigstore.keyless_bundle(
        digest, kind="hashedrekord", flaw=BundleFlaw.TAMPERED_LOG_ENTRY_BODY
    )
    message = _reject(verifier, digest, bundle, author_policy)
    assert "the transparency log entry does not prove inclusion of this signature" in message
    assert "checkpoint" not in message


@pytest.mark.parametrize(
    ("message", "meaning"),
    [
        # The inclusion proof error quotes the proof, checkpoint note and all: words the log
        # (or whoever forged the entry) chose.
        (
            "invalid log entry: inclusion proof contains invalid root hash: expected "
            "log_index=5 root_hash=b'SCT' checkpoint=Checkpoint(envelope='checkpoint: "
            "DSSE: invalid signature, not allowed by the policy')",
            "does not prove inclusion of this signature",
        ),
        ("invalid log entry: inclusion proof has wrong size: expected 3, got 2", "inclusion"),
        ("invalid log entry: SET: invalid inclusion promise: bad", "inclusion"),
        (
            "invalid log entry: ('Inclusion proof contains invalid root hash signature: ', "
            "'expected aa got bb')",
            "does not prove inclusion of this signature",
        ),
        ("invalid log entry: checkpoint: invalid signature: keyring: bad", "tampered checkpoint"),
        ("invalid log entry: malformed LogCheckpoint: empty origin", "tampered checkpoint"),
        # cryptography's chain error quotes the certificate's subject, which the signer chose.
        (
            "failed to build timestamp certificate chain: validation failed: candidates "
            "exhausted (encountered processing <Certificate(subject=<Name(CN=cert is not "
            "valid at validation time, SCT)>, ...)>)",
            "(untrusted CA)",
        ),
        (
            "failed to build timestamp certificate chain: validation failed: cert is not "
            "valid at validation time (encountered processing <Certificate(...)>)",
            "used outside its validity period",
        ),
        ("log entry payload hash does not match bundle", "does not prove inclusion"),
        ("not enough sources of verified time", "sigstore rejected the bundle: not enough"),
    ],
)
def test_a_sigstore_error_is_classified_by_how_it_starts_not_by_the_words_it_quotes(
    message: str, meaning: str
) -> None:
    assert meaning in rejection_for(SigstoreVerificationError(message)).message


def test_an_identity_the_policy_does_not_allow_is_reported_in_its_own_words() -> None:
    message = "the certificate identity 'checkpoint SCT' ... is not allowed by the policy"
    rejection = rejection_for(IdentityNotAllowed(message))
    assert rejection.message == message
    assert rejection.hint.startswith("Add the signer to spec.verify.keyless")


def test_a_certificate_without_an_sct_is_rejected(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_certificate_has_no_sct: bytes,
) -> None:
    message = _reject(verifier, digest, bundle_whose_certificate_has_no_sct, author_policy)
    assert "no valid signed certificate timestamp (SCT)" in message


def test_an_attestation_is_not_accepted_as_a_signature(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    statement = in_toto_statement(digest, predicate_type="https://slsa.dev/provenance/v1")
    message = _reject(
        verifier, digest, sigstore.keyless_bundle(digest, statement=statement), author_policy
    )
    assert "predicateType is 'https://slsa.dev/provenance/v1'" in message


def test_a_dsse_payload_that_is_not_in_toto_is_rejected(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    bundle = sigstore.keyless_bundle(digest, payload_type="text/plain")
    message = _reject(verifier, digest, bundle, author_policy)
    assert "payload type is 'text/plain'" in message


def test_an_unsigned_artifact_is_rejected(
    verifier: TrustVerifier, digest: str, author_policy: TrustPolicy
) -> None:
    with pytest.raises(VerificationError, match=f"{digest} is not signed"):
        verifier.verify(digest=digest, signatures=[], policy=author_policy)


def test_a_keyless_bundle_is_rejected_when_the_policy_lists_only_keys(
    sigstore: PrivateSigstore, verifier: TrustVerifier, digest: str
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from logicbundle.trust import CosignPublicKey

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    policy = TrustPolicy(keys=(CosignPublicKey(pem),))
    message = _reject(verifier, digest, sigstore.keyless_bundle(digest), policy)
    assert "the policy lists no keyless identities" in message


def test_every_rejected_candidate_is_listed_with_its_reason(
    verifier: TrustVerifier,
    digest: str,
    author_policy: TrustPolicy,
    bundle_whose_checkpoint_was_tampered: bytes,
    bundle_whose_certificate_has_no_sct: bytes,
) -> None:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(
            digest=digest,
            signatures=[
                BundleSignature(bundle_whose_checkpoint_was_tampered, source="referrer sha256:aa"),
                BundleSignature(bundle_whose_certificate_has_no_sct, source="tag sha256-bb"),
            ],
            policy=author_policy,
        )
    message = str(caught.value)
    assert "2 candidate(s) rejected" in message
    assert (
        "signature 1 (bundle from referrer sha256:aa): the transparency log checkpoint" in message
    )
    assert (
        "signature 2 (bundle from tag sha256-bb): the signing certificate carries no valid"
        in message
    )
    assert caught.value.reason == "VerificationFailed"
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("field", "named"),
    [
        ("certificateAuthorities", "certificate authorities"),
        ("tlogs", r"transparency logs \(Rekor\)"),
        ("ctlogs", "certificate transparency logs"),
    ],
)
def test_a_trusted_root_without_cas_logs_or_ct_logs_is_refused_when_loaded(
    sigstore: PrivateSigstore, field: str, named: str
) -> None:
    """Issue 11, defect 3: sigstore failed later with its own exception, on every retry."""
    import json

    document = json.loads(sigstore.trusted_root_json())
    assert document[field]
    document[field] = []
    with pytest.raises(VerificationError, match=named) as caught:
        load_trusted_root(json.dumps(document))
    assert "keyless signatures cannot be verified" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "spoil", "named"),
    [
        (
            "certificateAuthorities",
            lambda entry: entry["certChain"].update(certificates=[]),
            "certificate authority 1 has no certificate",
        ),
        (
            "certificateAuthorities",
            lambda entry: entry["certChain"]["certificates"][0].update(rawBytes="bm90IERFUg=="),
            "certificate authority 1 holds a certificate that does not parse",
        ),
        (
            "tlogs",
            lambda entry: entry["publicKey"].update(rawBytes="bm90IERFUg=="),
            "transparency log 1 has a public key that does not parse",
        ),
        (
            "ctlogs",
            lambda entry: entry["publicKey"].pop("rawBytes"),
            "CT log 1 has no public key",
        ),
    ],
)
def test_a_trusted_root_whose_ca_or_log_cannot_be_loaded_is_refused_when_loaded(
    sigstore: PrivateSigstore, field: str, spoil: Any, named: str
) -> None:
    """Issue 11, defect 3: such a root loaded, then every keyless verification raised
    sigstore's own exception (an empty chain) or verified with nothing (a bad key)."""
    import json

    document = json.loads(sigstore.trusted_root_json())
    spoil(document[field][0])
    with pytest.raises(VerificationError) as caught:
        load_trusted_root(json.dumps(document))
    assert f"the trusted root's {named}: keyless signatures cannot rely on it" in str(caught.value)
    assert "bm90IERFUg" not in str(caught.value)  # nothing of the content is quoted


def test_the_public_good_and_staging_roots_in_the_sigstore_wheel_load() -> None:
    from importlib import resources

    for instance in ("tuf-repo-cdn.sigstore.dev", "tuf-repo-cdn.sigstage.dev"):
        asset = resources.files("sigstore._store").joinpath(
            f"https%3A%2F%2F{instance}", "trusted_root.json"
        )
        assert load_trusted_root(asset.read_bytes())
