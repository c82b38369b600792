"""Packing is deterministic, normalises metadata, and refuses what the unpacker would refuse."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest

from logicbundle.bundle import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    InvalidManifestError,
    LinkInSourceError,
    PackedBundle,
    PackError,
    UnsupportedSourceFileError,
    collect_source_files,
    layer_digest,
    pack_directory,
    pack_directory_to,
    sha256_digest,
)

from .conftest import SAMPLE_FILES, SAMPLE_INTERFACE, WriteTree


def pack(source: Path, **overrides: Any) -> PackedBundle:
    kwargs: dict[str, Any] = {
        "name": "pricing-rules",
        "version": "1.0.0",
        "interface": SAMPLE_INTERFACE,
        "entrypoint": "rules:decide",
    }
    kwargs.update(overrides)
    return pack_directory(source, **kwargs)


def members(layer: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tar:
        return tar.getmembers()


def test_the_media_types_are_the_documented_ones() -> None:
    assert ARTIFACT_TYPE == "application/vnd.logicbundle.bundle.v1"
    assert CONFIG_MEDIA_TYPE == "application/vnd.logicbundle.bundle.config.v1+json"
    assert LAYER_MEDIA_TYPE == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_packing_the_same_directory_twice_gives_the_same_bytes(make_tree: WriteTree) -> None:
    source = make_tree()
    first, second = pack_directory_twice(source)
    assert first.layer == second.layer
    assert first.layer_digest == second.layer_digest
    assert first.config_digest == second.config_digest


def pack_directory_twice(source: Path) -> tuple[PackedBundle, PackedBundle]:
    return pack(source), pack(source)


def test_times_owners_and_permission_noise_do_not_change_the_digest(
    make_tree: WriteTree, tmp_path: Path
) -> None:
    original = make_tree()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    for index, path in enumerate(sorted(copy.rglob("*"))):
        os.utime(path, (1_000_000 + index, 2_000_000 + index))
        if path.is_file():
            path.chmod(0o700 if path.name == "refresh.sh" else 0o600)
    assert pack(original).layer_digest == pack(copy).layer_digest


def test_content_changes_change_the_digest(make_tree: WriteTree) -> None:
    before = pack(make_tree())
    after = pack(make_tree({**SAMPLE_FILES, "tables/limits.json": b'{"max": 11}\n'}))
    assert before.layer_digest != after.layer_digest


def test_tar_headers_are_normalised(make_tree: WriteTree) -> None:
    packed = pack(make_tree())
    infos = members(packed.layer)
    assert [i.name for i in infos] == sorted(SAMPLE_FILES)
    for info in infos:
        assert info.isreg()
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == (0o755 if info.name == "bin/refresh.sh" else 0o644)


def test_the_gzip_header_has_no_time_and_no_file_name(make_tree: WriteTree) -> None:
    layer: bytes = pack(make_tree()).layer
    magic, method, flags, mtime, _xfl, os_byte = struct.unpack("<2sBBIBB", layer[:10])
    assert (magic, method) == (b"\x1f\x8b", 8)
    assert flags == 0, "no FNAME, FCOMMENT or FEXTRA"
    assert mtime == 0
    assert os_byte == 255
    assert gzip.decompress(layer)


def test_the_manifest_lists_every_file_with_its_hash_size_and_mode(make_tree: WriteTree) -> None:
    manifest = pack(make_tree()).manifest
    assert [f.path for f in manifest.files] == sorted(SAMPLE_FILES)
    entry = manifest.file("bin/refresh.sh")
    assert entry is not None
    assert entry.mode == 0o755
    assert entry.size == len(SAMPLE_FILES["bin/refresh.sh"])
    assert "sha256:" + entry.sha256 == sha256_digest(SAMPLE_FILES["bin/refresh.sh"])


def test_the_layer_digest_helper_agrees_for_bytes_and_streams(make_tree: WriteTree) -> None:
    packed = pack(make_tree())
    layer: bytes = packed.layer
    assert packed.layer_digest == layer_digest(layer)
    assert layer_digest(io.BytesIO(layer)) == layer_digest(layer)
    assert packed.layer_size == len(layer)
    assert packed.config_digest == sha256_digest(packed.manifest.to_json())


def test_packing_to_a_file_writes_the_same_bytes(make_tree: WriteTree, tmp_path: Path) -> None:
    source = make_tree()
    out_path = tmp_path / "bundle.tar.gz"
    with out_path.open("wb") as out:
        result = pack_directory_to(
            source,
            out,
            name="pricing-rules",
            version="1.0.0",
            interface=SAMPLE_INTERFACE,
            entrypoint="rules:decide",
        )
    in_memory = pack(source)
    assert out_path.read_bytes() == in_memory.layer
    assert result.layer_digest == in_memory.layer_digest
    assert result.manifest == in_memory.manifest


def test_pycache_and_compiled_files_are_skipped(make_tree: WriteTree) -> None:
    source = make_tree(
        {**SAMPLE_FILES, "rules/__pycache__/core.cpython-311.pyc": b"\0", "rules/old.pyc": b"\0"}
    )
    assert collect_source_files(source) == sorted(SAMPLE_FILES)


def test_hidden_files_are_skipped_unless_asked_for(make_tree: WriteTree) -> None:
    source = make_tree({**SAMPLE_FILES, ".env": b"SECRET=1\n", ".git/config": b"[core]\n"})
    assert ".env" not in collect_source_files(source)
    with_hidden = collect_source_files(source, include_hidden=True)
    assert {".env", ".git/config"} <= set(with_hidden)
    packed = pack(source, include_hidden=True)
    assert packed.manifest.file(".env") is not None


def test_empty_directories_are_not_carried(make_tree: WriteTree) -> None:
    source = make_tree()
    (source / "empty").mkdir()
    assert "empty" not in {i.name for i in members(pack(source).layer)}


def test_a_symlink_to_a_file_in_the_source_is_refused(make_tree: WriteTree) -> None:
    source = make_tree()
    (source / "alias.json").symlink_to("tables/limits.json")
    with pytest.raises(LinkInSourceError, match=r"'alias\.json'.*symbolic link") as caught:
        pack(source)
    assert caught.value.reason == "LinkInSource"


def test_a_symlink_to_a_directory_outside_the_source_is_refused(
    make_tree: WriteTree, tmp_path: Path
) -> None:
    source = make_tree()
    (source / "rules" / "etc").symlink_to(tmp_path)
    with pytest.raises(LinkInSourceError, match="rules/etc"):
        pack(source)


def test_a_fifo_in_the_source_is_refused(make_tree: WriteTree) -> None:
    source = make_tree()
    os.mkfifo(source / "pipe")
    with pytest.raises(UnsupportedSourceFileError, match="'pipe'"):
        pack(source)


def test_a_file_name_with_a_backslash_is_refused(make_tree: WriteTree) -> None:
    source = make_tree({**SAMPLE_FILES, "win\\style.txt": b"x"})
    with pytest.raises(PackError, match="forbidden characters"):
        pack(source)


def test_a_directory_with_nothing_to_pack_is_refused(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / ".hidden").write_bytes(b"x")
    with pytest.raises(PackError, match="no files to pack"):
        pack(tmp_path / "only", entrypoint=None)


def test_a_source_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="not a directory"):
        pack(tmp_path / "absent")


def test_an_invalid_bundle_name_is_reported_as_an_invalid_manifest(make_tree: WriteTree) -> None:
    with pytest.raises(InvalidManifestError, match="name"):
        pack(make_tree(), name="Not A Label")


def test_an_invalid_interface_is_reported_as_an_invalid_manifest(make_tree: WriteTree) -> None:
    with pytest.raises(InvalidManifestError, match="interface"):
        pack(make_tree(), interface={"functions": {"f": {"params": "x"}}})


def test_an_entrypoint_outside_the_packed_files_is_refused(make_tree: WriteTree) -> None:
    with pytest.raises(InvalidManifestError, match="not in `files`"):
        pack(make_tree(), entrypoint="nowhere:decide")
