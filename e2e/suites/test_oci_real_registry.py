"""The registry client against a real registry: Debian's docker-registry (distribution 2.8).

Distribution 2.8 has no referrers API, so it exercises the ``sha256-<hex>``
tag fallback exactly as cosign uses it.  The registry is the harness's
(:mod:`e2e.harness.services`), shared by the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness.services import Registry
from logicbundle.oci import (
    OCI_MANIFEST,
    DigestMismatchError,
    Manifest,
    NotFoundError,
    Reference,
    RegistryClient,
    sha256_digest,
)
from tests.oci.helpers import SIGSTORE_BUNDLE, manifest_bytes


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(insecure=True, sleep=lambda _: None) as made:
        yield made


def _push_bundle(client: RegistryClient, target: Reference, seed: bytes) -> bytes:
    config = b'{"name":"rules","version":"1.0.0","seed":"' + seed + b'"}'
    layer = seed * 50_000
    client.push_blob(target, config)
    client.push_blob(target, layer)
    manifest = manifest_bytes(config=config, layers=[layer])
    client.push_manifest(target, manifest, media_type=OCI_MANIFEST)
    return manifest


def test_a_bundle_pushed_to_the_real_registry_resolves_and_pulls_back(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    target = Reference(registry.host, "team/rules", "v1")
    manifest = _push_bundle(client, target, b"a")
    descriptor = client.resolve(target)
    assert descriptor.digest == sha256_digest(manifest)
    pulled = client.pull_manifest(target.with_digest(descriptor.digest))
    assert pulled.data == manifest
    assert isinstance(pulled.manifest, Manifest)
    layer = pulled.manifest.layers[0]
    client.pull_blob_to(target, layer, tmp_path / "layer")
    assert sha256_digest((tmp_path / "layer").read_bytes()) == layer.digest
    assert "v1" in client.list_tags(target)


def test_the_real_registry_has_no_referrers_api_so_the_tag_fallback_is_used(
    registry: Registry, client: RegistryClient
) -> None:
    target = Reference(registry.host, "team/signed", "v1")
    manifest = _push_bundle(client, target, b"b")
    subject = target.with_digest(sha256_digest(manifest))
    assert client.referrers(subject) == ()
    signature, empty = b'{"sig":1}', b"{}"
    client.push_blob(target, signature)
    client.push_blob(target, empty)
    referrer = manifest_bytes(
        config=empty,
        config_type="application/vnd.oci.empty.v1+json",
        layers=[signature],
        artifact_type=SIGSTORE_BUNDLE,
        subject={"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(manifest)},
    )
    client.push_manifest(target.with_tag(None), referrer, media_type=OCI_MANIFEST)
    found = client.referrers(subject, artifact_type=SIGSTORE_BUNDLE)
    assert [d.digest for d in found] == [sha256_digest(referrer)]
    assert client.referrers(subject, artifact_type="application/other") == ()
    assert f"sha256-{sha256_digest(manifest)[7:]}" in client.list_tags(target)


def test_a_missing_tag_on_the_real_registry_is_not_found(
    registry: Registry, client: RegistryClient
) -> None:
    with pytest.raises(NotFoundError):
        client.resolve(Reference(registry.host, "team/rules", "does-not-exist"))


def test_asking_the_real_registry_for_a_digest_it_does_not_serve_is_an_error(
    registry: Registry, client: RegistryClient, tmp_path: Path
) -> None:
    target = Reference(registry.host, "team/rules", "v1")
    _push_bundle(client, target, b"c")
    wrong = sha256_digest(b"not in the registry")
    with pytest.raises((NotFoundError, DigestMismatchError)):
        client.pull_blob_to(target, wrong, tmp_path / "blob")
    assert list(tmp_path.iterdir()) == []
