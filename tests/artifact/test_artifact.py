"""Bundles as OCI artifacts: pushed, fetched by digest, unpacked; packed into OCI layouts."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.artifact import (
    NotABundleError,
    fetch_bundle,
    oci_manifest,
    pull_bundle,
    push_directory,
    push_layout,
    read_layout,
    write_layout,
)
from logicbundle.bundle import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, pack_directory
from logicbundle.oci import OCI_MANIFEST, Reference, RegistryClient, sha256_digest
from tests.oci.helpers import manifest_bytes
from tests.oci.mock_registry import MockRegistry

INTERFACE = {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}}
META = {"name": "pricing", "version": "1.0.0", "interface": INTERFACE, "entrypoint": "rules:Rules"}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "rules.py").write_text("class Rules:\n    def price(self, item):\n        return 1.0\n")
    (src / "table.csv").write_text("a,1\nb,2\n")
    return src


@pytest.fixture
def client() -> Iterator[tuple[RegistryClient, MockRegistry]]:
    with MockRegistry() as registry, RegistryClient(insecure=True, sleep=lambda _: None) as made:
        yield made, registry


def test_a_pushed_directory_fetches_back_by_digest_and_unpacks_to_the_same_files(
    source: Path, client: tuple[RegistryClient, MockRegistry], tmp_path: Path
) -> None:
    registry_client, registry = client
    target = Reference(registry.host, "team/pricing", "v1")
    pushed = push_directory(registry_client, target, source, **META)  # type: ignore[arg-type]
    remote = fetch_bundle(registry_client, target)
    assert remote.digest == pushed.digest
    assert remote.reference.digest == pushed.digest
    assert remote.manifest == pushed.manifest
    unpacked = pull_bundle(registry_client, remote, tmp_path / "out" / "v1")
    assert (unpacked.path / "rules.py").read_text() == (source / "rules.py").read_text()
    assert sorted(p.name for p in unpacked.path.iterdir()) == ["rules.py", "table.csv"]


def test_the_oci_manifest_names_the_bundle_artifact_type_config_and_one_layer(
    source: Path,
) -> None:
    packed = pack_directory(source, **META)  # type: ignore[arg-type]
    document = json.loads(oci_manifest(packed))
    assert document["artifactType"] == ARTIFACT_TYPE
    assert document["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert [layer["mediaType"] for layer in document["layers"]] == [LAYER_MEDIA_TYPE]
    assert document["layers"][0]["digest"] == packed.layer_digest


def test_a_packed_layout_pushes_with_the_same_digest_as_a_pushed_directory(
    source: Path, client: tuple[RegistryClient, MockRegistry], tmp_path: Path
) -> None:
    registry_client, registry = client
    layout = tmp_path / "bundle.oci.tar"
    digest, manifest = write_layout(layout, source, **META)  # type: ignore[arg-type]
    assert read_layout(layout).digest == digest
    from_layout = push_layout(registry_client, layout, Reference(registry.host, "a/b", "v1"))
    from_dir = push_directory(
        registry_client,
        Reference(registry.host, "a/c", "v1"),
        source,
        **META,  # type: ignore[arg-type]
    )
    assert from_layout.digest == from_dir.digest == digest
    assert manifest.name == "pricing"


def test_packing_twice_gives_byte_identical_layouts(source: Path, tmp_path: Path) -> None:
    write_layout(tmp_path / "a.tar", source, **META)  # type: ignore[arg-type]
    write_layout(tmp_path / "b.tar", source, **META)  # type: ignore[arg-type]
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_failed_pack_leaves_no_output_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="no files"):
        write_layout(tmp_path / "out.tar", empty, **META)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_layout_with_a_tampered_blob_is_refused(source: Path, tmp_path: Path) -> None:
    layout = tmp_path / "bundle.oci.tar"
    digest, _ = write_layout(layout, source, **META)  # type: ignore[arg-type]
    tampered = tmp_path / "tampered.tar"
    with tarfile.open(layout) as src, tarfile.open(tampered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == f"blobs/sha256/{digest[7:]}":
                data = data.replace(b"pricing", b"pricinG")
            member.size = len(data)
            import io

            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(NotABundleError, match="does not match its digest"):
        read_layout(tampered)


def test_a_file_that_is_not_a_layout_is_refused_with_a_hint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(NotABundleError, match="not a logic bundle OCI layout") as exc:
        read_layout(junk)
    assert "logicbundle pack" in exc.value.diagnostics()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"artifact_type": "application/vnd.other"}, "artifactType"),
        ({"config_type": "application/vnd.oci.image.config.v1+json"}, "config media type"),
        ({"layers": [b"one", b"two"]}, "exactly one"),
    ],
    ids=["another artifact type", "an image config", "two layers"],
)
def test_an_artifact_that_is_not_a_bundle_is_refused(
    client: tuple[RegistryClient, MockRegistry], overrides: dict[str, object], message: str
) -> None:
    registry_client, registry = client
    target = Reference(registry.host, "team/other", "v1")
    config = b'{"name":"x"}'
    layers: list[bytes] = overrides.pop("layers", [b"layer"])  # type: ignore[assignment]
    for blob in [config, *layers]:
        registry_client.push_blob(target, blob)
    data = manifest_bytes(config=config, layers=layers, **overrides)  # type: ignore[arg-type]
    registry_client.push_manifest(target, data, media_type=OCI_MANIFEST)
    with pytest.raises(NotABundleError, match=message):
        fetch_bundle(registry_client, target)
    assert sha256_digest(data)  # the manifest itself was fine OCI
