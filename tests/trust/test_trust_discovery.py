"""Signature discovery, attachment and end-to-end verification against the mock registry.

The shapes checked here are what real cosign v3.1 writes (see the e2e interop suite, which
runs real cosign against a real registry): a Sigstore bundle referrer found through the
referrers API or the ``sha256-<hex>`` tag, and the legacy ``sha256-<hex>.sig`` tag.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from logicbundle.oci import (
    OCI_EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    DigestMismatchError,
    InvalidReferenceError,
    Reference,
    RegistryClient,
    RegistryUnavailableError,
    RetryPolicy,
    fallback_tag,
    sha256_digest,
)
from logicbundle.trust import (
    BUNDLE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    BundleSignature,
    CosignPublicKey,
    KeylessIdentity,
    LegacySignature,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    _discovery,
    attach_signature,
    discover_signatures,
    legacy_signature_tag,
    sign_keyless,
    sign_legacy_with_key,
    sign_with_key,
    verify_reference,
)
from tests.oci.mock_registry import MockRegistry
from tests.trust.sigstore_fixture import DEFAULT_ISSUER, DEFAULT_SUBJECT, PrivateSigstore

REPOSITORY = "team/rules"
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(params=["tag-fallback", "referrers-api"])
def registry(request: pytest.FixtureRequest) -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        running.state.referrers_api = request.param == "referrers-api"
        yield running


@pytest.fixture
def plain_registry() -> Iterator[MockRegistry]:
    """A registry without the referrers API, like Debian's distribution 2.8."""
    with MockRegistry() as running:
        yield running


def _client() -> RegistryClient:
    return RegistryClient(
        insecure=True,
        retry=RetryPolicy(attempts=3, initial_delay=1.0, jitter=False),
        sleep=lambda _: None,
        connect_timeout=5,
        read_timeout=5,
    )


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with _client() as made:
        yield made


@pytest.fixture(scope="module")
def key_pair() -> tuple[bytes, bytes]:
    return _pems()


def _pems() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _push_artifact(client: RegistryClient, registry: MockRegistry, seed: bytes) -> Reference:
    """Push a tiny artifact under tag v1; return its reference pinned to the digest."""
    target = Reference(registry.host, REPOSITORY, "v1")
    config, layer = b"{}", b"rules " + seed
    client.push_blob(target, config, media_type=OCI_EMPTY_CONFIG)
    client.push_blob(target, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.logicbundle.bundle.v1",
            "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": sha256_digest(config), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256_digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    descriptor = client.push_manifest(target, manifest, media_type=OCI_MANIFEST)
    return target.with_digest(descriptor.digest)


def _stored(registry: MockRegistry, digest: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(registry.state.manifests[digest][1])
    return document


def _key_policy(public: bytes) -> TrustPolicy:
    return TrustPolicy(keys=(CosignPublicKey(public),))


# --- attaching: exactly the manifest cosign v3 pushes ---------------------------------


def test_an_attached_bundle_is_a_referrer_manifest_shaped_like_cosigns(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    artifact = sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])

    pushed = attach_signature(client, subject, artifact, created=CREATED)

    data = registry.state.manifests[pushed.digest][1]
    subject_size = len(registry.state.manifests[subject.digest][1])
    bundle = artifact.content
    assert json.loads(data) == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_EMPTY_CONFIG,
            "size": 2,
            "digest": sha256_digest(b"{}"),
            "artifactType": BUNDLE_MEDIA_TYPE,
        },
        "layers": [
            {"mediaType": BUNDLE_MEDIA_TYPE, "size": len(bundle), "digest": sha256_digest(bundle)}
        ],
        "annotations": {
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
            "org.opencontainers.image.created": "2026-01-02T03:04:05Z",
        },
        "subject": {"mediaType": OCI_MANIFEST, "size": subject_size, "digest": subject.digest},
        "artifactType": BUNDLE_MEDIA_TYPE,
    }
    assert list(json.loads(data)) == [  # cosign's field order, byte for byte
        "schemaVersion",
        "mediaType",
        "config",
        "layers",
        "annotations",
        "subject",
        "artifactType",
    ]
    assert registry.state.blobs[sha256_digest(b"{}")] == b"{}"
    assert registry.state.blobs[sha256_digest(bundle)] == bundle
    assert pushed.digest == sha256_digest(data)


def test_without_a_referrers_api_the_bundle_is_indexed_under_the_digest_tag(
    plain_registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    artifact = sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    pushed = attach_signature(client, subject, artifact)

    index_digest = plain_registry.state.tags[(REPOSITORY, fallback_tag(subject.digest))]
    media_type, data = plain_registry.state.manifests[index_digest]
    assert media_type == OCI_INDEX
    entries = json.loads(data)["manifests"]
    assert [(e["digest"], e["artifactType"]) for e in entries] == [
        (pushed.digest, BUNDLE_MEDIA_TYPE)
    ]


def test_attaching_needs_a_digest(registry: MockRegistry, client: RegistryClient) -> None:
    artifact = sign_with_key(digest="sha256:" + "0" * 64, private_key_pem=_pems()[0])
    with pytest.raises(InvalidReferenceError, match="not pinned to a digest"):
        attach_signature(client, Reference(registry.host, REPOSITORY, "v1"), artifact)


# --- discovering ----------------------------------------------------------------------


def test_an_attached_bundle_is_discovered_and_verifies(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    artifact = sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    pushed = attach_signature(client, subject, artifact)

    found = discover_signatures(client, subject)

    assert found == [BundleSignature(content=artifact.content, source=f"referrer {pushed.digest}")]
    result = TrustVerifier().verify(
        digest=subject.digest, signatures=found, policy=_key_policy(key_pair[1])
    )
    assert result.method == "key-dsse"


def test_an_unsigned_artifact_has_no_signatures_and_a_missing_sig_tag_is_no_error(
    registry: MockRegistry, client: RegistryClient
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    assert discover_signatures(client, subject) == []
    assert registry.requests("GET", f"/manifests/{legacy_signature_tag(subject.digest)}")


def test_discovery_needs_a_digest(registry: MockRegistry, client: RegistryClient) -> None:
    with pytest.raises(InvalidReferenceError, match="resolve the tag first"):
        discover_signatures(client, Reference(registry.host, REPOSITORY, "v1"))


def test_legacy_signatures_are_appended_to_the_sig_tag_like_cosign_does(
    plain_registry: MockRegistry, client: RegistryClient
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    (first_key, first_pub), (second_key, second_pub) = _pems(), _pems()
    artifacts = [
        sign_legacy_with_key(
            digest=subject.digest,
            docker_reference=f"{plain_registry.host}/{REPOSITORY}",
            private_key_pem=key,
        )
        for key in (first_key, second_key)
    ]
    for artifact in artifacts:
        attach_signature(client, subject, artifact)
    last = attach_signature(client, subject, artifacts[1])  # again: not duplicated

    tag = legacy_signature_tag(subject.digest)
    assert plain_registry.state.tags[(REPOSITORY, tag)] == last.digest
    manifest = _stored(plain_registry, last.digest)
    layers = manifest["layers"]
    assert isinstance(layers, list)
    assert [layer["annotations"][SIGNATURE_ANNOTATION] for layer in layers] == [
        a.annotations[SIGNATURE_ANNOTATION] for a in artifacts
    ]
    assert {layer["mediaType"] for layer in layers} == {SIMPLE_SIGNING_MEDIA_TYPE}
    config = manifest["config"]
    assert isinstance(config, dict)
    assert config["mediaType"] == "application/vnd.oci.image.config.v1+json"
    image_config = json.loads(plain_registry.state.blobs[config["digest"]])
    assert image_config["rootfs"] == {
        "type": "layers",
        "diff_ids": [layer["digest"] for layer in layers],
    }
    assert len(image_config["history"]) == 2

    found = discover_signatures(client, subject)
    assert [type(s) for s in found] == [LegacySignature, LegacySignature]
    for public in (first_pub, second_pub):
        result = TrustVerifier().verify(
            digest=subject.digest, signatures=found, policy=_key_policy(public)
        )
        assert result.method == "key-legacy"


def test_bundles_and_legacy_signatures_are_discovered_together(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    attach_signature(
        client,
        subject,
        sign_legacy_with_key(
            digest=subject.digest,
            docker_reference=f"{registry.host}/{REPOSITORY}",
            private_key_pem=key_pair[0],
        ),
    )
    attach_signature(
        client, subject, sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    )
    found = discover_signatures(client, subject)
    assert [type(s) for s in found] == [BundleSignature, LegacySignature]


def test_a_signature_blob_larger_than_any_real_signature_is_never_downloaded(
    plain_registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    bundle = sign_with_key(digest=subject.digest, private_key_pem=key_pair[0]).content
    client.push_blob(subject, bundle)
    client.push_blob(subject, b"{}")
    subject_data = plain_registry.state.manifests[subject.digest][1]
    bomb = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_MEDIA_TYPE,
            "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": [
                {
                    "mediaType": BUNDLE_MEDIA_TYPE,
                    "digest": sha256_digest(bundle),
                    "size": 64 * 1024 * 1024,
                }
            ],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": subject.digest,
                "size": len(subject_data),
            },
        }
    ).encode()
    client.push_manifest(subject.with_tag(None), bomb, media_type=OCI_MANIFEST)

    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=subject, policy=_key_policy(key_pair[1]))

    assert "no signature was found" in caught.value.message
    assert "more than the limit" in caught.value.message
    assert not plain_registry.requests("GET", f"/blobs/{sha256_digest(bundle)}")


def test_a_referrer_indexed_under_the_wrong_subject_is_ignored(
    plain_registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    # Guards against a forged fallback index: the tag is mutable, the referrer is not.
    signed = _push_artifact(client, plain_registry, b"a")
    victim = _push_artifact(client, plain_registry, b"b")
    assert signed.digest is not None
    assert victim.digest is not None
    pushed = attach_signature(
        client, signed, sign_with_key(digest=signed.digest, private_key_pem=key_pair[0])
    )
    forged_tag = victim.with_tag(fallback_tag(victim.digest))
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": pushed.digest,
                "size": pushed.size,
                "artifactType": BUNDLE_MEDIA_TYPE,
            }
        ],
    }
    client.push_manifest(forged_tag, json.dumps(index).encode(), media_type=OCI_INDEX)

    assert discover_signatures(client, victim) == []


def test_an_unreachable_registry_is_an_error_not_an_unsigned_artifact(
    plain_registry: MockRegistry, client: RegistryClient
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    plain_registry.state.fail_next = [503] * 10
    with pytest.raises(RegistryUnavailableError):
        discover_signatures(client, subject)


# --- verifying a reference ------------------------------------------------------------


def test_a_tag_is_resolved_and_the_signed_digest_is_verified(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    attach_signature(
        client, subject, sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    )

    result = verify_reference(
        client=client,
        reference=Reference(registry.host, REPOSITORY, "v1"),
        policy=_key_policy(key_pair[1]),
        verifier=TrustVerifier(),
    )

    assert result.digest == subject.digest
    assert result.identity == CosignPublicKey(key_pair[1]).key_id


def test_a_keyless_signature_round_trips_through_the_registry(
    registry: MockRegistry, client: RegistryClient, sigstore: PrivateSigstore
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    artifact = sign_keyless(
        digest=subject.digest,
        identity_token=sigstore.identity_token(),
        signing_context=sigstore.signing_context(),
    )
    attach_signature(client, subject, artifact)

    result = verify_reference(
        client=client,
        reference=Reference(registry.host, REPOSITORY, "v1"),
        policy=TrustPolicy(
            identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject=DEFAULT_SUBJECT),)
        ),
        verifier=TrustVerifier(trusted_root=sigstore.trusted_root()),
    )

    assert (result.digest, result.identity, result.issuer, result.method) == (
        subject.digest,
        DEFAULT_SUBJECT,
        DEFAULT_ISSUER,
        "keyless-dsse",
    )


def test_an_unsigned_artifact_is_rejected_with_what_to_do(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    with pytest.raises(VerificationError) as caught:
        verify_reference(
            client=client,
            reference=Reference(registry.host, REPOSITORY, "v1"),
            policy=_key_policy(key_pair[1]),
        )
    assert f"no signature was found for {registry.host}/{REPOSITORY}@{subject.digest}" in (
        caught.value.message
    )
    assert caught.value.hint is not None
    assert "`logicbundle sign`" in caught.value.hint
    assert "`cosign sign`" in caught.value.hint


def test_a_signature_for_another_digest_is_rejected(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    signed = _push_artifact(client, registry, b"a")
    victim = _push_artifact(client, registry, b"b")
    assert signed.digest is not None
    assert victim.digest is not None
    attach_signature(
        client, victim, sign_with_key(digest=signed.digest, private_key_pem=key_pair[0])
    )
    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=victim, policy=_key_policy(key_pair[1]))
    assert f"the signature is for {signed.digest}, not for {victim.digest}" in str(caught.value)


def test_a_signature_by_another_key_is_rejected(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, registry, b"a")
    assert subject.digest is not None
    attach_signature(
        client, subject, sign_with_key(digest=subject.digest, private_key_pem=_pems()[0])
    )
    with pytest.raises(VerificationError, match="wrong key"):
        verify_reference(client=client, reference=subject, policy=_key_policy(key_pair[1]))


def test_a_registry_serving_manifest_bytes_that_do_not_match_the_digest_is_refused(
    plain_registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    attach_signature(
        client, subject, sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    )
    plain_registry.state.tamper_manifests = True
    with pytest.raises(DigestMismatchError):
        verify_reference(client=client, reference=subject, policy=_key_policy(key_pair[1]))


def test_no_more_than_the_candidate_limit_is_fetched(
    plain_registry: MockRegistry,
    client: RegistryClient,
    key_pair: tuple[bytes, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_discovery, "MAX_CANDIDATES", 2)
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    for _ in range(3):
        artifact = sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
        attach_signature(client, subject, artifact)

    assert len(discover_signatures(client, subject)) == 2


def test_a_legacy_signature_whose_payload_is_gone_is_named_in_the_error(
    plain_registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    subject = _push_artifact(client, plain_registry, b"a")
    assert subject.digest is not None
    artifact = sign_legacy_with_key(
        digest=subject.digest,
        docker_reference=f"{plain_registry.host}/{REPOSITORY}",
        private_key_pem=key_pair[0],
    )
    attach_signature(client, subject, artifact)
    del plain_registry.state.blobs[sha256_digest(artifact.content)]

    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=subject, policy=_key_policy(key_pair[1]))

    assert "no signature was found" in caught.value.message
    assert f"skipped tag {legacy_signature_tag(subject.digest)}" in caught.value.message


def test_a_digest_verified_once_stays_verified_without_reading_the_registry_again(
    registry: MockRegistry, client: RegistryClient, key_pair: tuple[bytes, bytes]
) -> None:
    """The signature covers the digest, wherever the bytes are stored; the cache says so."""
    subject = _push_artifact(client, registry, b"cached")
    assert subject.digest is not None
    attach_signature(
        client, subject, sign_with_key(digest=subject.digest, private_key_pem=key_pair[0])
    )
    verifier = TrustVerifier()
    policy = _key_policy(key_pair[1])
    tag = Reference(registry.host, REPOSITORY, "v1")
    first = verify_reference(client=client, reference=tag, policy=policy, verifier=verifier)
    assert verifier.cached(digest=subject.digest, policy=policy) == first
    # Another key's policy is a different question: not answered from the cache.
    other = _key_policy(_pems()[1])
    assert verifier.cached(digest=subject.digest, policy=other) is None
    with pytest.raises(VerificationError):
        verify_reference(client=client, reference=tag, policy=other, verifier=verifier)
    assert verify_reference(client=client, reference=tag, policy=policy, verifier=verifier) == first
