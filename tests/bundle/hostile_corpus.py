"""The hostile-tarball corpus: one deterministic builder per attack, named after its attack.

Nothing binary is committed: every case is generated here, byte for byte the
same on every run (tar mtime 0, gzip mtime 0), so a diff of this file is a
reviewable diff of the corpus.  :func:`write_corpus` materialises the cases as
``<name>.tar.gz`` plus ``<name>.manifest.json`` for manual inspection or for
other suites (``python -m tests.bundle.hostile_corpus DIR``).

Each case pairs a layer with the manifest a careless or hostile author would
sign alongside it (valid as a manifest, so the *unpacker* has to catch the
attack), the limits under which it must be refused (small, to keep tests
fast), and the error class that must be raised.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import sys
import tarfile
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from logicbundle.bundle import (
    AbsolutePathError,
    AmbiguousNameError,
    BundleManifest,
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
    UnpackLimits,
    UnsupportedMemberError,
    interface_hash,
    parse_manifest,
)
from logicbundle.bundle._manifest import Interface

MiB = 1 << 20
OK_CONTENT = b"rules = ['allow']\n"
_INTERFACE = Interface.model_validate({"jsonSchema": {"type": "object"}})

Member = tuple[tarfile.TarInfo, bytes | None]


@dataclass(frozen=True)
class HostileBundle:
    """One attack: the layer, the manifest signed with it, the limits, the expected error."""

    name: str
    layer: bytes
    manifest: BundleManifest
    expected: type[UnpackError]
    limits: UnpackLimits = field(default_factory=UnpackLimits)


def manifest_for(
    files: Mapping[str, bytes], *, sizes: Mapping[str, int] | None = None
) -> BundleManifest:
    """An honest manifest for ``files`` (path -> content); ``sizes`` overrides declared sizes."""
    sizes = sizes or {}
    return parse_manifest(
        {
            "name": "hostile",
            "version": "1.0.0",
            "interface": _INTERFACE.model_dump(mode="json", by_alias=True, exclude_none=True),
            "interfaceHash": interface_hash(_INTERFACE),
            "files": [
                {
                    "path": path,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": sizes.get(path, len(data)),
                    "mode": 0o644,
                }
                for path, data in files.items()
            ],
        }
    )


def entry(
    name: str,
    data: bytes | None = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    size: int | None = None,
    linkname: str = "",
    pax: Mapping[str, str] | None = None,
) -> Member:
    """A tar member with fixed metadata; ``size`` may lie about ``data``."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.linkname = linkname
    info.size = len(data) if size is None and data is not None else (size or 0)
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    if pax:
        info.pax_headers = dict(pax)
    return info, data


def directory(name: str) -> Member:
    return entry(name, None, kind=tarfile.DIRTYPE)


def build_tar(
    members: Iterable[Member],
    *,
    fmt: int = tarfile.PAX_FORMAT,
    errors: str = "surrogateescape",
) -> bytes:
    """An uncompressed tar of ``members``, written as is (no checks)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, encoding="utf-8", errors=errors) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None and info.isreg() else None)
    return raw.getvalue()


def gz(data: bytes) -> bytes:
    """Deterministic gzip: mtime 0, no file name."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def build_layer(members: Iterable[Member], **kwargs: int | str) -> bytes:
    return gz(build_tar(members, **kwargs))  # type: ignore[arg-type]


def _ok() -> Member:
    return entry("ok.txt", OK_CONTENT)


def _case(
    name: str,
    members: Iterable[Member],
    expected: type[UnpackError],
    *,
    manifest_files: Mapping[str, bytes] | None = None,
    limits: UnpackLimits | None = None,
    sizes: Mapping[str, int] | None = None,
) -> HostileBundle:
    files = {"ok.txt": OK_CONTENT} if manifest_files is None else manifest_files
    return HostileBundle(
        name=name,
        layer=build_layer(members),
        manifest=manifest_for(files, sizes=sizes),
        expected=expected,
        limits=limits or UnpackLimits(),
    )


# --- path attacks -----------------------------------------------------------------------------


def dotdot_traversal() -> HostileBundle:
    return _case("dotdot_traversal", [_ok(), entry("../escaped.txt", b"pwned")], PathTraversalError)


def nested_dotdot_traversal() -> HostileBundle:
    return _case(
        "nested_dotdot_traversal",
        [_ok(), entry("a/../../escaped.txt", b"pwned")],
        PathTraversalError,
    )


def absolute_path() -> HostileBundle:
    return _case("absolute_path", [_ok(), entry("/tmp/escaped.txt", b"pwned")], AbsolutePathError)


def backslash_traversal() -> HostileBundle:
    return _case(
        "backslash_traversal", [_ok(), entry("..\\escaped.txt", b"pwned")], InvalidPathError
    )


def non_utf8_name() -> HostileBundle:
    bad = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    return HostileBundle(
        name="non_utf8_name",
        layer=gz(build_tar([_ok(), entry(bad, b"x")], fmt=tarfile.USTAR_FORMAT)),
        manifest=manifest_for({"ok.txt": OK_CONTENT}),
        expected=InvalidPathError,
    )


def too_deep_path() -> HostileBundle:
    deep = "/".join(["d"] * 40)
    return _case("too_deep_path", [_ok(), directory(deep)], PathTooDeepError)


def too_long_path() -> HostileBundle:
    return _case("too_long_path", [_ok(), directory("x" * 2000)], PathTooLongError)


# --- names two readers (or a reader and a person) see differently (issue 11) ----------------


def pax_path_disagrees() -> HostileBundle:
    """A reader that ignores pax writes ok.txt; one that honours it writes rules.txt."""
    return _case(
        "pax_path_disagrees",
        [entry("ok.txt", OK_CONTENT, pax={"path": "rules.txt"})],
        AmbiguousNameError,
        manifest_files={"rules.txt": OK_CONTENT},
    )


def pax_hides_a_traversing_header() -> HostileBundle:
    return _case(
        "pax_hides_a_traversing_header",
        [entry("../escaped.txt", OK_CONTENT, pax={"path": "ok.txt"})],
        AmbiguousNameError,
    )


def pax_path_traverses() -> HostileBundle:
    return _case(
        "pax_path_traverses",
        [entry("ok.txt", OK_CONTENT, pax={"path": "../escaped.txt"})],
        PathTraversalError,
    )


def global_pax_path() -> HostileBundle:
    """Python applies a global path only to members with a pax header of their own; other
    readers apply it to every member that follows."""
    raw = io.BytesIO()
    with tarfile.open(
        fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"path": "rules.txt"}
    ) as tar:
        info, data = _ok()
        tar.addfile(info, io.BytesIO(data or b""))
    return HostileBundle(
        name="global_pax_path",
        layer=gz(raw.getvalue()),
        manifest=manifest_for({"ok.txt": OK_CONTENT}),
        expected=AmbiguousNameError,
    )


def gnu_member(long_name: str, header_name: str, data: bytes) -> bytes:
    """A GNU long-name record for ``long_name``, then a member whose header says ``header_name``."""
    longname: bytes = tarfile.TarInfo._create_gnu_long_header(  # type: ignore[attr-defined]
        long_name, tarfile.GNUTYPE_LONGNAME, "utf-8", "strict"
    )
    info = tarfile.TarInfo(header_name)
    info.size = len(data)
    header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict")
    return longname + header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


TAR_END = b"\0" * (2 * tarfile.BLOCKSIZE)


def gnu_long_name_traverses() -> HostileBundle:
    return HostileBundle(
        name="gnu_long_name_traverses",
        layer=gz(gnu_member("a/../../escaped.txt", "ok.txt", b"pwned") + TAR_END),
        manifest=manifest_for({"ok.txt": b"pwned"}),
        expected=PathTraversalError,
    )


def gnu_long_name_disagrees() -> HostileBundle:
    return HostileBundle(
        name="gnu_long_name_disagrees",
        layer=gz(gnu_member("rules.txt", "ok.txt", OK_CONTENT) + TAR_END),
        manifest=manifest_for({"rules.txt": OK_CONTENT}),
        expected=AmbiguousNameError,
    )


def bidi_override_name() -> HostileBundle:
    """``evil`` U+202E ``txt.py`` shows as ``evilyp.txt`` in a terminal or a review."""
    return _case("bidi_override_name", [_ok(), entry("evil\u202etxt.py", b"x")], InvalidPathError)


def c1_control_name() -> HostileBundle:
    """U+009B is the terminal's CSI: a name that writes escape sequences into a log."""
    return _case("c1_control_name", [_ok(), entry("term\x9b31m.txt", b"x")], InvalidPathError)


# --- link and special-file attacks ------------------------------------------------------------


def symlink_escape() -> HostileBundle:
    return _case(
        "symlink_escape",
        [_ok(), entry("passwd", None, kind=tarfile.SYMTYPE, linkname="../../../../etc/passwd")],
        SymlinkRejectedError,
    )


def symlink_then_write_through() -> HostileBundle:
    return _case(
        "symlink_then_write_through",
        [
            entry("dir", None, kind=tarfile.SYMTYPE, linkname="/tmp"),
            entry("dir/escaped.txt", b"pwned"),
        ],
        SymlinkRejectedError,
        manifest_files={"dir/escaped.txt": b"pwned"},
    )


def symlink_inside_bundle() -> HostileBundle:
    return _case(
        "symlink_inside_bundle",
        [_ok(), entry("alias.txt", None, kind=tarfile.SYMTYPE, linkname="ok.txt")],
        SymlinkRejectedError,
    )


def hardlink() -> HostileBundle:
    return _case(
        "hardlink",
        [_ok(), entry("again.txt", None, kind=tarfile.LNKTYPE, linkname="ok.txt")],
        HardlinkRejectedError,
    )


def hardlink_escape() -> HostileBundle:
    return _case(
        "hardlink_escape",
        [_ok(), entry("shadow", None, kind=tarfile.LNKTYPE, linkname="/etc/shadow")],
        HardlinkRejectedError,
    )


def character_device() -> HostileBundle:
    return _case(
        "character_device", [_ok(), entry("null", None, kind=tarfile.CHRTYPE)], DeviceFileError
    )


def block_device() -> HostileBundle:
    return _case("block_device", [_ok(), entry("sda", None, kind=tarfile.BLKTYPE)], DeviceFileError)


def fifo() -> HostileBundle:
    return _case("fifo", [_ok(), entry("pipe", None, kind=tarfile.FIFOTYPE)], FifoError)


def contiguous_file() -> HostileBundle:
    return _case(
        "contiguous_file",
        [entry("ok.txt", OK_CONTENT, kind=tarfile.CONTTYPE)],
        UnsupportedMemberError,
    )


# --- duplicates -------------------------------------------------------------------------------


def duplicate_names() -> HostileBundle:
    return _case(
        "duplicate_names", [_ok(), entry("ok.txt", b"rules = ['deny']\n")], DuplicateEntryError
    )


def duplicate_via_dot_segment() -> HostileBundle:
    return _case(
        "duplicate_via_dot_segment",
        [entry("a/b.txt", OK_CONTENT), entry("a/./b.txt", OK_CONTENT)],
        DuplicateEntryError,
        manifest_files={"a/b.txt": OK_CONTENT},
    )


def duplicate_via_case() -> HostileBundle:
    return _case(
        "duplicate_via_case",
        [_ok(), entry("OK.txt", OK_CONTENT)],
        DuplicateEntryError,
    )


def duplicate_via_unicode_normalisation() -> HostileBundle:
    nfc = unicodedata.normalize("NFC", "caf\u00e9.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    return _case(
        "duplicate_via_unicode_normalisation",
        [entry(nfc, OK_CONTENT), entry(nfd, OK_CONTENT)],
        DuplicateEntryError,
        manifest_files={nfc: OK_CONTENT},
    )


def file_under_a_file() -> HostileBundle:
    return _case(
        "file_under_a_file",
        [_ok(), entry("ok.txt/inner.txt", b"x")],
        PathConflictError,
    )


# --- size, count and ratio bombs --------------------------------------------------------------


@functools.cache
def _zeros_layer(name: str, size: int) -> bytes:
    return build_layer([entry(name, bytes(size))])


def size_bomb() -> HostileBundle:
    """A file far larger than the manifest admits, refused from its header before any byte."""
    return HostileBundle(
        name="size_bomb",
        layer=_zeros_layer("big.bin", 8 * MiB),
        manifest=manifest_for({"big.bin": b"small"}),
        expected=FileTooLargeError,
        limits=UnpackLimits(max_file_size=1 * MiB),
    )


def total_size_bomb() -> HostileBundle:
    """Many files each within limits, together beyond the total."""
    files = {f"part{i}.bin": bytes([i]) * (400 * 1024) for i in range(4)}
    return HostileBundle(
        name="total_size_bomb",
        layer=build_layer(entry(p, d) for p, d in files.items()),
        manifest=manifest_for(files),
        expected=TotalSizeExceededError,
        limits=UnpackLimits(max_total_size=1 * MiB, max_file_size=1 * MiB),
    )


def trailing_zero_flood() -> HostileBundle:
    """A valid tar followed by megabytes of zeros: the stream itself exceeds the total."""
    tar = build_tar([_ok()]) + bytes(12 * MiB)
    return HostileBundle(
        name="trailing_zero_flood",
        layer=gz(tar),
        manifest=manifest_for({"ok.txt": OK_CONTENT}),
        expected=TotalSizeExceededError,
        limits=UnpackLimits(max_total_size=1 * MiB, max_files=10, max_compression_ratio=100_000),
    )


def ratio_bomb() -> HostileBundle:
    """32 MiB of zeros in ~32 KiB of gzip, honestly declared: refused for its ratio, early."""
    data = bytes(32 * MiB)
    return HostileBundle(
        name="ratio_bomb",
        layer=_zeros_layer("zeros.bin", len(data)),
        manifest=manifest_for({"zeros.bin": data}),
        expected=CompressionRatioExceededError,
        limits=UnpackLimits(max_compression_ratio=100, ratio_grace=1 * MiB),
    )


def too_many_files() -> HostileBundle:
    files = {f"f{i:02}.txt": b"x" for i in range(12)}
    return HostileBundle(
        name="too_many_files",
        layer=build_layer(entry(p, d) for p, d in files.items()),
        manifest=manifest_for(files),
        expected=TooManyFilesError,
        limits=UnpackLimits(max_files=10),
    )


def directory_flood() -> HostileBundle:
    """Directory entries are not in the manifest, but still count against max_files."""
    return _case(
        "directory_flood",
        [_ok(), *(directory(f"d{i:03}") for i in range(50))],
        TooManyFilesError,
        limits=UnpackLimits(max_files=10),
    )


def oversized_pax_header() -> HostileBundle:
    return _case(
        "oversized_pax_header",
        [entry("ok.txt", OK_CONTENT, pax={"comment": "x" * (256 * 1024)})],
        HeaderTooLargeError,
    )


# --- manifest mismatches ----------------------------------------------------------------------


def hash_mismatch() -> HostileBundle:
    tampered = OK_CONTENT.replace(b"allow", b"deny!")
    return _case("hash_mismatch", [entry("ok.txt", tampered)], HashMismatchError)


def size_mismatch() -> HostileBundle:
    return _case("size_mismatch", [entry("ok.txt", OK_CONTENT + b"#")], SizeMismatchError)


def file_missing_from_tar() -> HostileBundle:
    return _case(
        "file_missing_from_tar",
        [_ok()],
        MissingFileError,
        manifest_files={"ok.txt": OK_CONTENT, "rules/extra.txt": b"more"},
    )


def extra_file_not_in_manifest() -> HostileBundle:
    return _case(
        "extra_file_not_in_manifest",
        [_ok(), entry("sitecustomize.py", b"import os\n")],
        UnexpectedFileError,
    )


# --- broken compression -----------------------------------------------------------------------


def not_gzip() -> HostileBundle:
    return HostileBundle(
        name="not_gzip",
        layer=build_tar([_ok()]),
        manifest=manifest_for({"ok.txt": OK_CONTENT}),
        expected=CorruptArchiveError,
    )


def truncated_gzip() -> HostileBundle:
    whole = build_layer([_ok(), entry("more.txt", bytes(range(256)) * 64)])
    return HostileBundle(
        name="truncated_gzip",
        layer=whole[: len(whole) // 2],
        manifest=manifest_for({"ok.txt": OK_CONTENT, "more.txt": bytes(range(256)) * 64}),
        expected=CorruptArchiveError,
    )


def gzip_crc_mismatch() -> HostileBundle:
    whole = bytearray(build_layer([_ok()]))
    whole[-8] ^= 0xFF  # the CRC32 of the trailer
    return HostileBundle(
        name="gzip_crc_mismatch",
        layer=bytes(whole),
        manifest=manifest_for({"ok.txt": OK_CONTENT}),
        expected=CorruptArchiveError,
    )


CORPUS: dict[str, Callable[[], HostileBundle]] = {
    builder.__name__: builder
    for builder in (
        dotdot_traversal,
        nested_dotdot_traversal,
        absolute_path,
        backslash_traversal,
        non_utf8_name,
        too_deep_path,
        too_long_path,
        pax_path_disagrees,
        pax_hides_a_traversing_header,
        pax_path_traverses,
        global_pax_path,
        gnu_long_name_traverses,
        gnu_long_name_disagrees,
        bidi_override_name,
        c1_control_name,
        symlink_escape,
        symlink_then_write_through,
        symlink_inside_bundle,
        hardlink,
        hardlink_escape,
        character_device,
        block_device,
        fifo,
        contiguous_file,
        duplicate_names,
        duplicate_via_dot_segment,
        duplicate_via_case,
        duplicate_via_unicode_normalisation,
        file_under_a_file,
        size_bomb,
        total_size_bomb,
        trailing_zero_flood,
        ratio_bomb,
        too_many_files,
        directory_flood,
        oversized_pax_header,
        hash_mismatch,
        size_mismatch,
        file_missing_from_tar,
        extra_file_not_in_manifest,
        not_gzip,
        truncated_gzip,
        gzip_crc_mismatch,
    )
}
"""Every case by name; the name says what it guards against."""


def write_corpus(directory: Path) -> list[Path]:
    """Write every case as ``<name>.tar.gz`` and ``<name>.manifest.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CORPUS.items():
        case = build()
        layer = directory / f"{name}.tar.gz"
        layer.write_bytes(case.layer)
        (directory / f"{name}.manifest.json").write_bytes(case.manifest.to_json())
        written.append(layer)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("hostile")
    for path in write_corpus(target):
        print(path)
