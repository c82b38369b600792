"""Shared fixtures: one private Sigstore instance per session, and bundles named after the
attack or mistake each one guards against."""

from __future__ import annotations

import hashlib

import pytest

from logicbundle.trust import KeylessIdentity, TrustPolicy, TrustVerifier, load_trusted_root
from tests.trust.sigstore_fixture import (
    DEFAULT_ISSUER,
    DEFAULT_SUBJECT,
    BundleFlaw,
    PrivateSigstore,
)


@pytest.fixture(scope="session")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


@pytest.fixture
def verifier(sigstore: PrivateSigstore) -> TrustVerifier:
    return TrustVerifier(trusted_root=load_trusted_root(sigstore.trusted_root_json()))


@pytest.fixture(scope="session")
def digest() -> str:
    return "sha256:" + hashlib.sha256(b'{"schemaVersion":2,"layers":[]}').hexdigest()


@pytest.fixture(scope="session")
def other_digest() -> str:
    return "sha256:" + hashlib.sha256(b"another manifest").hexdigest()


@pytest.fixture(scope="session")
def author_policy() -> TrustPolicy:
    return TrustPolicy(
        identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject=DEFAULT_SUBJECT),)
    )


# --- regression fixtures, named after what they guard against ---


@pytest.fixture(scope="session")
def bundle_whose_checkpoint_was_tampered(sigstore: PrivateSigstore, digest: str) -> bytes:
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.TAMPERED_CHECKPOINT)


@pytest.fixture(scope="session")
def bundle_whose_log_entry_body_was_tampered(sigstore: PrivateSigstore, digest: str) -> bytes:
    # Guards against reporting it as a tampered checkpoint: sigstore's inclusion proof error
    # quotes the proof, checkpoint and all.
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.TAMPERED_LOG_ENTRY_BODY)


@pytest.fixture(scope="session")
def bundle_whose_certificate_has_no_sct(sigstore: PrivateSigstore, digest: str) -> bytes:
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.MISSING_SCT)


@pytest.fixture(scope="session")
def bundle_signed_after_its_certificate_expired(sigstore: PrivateSigstore, digest: str) -> bytes:
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.CERT_OUTSIDE_VALIDITY)


@pytest.fixture(scope="session")
def bundle_from_an_untrusted_ca(sigstore: PrivateSigstore, digest: str) -> bytes:
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.UNTRUSTED_CA)


@pytest.fixture(scope="session")
def bundle_whose_payload_was_tampered(sigstore: PrivateSigstore, digest: str) -> bytes:
    return sigstore.keyless_bundle(digest, flaw=BundleFlaw.TAMPERED_PAYLOAD)


@pytest.fixture(scope="session")
def bundle_for_another_digest(sigstore: PrivateSigstore, other_digest: str) -> bytes:
    return sigstore.keyless_bundle(other_digest)


@pytest.fixture(scope="session")
def bundle_whose_subject_has_an_evil_suffix(sigstore: PrivateSigstore, digest: str) -> bytes:
    # Guards against unanchored regexes: `.*@logicbundle\.test` must not accept this.
    return sigstore.keyless_bundle(digest, subject="mallory@logicbundle.test.evil.example")
