"""Unpacking honest layers: what lands on disk, and how the destination is treated."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path
from typing import NoReturn

import pytest

from logicbundle.bundle import (
    DestinationExistsError,
    FileTooLargeError,
    LayerDigestMismatchError,
    PackedBundle,
    PathTooDeepError,
    PathTraversalError,
    TotalSizeExceededError,
    UnpackLimits,
    pack_directory,
    unpack_bundle,
)

from . import hostile_corpus as corpus
from .conftest import SAMPLE_FILES, SAMPLE_INTERFACE, WriteTree


def packed(source: Path) -> PackedBundle:
    return pack_directory(
        source,
        name="pricing-rules",
        version="1.0.0",
        interface=SAMPLE_INTERFACE,
        entrypoint="rules:decide",
    )


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_packed_directory_unpacks_to_the_same_files_and_modes(
    make_tree: WriteTree, landing: Path
) -> None:
    bundle = packed(make_tree())
    result = unpack_bundle(bundle.layer, manifest=bundle.manifest, destination=landing / "v1")
    assert result.path == landing / "v1"
    assert result.compressed_size == len(bundle.layer)
    assert tree(landing / "v1") == {
        path: (data, 0o755 if path == "bin/refresh.sh" else 0o644)
        for path, data in SAMPLE_FILES.items()
    }
    assert stat.S_IMODE((landing / "v1").stat().st_mode) == 0o755
    assert [p.name for p in landing.iterdir()] == ["v1"], "no staging directory is left over"


def test_the_layer_can_be_given_as_a_path_or_a_stream(
    make_tree: WriteTree, landing: Path, tmp_path: Path
) -> None:
    bundle = packed(make_tree())
    layer_file = tmp_path / "layer.tar.gz"
    layer_file.write_bytes(bundle.layer)
    unpack_bundle(layer_file, manifest=bundle.manifest, destination=landing / "a")
    unpack_bundle(io.BytesIO(bundle.layer), manifest=bundle.manifest, destination=landing / "b")
    assert tree(landing / "a") == tree(landing / "b")


def test_an_existing_destination_is_never_overwritten(make_tree: WriteTree, landing: Path) -> None:
    bundle = packed(make_tree())
    (landing / "v1").mkdir()
    (landing / "v1" / "keep.txt").write_bytes(b"mine")
    with pytest.raises(DestinationExistsError, match="exists already"):
        unpack_bundle(bundle.layer, manifest=bundle.manifest, destination=landing / "v1")
    assert tree(landing / "v1") == {"keep.txt": (b"mine", 0o644)}
    assert [p.name for p in landing.iterdir()] == ["v1"]


def test_modes_come_from_the_manifest_never_from_the_tar_header(landing: Path) -> None:
    info, data = corpus.entry("ok.txt", corpus.OK_CONTENT)
    info.mode = 0o6777  # setuid, setgid, world-writable
    layer = corpus.build_layer([(info, data)])
    manifest = corpus.manifest_for({"ok.txt": corpus.OK_CONTENT})
    unpack_bundle(layer, manifest=manifest, destination=landing / "v1")
    assert stat.S_IMODE((landing / "v1" / "ok.txt").stat().st_mode) == 0o644


def test_harmless_spellings_from_other_tar_writers_are_accepted(landing: Path) -> None:
    layer = corpus.build_layer(
        [
            corpus.directory("."),
            corpus.directory("./rules"),
            corpus.entry("./rules//ok.txt", corpus.OK_CONTENT),
        ],
        fmt=tarfile.GNU_FORMAT,
    )
    manifest = corpus.manifest_for({"rules/ok.txt": corpus.OK_CONTENT})
    unpack_bundle(layer, manifest=manifest, destination=landing / "v1")
    assert tree(landing / "v1") == {"rules/ok.txt": (corpus.OK_CONTENT, 0o644)}


def test_a_layer_of_concatenated_gzip_members_is_accepted(landing: Path) -> None:
    tar = corpus.build_tar([corpus.entry("ok.txt", corpus.OK_CONTENT)])
    layer = corpus.gz(tar[:700]) + corpus.gz(tar[700:])
    manifest = corpus.manifest_for({"ok.txt": corpus.OK_CONTENT})
    unpack_bundle(layer, manifest=manifest, destination=landing / "v1", fsync=False)
    assert (landing / "v1" / "ok.txt").read_bytes() == corpus.OK_CONTENT


def test_files_written_before_a_late_rejection_are_removed(landing: Path) -> None:
    good = {f"rules/{i}.txt": bytes([i]) * 100 for i in range(5)}
    layer = corpus.build_layer(
        [*(corpus.entry(p, d) for p, d in good.items()), corpus.entry("zz/../../x", b"x")]
    )
    with pytest.raises(PathTraversalError, match=r"'\.\.' component"):
        unpack_bundle(layer, manifest=corpus.manifest_for(good), destination=landing / "v1")
    assert list(landing.iterdir()) == []


class _Untouchable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> NoReturn:
        raise AssertionError("the layer must not be read when the manifest already breaks limits")


def test_a_manifest_beyond_the_limits_is_refused_before_reading_the_layer(landing: Path) -> None:
    manifest = corpus.manifest_for({"big.bin": b"x"}, sizes={"big.bin": 10 * corpus.MiB})
    with pytest.raises(FileTooLargeError, match=r"the manifest lists 'big\.bin'"):
        unpack_bundle(
            _Untouchable(),  # type: ignore[arg-type]
            manifest=manifest,
            destination=landing / "v1",
            limits=UnpackLimits(max_file_size=corpus.MiB),
        )
    assert list(landing.iterdir()) == []


def test_a_manifest_with_too_deep_a_path_is_refused_before_reading_the_layer(
    landing: Path,
) -> None:
    deep = "/".join(["d"] * 5) + "/f.txt"
    with pytest.raises(PathTooDeepError):
        unpack_bundle(
            _Untouchable(),  # type: ignore[arg-type]
            manifest=corpus.manifest_for({deep: b"x"}),
            destination=landing / "v1",
            limits=UnpackLimits(max_path_depth=4),
        )


def test_a_bundle_exactly_at_the_limits_is_accepted(landing: Path) -> None:
    files = {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000}
    layer = corpus.build_layer(corpus.entry(p, d) for p, d in files.items())
    limits = UnpackLimits(max_total_size=2000, max_file_size=1000, max_files=2)
    unpack_bundle(
        layer, manifest=corpus.manifest_for(files), destination=landing / "v1", limits=limits
    )
    with pytest.raises(TotalSizeExceededError):
        unpack_bundle(
            layer,
            manifest=corpus.manifest_for(files),
            destination=landing / "v2",
            limits=UnpackLimits(max_total_size=1999, max_file_size=1000),
        )


@pytest.mark.parametrize("field", ["max_total_size", "max_files", "max_compression_ratio"])
@pytest.mark.parametrize("value", [0, -1])
def test_limits_must_be_positive(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"UnpackLimits.{field} must be a positive integer"):
        UnpackLimits(**{field: value})


def test_limits_are_frozen_and_have_documented_defaults() -> None:
    limits = UnpackLimits()
    assert limits.max_total_size == 256 * corpus.MiB
    assert limits.max_file_size == 128 * corpus.MiB
    assert limits.max_files == 10_000
    assert limits.max_path_depth == 32
    assert limits.max_compression_ratio == 200
    with pytest.raises(AttributeError):
        limits.max_files = 1  # type: ignore[misc]


def test_a_pinned_layer_digest_is_checked_against_every_byte(
    make_tree: WriteTree, landing: Path
) -> None:
    bundle = packed(make_tree())
    unpack_bundle(
        bundle.layer,
        manifest=bundle.manifest,
        destination=landing / "v1",
        expected_digest=bundle.layer_digest,
    )
    # Same files, one byte of gzip header changed: the content still unpacks, the digest does not.
    altered = bytearray(bundle.layer)
    altered[4] ^= 0x01  # the gzip header's mtime field
    with pytest.raises(LayerDigestMismatchError, match="not the pinned"):
        unpack_bundle(
            bytes(altered),
            manifest=bundle.manifest,
            destination=landing / "v2",
            expected_digest=bundle.layer_digest,
        )
    assert [p.name for p in landing.iterdir()] == ["v1"]
