"""Parsing artifact references and validating OCI documents."""

from __future__ import annotations

import json

import pytest

from logicbundle.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    InvalidManifestError,
    InvalidReferenceError,
    Manifest,
    Reference,
    parse_manifest,
    sha256_digest,
)

DIGEST = "sha256:" + "a" * 64


def test_a_full_reference_parses_into_registry_port_repository_tag_and_digest() -> None:
    ref = Reference.parse(f"registry.example.com:5000/team/rules:v1.2@{DIGEST}")
    assert ref == Reference("registry.example.com:5000", "team/rules", "v1.2", DIGEST)
    assert ref.reference == DIGEST
    assert str(ref) == f"registry.example.com:5000/team/rules:v1.2@{DIGEST}"


@pytest.mark.parametrize(
    ("text", "tag", "digest"),
    [
        ("localhost/rules", None, None),
        ("127.0.0.1:5000/a/b/c:latest", "latest", None),
        (f"reg.io/rules@{DIGEST}", None, DIGEST),
    ],
)
def test_tags_and_digests_are_optional(text: str, tag: str | None, digest: str | None) -> None:
    ref = Reference.parse(text)
    assert (ref.tag, ref.digest) == (tag, digest)
    assert str(ref) == text


def test_a_port_is_not_mistaken_for_a_tag() -> None:
    ref = Reference.parse("reg.io:5000/rules")
    assert (ref.registry, ref.repository, ref.tag) == ("reg.io:5000", "rules", None)


@pytest.mark.parametrize(
    "text",
    [
        "rules:v1",  # no registry at all
        "library/rules:v1",  # Docker Hub is never assumed
        "reg.io/Rules:v1",  # repositories are lowercase
        "reg.io/rules:-bad",
        "reg.io/rules@sha256:abc",
        "reg.io/rules@md5:" + "a" * 32,
    ],
)
def test_malformed_references_are_rejected(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(text)


def test_a_reference_written_as_a_url_is_rejected_without_echoing_its_credentials() -> None:
    with pytest.raises(InvalidReferenceError) as caught:
        Reference.parse("https://robot:hunter2@reg.io/rules:v1?token=abc")
    assert "hunter2" not in str(caught.value)
    assert "token=abc" not in str(caught.value)


def test_a_reference_without_tag_or_digest_has_no_manifest_reference() -> None:
    with pytest.raises(InvalidReferenceError, match="neither a tag nor a digest"):
        _ = Reference.parse("reg.io/rules").reference


def _manifest(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": DIGEST, "size": 2},
        "layers": [],
    }
    document.update(changes)
    return document


def test_a_valid_manifest_parses_and_serialises_back_to_the_same_fields() -> None:
    parsed = parse_manifest(json.dumps(_manifest()).encode(), OCI_MANIFEST)
    assert isinstance(parsed, Manifest)
    assert json.loads(parsed.to_json_bytes()) == _manifest()


@pytest.mark.parametrize(
    "changes",
    [
        {"schemaVersion": 1},
        {"config": {"mediaType": "a/b", "digest": "sha256:" + "A" * 64, "size": 2}},
        {"config": {"mediaType": "a/b", "digest": DIGEST, "size": -1}},
        {"config": {"mediaType": "not a media type", "digest": DIGEST, "size": 1}},
        {"layers": "nope"},
    ],
)
def test_manifests_with_bad_digests_sizes_or_shapes_are_rejected(
    changes: dict[str, object],
) -> None:
    with pytest.raises(InvalidManifestError):
        parse_manifest(json.dumps(_manifest(**changes)).encode(), OCI_MANIFEST)


def test_a_manifest_served_as_an_index_is_rejected() -> None:
    with pytest.raises(InvalidManifestError, match="served as"):
        parse_manifest(json.dumps(_manifest()).encode(), OCI_INDEX)


def test_unknown_media_types_and_non_json_are_rejected() -> None:
    with pytest.raises(InvalidManifestError, match="unsupported"):
        parse_manifest(json.dumps(_manifest(mediaType="text/plain")).encode(), None)
    with pytest.raises(InvalidManifestError, match="not valid JSON"):
        parse_manifest(b"\xff{", OCI_MANIFEST)


def test_an_index_lists_its_descriptors_with_artifact_types() -> None:
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 3, "artifactType": "a/b"}
        ],
    }
    parsed = parse_manifest(json.dumps(body).encode(), OCI_INDEX)
    assert isinstance(parsed, Index)
    assert parsed.manifests == (
        Descriptor(media_type=OCI_MANIFEST, digest=DIGEST, size=3, artifact_type="a/b"),
    )


def test_sha256_digest_matches_the_oci_form() -> None:
    assert sha256_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
