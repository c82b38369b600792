"""Every hostile tarball of the corpus is refused with its own error and leaves nothing behind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from logicbundle.bundle import (
    AbsolutePathError,
    CompressionRatioExceededError,
    CorruptArchiveError,
    DeviceFileError,
    DuplicateEntryError,
    FifoError,
    FileTooLargeError,
    HardlinkRejectedError,
    HashMismatchError,
    HeaderTooLargeError,
    InvalidPathError,
    LinkRejectedError,
    MissingFileError,
    PathConflictError,
    PathTooDeepError,
    PathTooLongError,
    PathTraversalError,
    SizeMismatchError,
    SymlinkRejectedError,
    TooManyFilesError,
    TotalSizeExceededError,
    UnexpectedFileError,
    UnpackError,
    UnsupportedMemberError,
    unpack_bundle,
)
from logicbundle.errors import LogicBundleError

from . import hostile_corpus as corpus


def refuse(case: corpus.HostileBundle, landing: Path) -> UnpackError:
    """Unpack ``case`` into ``landing``; it must fail with exactly its error and leave nothing."""
    with pytest.raises(UnpackError) as caught:
        unpack_bundle(
            case.layer,
            manifest=case.manifest,
            destination=landing / "v1",
            limits=case.limits,
            fsync=False,
        )
    assert type(caught.value) is case.expected, caught.value
    assert list(landing.iterdir()) == [], "a rejected bundle must leave nothing behind"
    return caught.value


def assert_nothing_escaped(landing: Path) -> None:
    for outside in (landing.parent, landing.parent.parent):
        assert not (outside / "escaped.txt").exists()


# --- paths ------------------------------------------------------------------------------------


def test_a_tarball_with_a_dotdot_path_is_rejected_and_leaves_nothing(landing: Path) -> None:
    error = refuse(corpus.dotdot_traversal(), landing)
    assert isinstance(error, PathTraversalError)
    assert error.reason == "PathTraversal"
    assert error.member == "../escaped.txt"
    assert "'..'" in str(error)
    assert_nothing_escaped(landing)


def test_a_dotdot_hidden_behind_a_directory_is_rejected(landing: Path) -> None:
    error = refuse(corpus.nested_dotdot_traversal(), landing)
    assert isinstance(error, PathTraversalError)
    assert_nothing_escaped(landing)


def test_a_tarball_with_an_absolute_path_is_rejected_and_leaves_nothing(landing: Path) -> None:
    error = refuse(corpus.absolute_path(), landing)
    assert isinstance(error, AbsolutePathError)
    assert error.reason == "AbsolutePath"
    assert "absolute" in str(error)


def test_a_backslash_path_is_rejected_as_invalid(landing: Path) -> None:
    error = refuse(corpus.backslash_traversal(), landing)
    assert isinstance(error, InvalidPathError)
    assert "forbidden characters" in str(error)


def test_a_name_that_is_not_utf8_is_rejected_as_invalid(landing: Path) -> None:
    error = refuse(corpus.non_utf8_name(), landing)
    assert isinstance(error, InvalidPathError)
    assert "UTF-8" in str(error)


def test_a_path_deeper_than_the_limit_is_rejected(landing: Path) -> None:
    error = refuse(corpus.too_deep_path(), landing)
    assert isinstance(error, PathTooDeepError)
    assert "max_path_depth=32" in str(error)


def test_a_path_longer_than_the_limit_is_rejected(landing: Path) -> None:
    error = refuse(corpus.too_long_path(), landing)
    assert isinstance(error, PathTooLongError)
    assert "max_path_length=1024" in str(error)


# --- links and special files ------------------------------------------------------------------


def test_a_symlink_escaping_the_bundle_is_rejected_and_leaves_nothing(landing: Path) -> None:
    error = refuse(corpus.symlink_escape(), landing)
    assert isinstance(error, SymlinkRejectedError)
    assert isinstance(error, LinkRejectedError)
    assert "../../../../etc/passwd" in str(error)


def test_a_symlink_followed_by_a_file_written_through_it_is_rejected(landing: Path) -> None:
    error = refuse(corpus.symlink_then_write_through(), landing)
    assert isinstance(error, SymlinkRejectedError)
    assert error.member == "dir"
    assert not Path("/tmp/escaped.txt").exists()


def test_even_a_symlink_that_stays_inside_the_bundle_is_rejected(landing: Path) -> None:
    error = refuse(corpus.symlink_inside_bundle(), landing)
    assert isinstance(error, SymlinkRejectedError)


def test_a_hardlink_is_rejected_and_leaves_nothing(landing: Path) -> None:
    error = refuse(corpus.hardlink(), landing)
    assert isinstance(error, HardlinkRejectedError)
    assert error.reason == "HardlinkRejected"


def test_a_hardlink_to_a_host_file_is_rejected(landing: Path) -> None:
    error = refuse(corpus.hardlink_escape(), landing)
    assert isinstance(error, HardlinkRejectedError)
    assert "/etc/shadow" in str(error)


def test_a_character_device_is_rejected(landing: Path) -> None:
    error = refuse(corpus.character_device(), landing)
    assert isinstance(error, DeviceFileError)
    assert error.reason == "DeviceFile"


def test_a_block_device_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.block_device(), landing), DeviceFileError)


def test_a_fifo_is_rejected(landing: Path) -> None:
    error = refuse(corpus.fifo(), landing)
    assert isinstance(error, FifoError)
    assert error.reason == "Fifo"


def test_a_member_of_an_exotic_type_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.contiguous_file(), landing), UnsupportedMemberError)


# --- duplicates -------------------------------------------------------------------------------


def test_a_tarball_naming_a_file_twice_is_rejected(landing: Path) -> None:
    error = refuse(corpus.duplicate_names(), landing)
    assert isinstance(error, DuplicateEntryError)
    assert error.reason == "DuplicateEntry"


def test_a_duplicate_spelled_with_a_dot_segment_is_rejected(landing: Path) -> None:
    error = refuse(corpus.duplicate_via_dot_segment(), landing)
    assert isinstance(error, DuplicateEntryError)
    assert error.member == "a/./b.txt"


def test_a_duplicate_differing_only_in_case_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.duplicate_via_case(), landing), DuplicateEntryError)


def test_a_duplicate_differing_only_in_unicode_normalisation_is_rejected(landing: Path) -> None:
    assert isinstance(
        refuse(corpus.duplicate_via_unicode_normalisation(), landing), DuplicateEntryError
    )


def test_a_file_that_needs_another_file_to_be_a_directory_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.file_under_a_file(), landing), PathConflictError)


# --- bombs and counts -------------------------------------------------------------------------


def test_a_file_larger_than_the_limit_is_rejected_from_its_header(landing: Path) -> None:
    error = refuse(corpus.size_bomb(), landing)
    assert isinstance(error, FileTooLargeError)
    assert "max_file_size=1048576" in str(error)


def test_files_adding_up_beyond_the_total_limit_are_rejected(landing: Path) -> None:
    error = refuse(corpus.total_size_bomb(), landing)
    assert isinstance(error, TotalSizeExceededError)
    assert "max_total_size=1048576" in str(error)


def test_a_stream_that_inflates_beyond_the_total_is_stopped(landing: Path) -> None:
    error = refuse(corpus.trailing_zero_flood(), landing)
    assert isinstance(error, TotalSizeExceededError)
    assert "unpacking stopped" in str(error)


def test_a_ratio_bomb_is_stopped_before_it_is_read_to_the_end(landing: Path) -> None:
    case = corpus.ratio_bomb()
    stream = io.BytesIO(case.layer)
    with pytest.raises(CompressionRatioExceededError) as caught:
        unpack_bundle(
            stream, manifest=case.manifest, destination=landing / "v1", limits=case.limits
        )
    assert caught.value.reason == "CompressionRatioExceeded"
    assert stream.tell() < len(case.layer), "the bomb must be stopped while streaming"
    assert list(landing.iterdir()) == []


def test_a_ratio_bomb_is_rejected_and_leaves_nothing(landing: Path) -> None:
    assert isinstance(refuse(corpus.ratio_bomb(), landing), CompressionRatioExceededError)


def test_a_manifest_with_too_many_files_is_rejected(landing: Path) -> None:
    error = refuse(corpus.too_many_files(), landing)
    assert isinstance(error, TooManyFilesError)
    assert "max_files=10" in str(error)


def test_a_flood_of_directory_entries_counts_against_the_file_limit(landing: Path) -> None:
    assert isinstance(refuse(corpus.directory_flood(), landing), TooManyFilesError)


def test_an_oversized_pax_header_is_rejected_before_it_is_buffered(landing: Path) -> None:
    error = refuse(corpus.oversized_pax_header(), landing)
    assert isinstance(error, HeaderTooLargeError)


# --- the manifest contract --------------------------------------------------------------------


def test_a_file_whose_hash_differs_from_the_manifest_is_rejected(landing: Path) -> None:
    error = refuse(corpus.hash_mismatch(), landing)
    assert isinstance(error, HashMismatchError)
    assert error.reason == "HashMismatch"
    assert error.member == "ok.txt"


def test_a_file_whose_size_differs_from_the_manifest_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.size_mismatch(), landing), SizeMismatchError)


def test_a_file_in_the_manifest_but_missing_from_the_tarball_is_rejected(landing: Path) -> None:
    error = refuse(corpus.file_missing_from_tar(), landing)
    assert isinstance(error, MissingFileError)
    assert "'rules/extra.txt'" in str(error)


def test_an_extra_file_not_in_the_manifest_is_rejected(landing: Path) -> None:
    error = refuse(corpus.extra_file_not_in_manifest(), landing)
    assert isinstance(error, UnexpectedFileError)
    assert error.member == "sitecustomize.py"


# --- broken compression -----------------------------------------------------------------------


def test_a_layer_that_is_not_gzip_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.not_gzip(), landing), CorruptArchiveError)


def test_a_truncated_layer_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.truncated_gzip(), landing), CorruptArchiveError)


def test_a_layer_with_a_wrong_gzip_checksum_is_rejected(landing: Path) -> None:
    assert isinstance(refuse(corpus.gzip_crc_mismatch(), landing), CorruptArchiveError)


def test_an_empty_layer_is_rejected(landing: Path) -> None:
    case = corpus.dotdot_traversal()
    with pytest.raises(CorruptArchiveError, match="empty"):
        unpack_bundle(b"", manifest=case.manifest, destination=landing / "v1")
    assert list(landing.iterdir()) == []


# --- the corpus as a whole --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(corpus.CORPUS))
def test_every_corpus_case_is_refused_with_its_own_error(name: str, landing: Path) -> None:
    refuse(corpus.CORPUS[name](), landing)


def test_the_corpus_is_generated_byte_for_byte_the_same_each_time() -> None:
    for build in (corpus.dotdot_traversal, corpus.hash_mismatch, corpus.duplicate_via_case):
        assert build().layer == build().layer


def test_the_corpus_can_be_written_out_for_inspection(tmp_path: Path) -> None:
    written = corpus.write_corpus(tmp_path / "hostile")
    assert {p.name.removesuffix(".tar.gz") for p in written} == set(corpus.CORPUS)
    assert all((p.parent / p.name.replace(".tar.gz", ".manifest.json")).exists() for p in written)


def test_every_rejection_is_a_logicbundle_error_that_says_what_to_do(landing: Path) -> None:
    error = refuse(corpus.symlink_escape(), landing)
    assert isinstance(error, LogicBundleError)
    assert not error.retryable
    assert "Hint:" in error.diagnostics()


# --- file names at the file system's limit (issue 11, defect 3) ----------------------------------


def test_a_name_component_of_256_bytes_is_refused_before_the_file_system_sees_it(
    landing: Path,
) -> None:
    # "é" is two bytes in UTF-8: 128 of them are 256 bytes in 128 characters.
    for long_name in ("a" * 256, "é" * 128, "dir/" + "b" * 256):
        case = corpus.HostileBundle(
            name="long_component",
            layer=corpus.build_layer(
                [corpus.entry("ok.txt", corpus.OK_CONTENT), corpus.entry(long_name, b"x")]
            ),
            manifest=corpus.manifest_for({"ok.txt": corpus.OK_CONTENT}),
            expected=PathTooLongError,
        )
        error = refuse(case, landing)
        assert "more than 255" in str(error)


def test_a_name_component_of_255_bytes_unpacks(landing: Path) -> None:
    name = "a" * 251 + ".txt"
    files = {name: b"edge"}
    layer = corpus.build_layer([corpus.entry(name, b"edge")])
    unpack_bundle(
        layer, manifest=corpus.manifest_for(files), destination=landing / "v1", fsync=False
    )
    assert (landing / "v1" / name).read_bytes() == b"edge"


def test_a_manifest_naming_a_256_byte_component_is_refused() -> None:
    with pytest.raises(LogicBundleError, match="more than 255"):
        corpus.manifest_for({"a" * 256: b"x"})
    assert corpus.manifest_for({"a" * 255: b"x"}).files[0].path == "a" * 255
