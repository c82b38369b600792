"""Safe unpacking of a bundle layer: the layer is hostile input until proven otherwise.

The layer arrives from a registry.  Its digest was checked and the manifest
signed, but a signed bundle may still have been built by a careless or
compromised author, so nothing in the tar is trusted: not the names, not the
types, not the sizes, not the modes.  The rules:

* The layer is streamed (``tarfile`` stream mode over our own gunzip reader),
  never seeked and never inflated ahead of need.  The reader counts compressed
  and uncompressed bytes as it goes and stops the moment the ratio or the total
  exceeds the :class:`UnpackLimits`, so a gzip bomb costs a few kilobytes of
  reading, not gigabytes of inflating.  pax and GNU long-name headers are
  capped before ``tarfile`` buffers them.
* A pax ``path`` or GNU long name must agree with the member's own header
  name: the header may only hold a stand-in for it (the same name, its first
  bytes cut to the field, or its ASCII placeholder), never another file and
  never an absolute or ``..`` path, so that readers that ignore extended
  headers and readers that honour them see the same files.  A global pax
  header may not set ``path`` or ``linkpath`` (readers disagree on whether it
  applies to the members that follow).
* Every name is canonicalised; absolute paths, ``..`` components, backslashes
  and control characters are refused.  Two names that are one file on some
  file system (``a/./b`` and ``a/b``, ``A`` and ``a``, NFC and NFD spellings)
  are duplicates and refused.
* **No links at all**, symbolic or hard, escaping or not: the packer never
  produces them, and a link that is harmless today can be made to point
  elsewhere by a later file.  Devices, FIFOs, sparse files and every other
  member type are refused too.  Only regular files and directories pass.
* Modes come from the manifest (0644 or 0755), never from the tar header;
  owners and times are not restored.
* The layer must hold exactly the manifest's files: each one with the listed
  size and sha256, none missing, none extra.  Directory entries are accepted
  (other tar writers emit them) but carry nothing.
* Files are written into a fresh, private temporary directory next to the
  destination, opened with ``O_EXCL | O_NOFOLLOW``; only when every check has
  passed is that directory renamed to the destination.  Any failure removes it,
  so a rejected bundle leaves nothing behind.  The destination must not exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol, Self

from logicbundle.bundle import _paths
from logicbundle.bundle._errors import (
    AbsolutePathError,
    AmbiguousNameError,
    CompressionRatioExceededError,
    CorruptArchiveError,
    DestinationExistsError,
    DeviceFileError,
    DuplicateEntryError,
    FifoError,
    FileTooLargeError,
    HardlinkRejectedError,
    HashMismatchError,
    HeaderTooLargeError,
    InvalidPathError,
    LayerDigestMismatchError,
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
)

if TYPE_CHECKING:
    from logicbundle.bundle._manifest import BundleManifest, FileEntry

    _check_file_entry: type[FileEntryLike] = FileEntry
    _check_manifest: type[ManifestLike] = BundleManifest


class FileEntryLike(Protocol):
    """What the unpacker reads of one manifest file entry (:class:`FileEntry` has it)."""

    @property
    def path(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> int: ...


class ManifestLike(Protocol):
    """What the unpacker reads of a bundle manifest.

    :class:`BundleManifest` has it; so does the agent's own small stdlib
    parser of the config blob, which keeps pydantic out of every pod.  The
    unpacker does not import the pydantic model at run time.
    """

    @property
    def files(self) -> Sequence[FileEntryLike]: ...
    @property
    def total_size(self) -> int: ...


_MiB: Final = 1 << 20
_READ_CHUNK: Final = 16 * 1024
_WRITE_CHUNK: Final = _MiB
_TAR_OVERHEAD_PER_MEMBER: Final = 4096
_STAND_IN_CUT: Final = 99
"""Bytes a header name must keep when it stands for a longer pax or GNU long name: what a
writer leaves when it cuts the name to the 100-byte header field (less a trailing slash)."""
_META_TYPES: Final = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


@dataclass(frozen=True, kw_only=True)
class UnpackLimits:
    """Bounds on what one bundle layer may cost to unpack.

    The defaults fit logic bundles (rules, scripts, modules, tables), which are
    small; raise them per LogicBundle when a bundle really needs more.
    """

    max_total_size: int = 256 * _MiB
    """Sum of all file sizes, in bytes. Default 256 MiB."""
    max_file_size: int = 128 * _MiB
    """Size of any one file, in bytes. Default 128 MiB."""
    max_files: int = 10_000
    """Number of tar members (files and directories). Default 10,000."""
    max_path_depth: int = 32
    """Components of any path. Default 32."""
    max_path_length: int = 1024
    """UTF-8 bytes of any path. Default 1,024."""
    max_compression_ratio: int = 200
    """Uncompressed bytes per compressed byte, once ``ratio_grace`` is passed. Default 200."""
    ratio_grace: int = 4 * _MiB
    """Uncompressed bytes inflated before the ratio is enforced (tiny layers of zeros and
    tar padding compress extremely well, honestly). Default 4 MiB."""
    max_header_size: int = 64 * 1024
    """Size of any pax or GNU extended header, in bytes. Default 64 KiB."""

    def __post_init__(self) -> None:
        for field, value in vars(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"UnpackLimits.{field} must be a positive integer, not {value!r}")

    @property
    def max_stream_size(self) -> int:
        """Uncompressed bytes the whole tar stream may hold: files plus tar's own overhead."""
        return (
            self.max_total_size
            + (self.max_files + 2) * _TAR_OVERHEAD_PER_MEMBER
            + 2 * self.max_header_size
            + _MiB
        )


DEFAULT_LIMITS: Final = UnpackLimits()


@dataclass(frozen=True)
class UnpackedBundle:
    """A bundle unpacked and checked: where it is and what it cost.

    ``manifest`` is the object the caller passed (a :class:`BundleManifest`
    unless the caller brought its own :class:`ManifestLike`).
    """

    path: Path
    manifest: ManifestLike
    compressed_size: int
    uncompressed_size: int


class _GuardedGunzip(io.RawIOBase):
    """A gunzip reader that enforces size and ratio limits while it inflates."""

    def __init__(self, source: IO[bytes], limits: UnpackLimits) -> None:
        super().__init__()
        self._source = source
        self._limits = limits
        self._inflater = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._source_done = False
        self.hasher = hashlib.sha256()
        self.compressed_size = 0
        self.uncompressed_size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inflate(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _inflate(self, size: int) -> bytes:
        while True:
            if not self._pending and not self._source_done:
                chunk = self._source.read(_READ_CHUNK)
                if chunk:
                    self.hasher.update(chunk)
                    self.compressed_size += len(chunk)
                    self._pending = chunk
                else:
                    self._source_done = True
            if not self._pending:
                if self._source_done and not self._inflater.eof:
                    raise CorruptArchiveError(
                        "the bundle layer is truncated: the gzip stream ends early"
                        if self.compressed_size
                        else "the bundle layer is empty"
                    )
                return b""
            if self._inflater.eof:
                # Another gzip member follows (RFC 1952 allows concatenation).
                self._inflater = zlib.decompressobj(wbits=31)
            try:
                data = self._inflater.decompress(self._pending, max(size, 1))
            except zlib.error as exc:
                raise CorruptArchiveError(f"the bundle layer is not valid gzip: {exc}") from None
            self._pending = self._inflater.unconsumed_tail + self._inflater.unused_data
            if data:
                self._account(len(data))
                return data

    def _account(self, produced: int) -> None:
        self.uncompressed_size += produced
        limits = self._limits
        if self.uncompressed_size > limits.max_stream_size:
            raise TotalSizeExceededError(
                f"the bundle layer inflates to more than {limits.max_stream_size} bytes "
                f"(limit max_total_size={limits.max_total_size} plus tar overhead); "
                "unpacking stopped"
            )
        if (
            self.uncompressed_size > limits.ratio_grace
            and self.uncompressed_size > limits.max_compression_ratio * self.compressed_size
        ):
            raise CompressionRatioExceededError(
                f"the bundle layer inflated {self.uncompressed_size} bytes from "
                f"{self.compressed_size} compressed bytes, more than the limit "
                f"max_compression_ratio={limits.max_compression_ratio}: a decompression bomb; "
                "unpacking stopped"
            )

    def drain(self) -> None:
        """Inflate the rest of the stream (within the limits): checks the gzip CRC and
        reads the source to its end, so :attr:`hasher` covers every byte."""
        while self._inflate(_READ_CHUNK):
            pass


def _tarinfo_class(max_header_size: int) -> type[tarfile.TarInfo]:
    class _GuardedTarInfo(tarfile.TarInfo):
        header_name: str = ""
        """The name in the member's own header (a pax or GNU long name may replace it)."""

        @classmethod
        def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Self:
            fileobj = tarfile_.fileobj
            assert fileobj is not None  # noqa: S101 - tarfile always sets it when reading
            buf = fileobj.read(tarfile.BLOCKSIZE)
            obj = cls.frombuf(buf, tarfile_.encoding or "utf-8", tarfile_.errors or "strict")
            if obj.type in _META_TYPES and obj.size > max_header_size:
                raise HeaderTooLargeError(
                    f"an extended tar header of {obj.size} bytes exceeds the limit "
                    f"max_header_size={max_header_size}"
                )
            if obj.type == tarfile.GNUTYPE_SPARSE:
                raise UnsupportedMemberError(
                    f"member {obj.name!r} is a GNU sparse file; bundles hold regular files only",
                    member=obj.name,
                )
            obj.offset = fileobj.tell() - tarfile.BLOCKSIZE
            # The name in the member's own header, before a pax or GNU long name replaces it.
            obj.header_name = obj.name
            # _proc_member is tarfile's documented extension point for subclasses.
            member: Self = obj._proc_member(tarfile_)  # type: ignore[attr-defined]
            if obj.type == tarfile.XGLTYPE:
                named = sorted({"path", "linkpath"} & set(tarfile_.pax_headers))
                if named:
                    raise AmbiguousNameError(
                        f"a global pax header sets {', '.join(named)}: tar readers disagree "
                        "on which members it renames",
                        member=member.name,
                    )
            return member

    return _GuardedTarInfo


def _placeholder(name: str) -> str:
    """``name`` as an ASCII-only header holds it: ``?`` for each non-ASCII character."""
    return "".join(c if c.isascii() else "?" for c in name)


def _check_header_name(info: tarfile.TarInfo) -> None:
    """Refuse a member whose header names another file than its pax or GNU long name."""
    name = info.name.rstrip("/")
    header = str(getattr(info, "header_name", info.name)).rstrip("/")
    if header == name:
        return
    stands_in = any(
        full.startswith(header)
        and (header == full or len(header.encode("utf-8", "surrogatepass")) >= _STAND_IN_CUT)
        for full in (name, _placeholder(name))
    )
    problem = None if stands_in else "names another file"
    if problem is None:
        try:
            _paths.canonicalise(header)
        except _paths.PathRuleError as exc:
            problem = f"is itself refused ({exc})"
    if problem is not None:
        raise AmbiguousNameError(
            f"member {info.name!r} is refused: its tar header name {header!r} {problem}; "
            "tar readers that ignore the pax or GNU long name would write another file",
            member=info.name,
        )


def _path_error(member: str, exc: _paths.PathRuleError) -> UnpackError:
    message = f"member {member!r} is refused: {exc}"
    if exc.rule == _paths.ABSOLUTE:
        return AbsolutePathError(message, member=member)
    if exc.rule == _paths.TRAVERSAL:
        return PathTraversalError(message, member=member)
    return InvalidPathError(message, member=member)


def _check_path_limits(path: str, limits: UnpackLimits, *, member: str) -> None:
    if len(path.encode("utf-8")) > limits.max_path_length:
        raise PathTooLongError(
            f"path {path[:64]!r}... is longer than max_path_length={limits.max_path_length} bytes",
            member=member,
        )
    try:
        _paths.check_components(path)
    except _paths.PathRuleError as exc:
        raise PathTooLongError(f"member {member!r} is refused: {exc}", member=member) from None
    if _paths.depth(path) > limits.max_path_depth:
        raise PathTooDeepError(
            f"path {path!r} has {_paths.depth(path)} components, more than "
            f"max_path_depth={limits.max_path_depth}",
            member=member,
        )


def _check_manifest_limits(manifest: ManifestLike, limits: UnpackLimits) -> None:
    if len(manifest.files) > limits.max_files:
        raise TooManyFilesError(
            f"the manifest lists {len(manifest.files)} files, more than "
            f"max_files={limits.max_files}",
            hint="Raise the limit for this bundle if it really needs that many files.",
        )
    for entry in manifest.files:
        if entry.size > limits.max_file_size:
            raise FileTooLargeError(
                f"the manifest lists {entry.path!r} with {entry.size} bytes, more than "
                f"max_file_size={limits.max_file_size}",
                member=entry.path,
                hint="Raise the limit for this bundle if the file really is that large.",
            )
        _check_path_limits(entry.path, limits, member=entry.path)
    if manifest.total_size > limits.max_total_size:
        raise TotalSizeExceededError(
            f"the manifest's files add up to {manifest.total_size} bytes, more than "
            f"max_total_size={limits.max_total_size}",
            hint="Raise the limit for this bundle if it really is that large.",
        )


class _Extraction:
    """The state of one unpack: what was seen, where it goes."""

    def __init__(self, manifest: ManifestLike, limits: UnpackLimits, root: Path) -> None:
        self.manifest = manifest
        self.limits = limits
        self.root = root
        self.expected = {entry.path: entry for entry in manifest.files}
        self.files: dict[str, str] = {}  # collision key -> canonical path
        self.dirs: dict[str, str] = {}  # collision key -> canonical path
        self.members = 0
        self.written = 0

    def member(self, info: tarfile.TarInfo, tar: tarfile.TarFile, *, fsync: bool) -> None:
        name = info.name
        self.members += 1
        if self.members > self.limits.max_files:
            raise TooManyFilesError(
                f"the layer holds more than max_files={self.limits.max_files} members",
                member=name,
            )
        try:
            path = _paths.canonicalise(name)
        except _paths.PathRuleError as exc:
            raise _path_error(name, exc) from None
        _check_header_name(info)
        _check_path_limits(path, self.limits, member=name)
        self._check_type(info)
        if not path:
            if info.isdir():
                return  # the archive root, "./"
            raise InvalidPathError(f"member {name!r} names the bundle root itself", member=name)
        key = _paths.collision_key(path)
        self._check_unique(path, key, is_dir=info.isdir(), member=name)
        if info.isdir():
            self._make_dirs(path)
            return
        self._extract_file(path, key, info, tar, fsync=fsync)

    def _check_type(self, info: tarfile.TarInfo) -> None:
        name = info.name
        if info.issym():
            raise SymlinkRejectedError(
                f"member {name!r} is a symbolic link (to {info.linkname!r}); "
                "bundles may hold no links",
                member=name,
            )
        if info.islnk():
            raise HardlinkRejectedError(
                f"member {name!r} is a hard link (to {info.linkname!r}); bundles may hold no links",
                member=name,
            )
        if info.ischr() or info.isblk():
            raise DeviceFileError(f"member {name!r} is a device file", member=name)
        if info.isfifo():
            raise FifoError(f"member {name!r} is a FIFO", member=name)
        if info.isdir():
            return
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.sparse is not None:
            raise UnsupportedMemberError(
                f"member {name!r} has tar type {info.type!r}; only regular files and "
                "directories are allowed",
                member=name,
            )

    def _check_unique(self, path: str, key: str, *, is_dir: bool, member: str) -> None:
        if key in self.files:
            raise DuplicateEntryError(
                f"member {member!r} names {path!r}, which the layer already holds as "
                f"{self.files[key]!r}",
                member=member,
            )
        if key in self.dirs:
            if is_dir:
                raise DuplicateEntryError(
                    f"member {member!r} repeats directory {self.dirs[key]!r}", member=member
                )
            raise PathConflictError(
                f"member {member!r} is a file, but {self.dirs[key]!r} is a directory",
                member=member,
            )
        for parent in _paths.parents(path):
            clash = self.files.get(_paths.collision_key(parent))
            if clash is not None:
                raise PathConflictError(
                    f"member {member!r} needs {clash!r} to be a directory, but it is a file",
                    member=member,
                )

    def _make_dirs(self, path: str) -> None:
        for directory in [*_paths.parents(path), path]:
            key = _paths.collision_key(directory)
            known = self.dirs.get(key)
            if known is None:
                self.dirs[key] = directory
                (self.root / directory).mkdir(mode=0o755, exist_ok=True)
            elif known != directory:
                raise PathConflictError(
                    f"directories {known!r} and {directory!r} are the same directory on a "
                    "case-insensitive or Unicode-normalising file system",
                    member=path,
                )

    def _extract_file(
        self, path: str, key: str, info: tarfile.TarInfo, tar: tarfile.TarFile, *, fsync: bool
    ) -> None:
        name = info.name
        entry = self.expected.get(path)
        if entry is None:
            raise UnexpectedFileError(
                f"member {name!r} is not listed in the bundle manifest", member=name
            )
        if info.size > self.limits.max_file_size:
            raise FileTooLargeError(
                f"member {name!r} claims {info.size} bytes, more than "
                f"max_file_size={self.limits.max_file_size}",
                member=name,
            )
        if info.size != entry.size:
            raise SizeMismatchError(
                f"member {name!r} has {info.size} bytes but the manifest says {entry.size}",
                member=name,
            )
        if self.written + info.size > self.limits.max_total_size:
            raise TotalSizeExceededError(
                f"the files exceed max_total_size={self.limits.max_total_size} bytes "
                f"at member {name!r}",
                member=name,
            )
        self.files[key] = path
        parents = _paths.parents(path)
        if parents:
            self._make_dirs(parents[-1])
        self._write(path, entry, tar.extractfile(info), fsync=fsync, member=name)

    def _write(
        self,
        path: str,
        entry: FileEntryLike,
        data: IO[bytes] | None,
        *,
        fsync: bool,
        member: str,
    ) -> None:
        if data is None:  # pragma: no cover - regular members always have a reader
            raise CorruptArchiveError(f"member {member!r} has no data", member=member)
        hasher = hashlib.sha256()
        size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.root / path, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(_WRITE_CHUNK):
                size += len(chunk)
                if size > entry.size:
                    break
                hasher.update(chunk)
                out.write(chunk)
            if size != entry.size:
                raise SizeMismatchError(
                    f"member {member!r} holds {'more' if size > entry.size else 'fewer'} "
                    f"bytes than the {entry.size} the manifest says",
                    member=member,
                )
            if hasher.hexdigest() != entry.sha256:
                raise HashMismatchError(
                    f"member {member!r} has sha256 {hasher.hexdigest()} but the manifest "
                    f"says {entry.sha256}",
                    member=member,
                )
            os.fchmod(out.fileno(), entry.mode)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        self.written += size

    def finish(self) -> None:
        missing = sorted(set(self.expected) - set(self.files.values()))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MissingFileError(
                f"the layer lacks {len(missing)} file(s) the manifest lists: {shown}{more}",
                member=missing[0],
            )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unpack_bundle(
    layer: bytes | IO[bytes] | Path,
    *,
    manifest: ManifestLike,
    destination: Path,
    limits: UnpackLimits = DEFAULT_LIMITS,
    expected_digest: str | None = None,
    fsync: bool = True,
) -> UnpackedBundle:
    """Check ``layer`` against ``manifest`` and unpack it to ``destination``, or leave nothing.

    ``layer`` is the tar.gz as bytes, a binary stream read sequentially, or a
    file path.  ``destination`` must not exist; its parent must.  Returns the
    :class:`UnpackedBundle` once ``destination`` holds exactly the manifest's
    files; raises an :class:`UnpackError` subclass naming the check that
    failed, in which case nothing was created.  ``expected_digest``
    (``sha256:<hex>``), when given, is checked against every byte of the layer
    as it streams past, before anything is renamed into place.  ``fsync``
    makes every file and directory durable before the final rename.
    """
    if destination.exists() or destination.is_symlink():
        raise DestinationExistsError(
            f"cannot unpack into {str(destination)!r}: it exists already",
            hint="Unpack every version into a fresh directory; never over an existing one.",
        )
    _check_manifest_limits(manifest, limits)
    with contextlib.ExitStack() as stack:
        if isinstance(layer, bytes):
            source: IO[bytes] = io.BytesIO(layer)
        elif isinstance(layer, Path):
            source = stack.enter_context(layer.open("rb"))
        else:
            source = layer
        staging = Path(
            tempfile.mkdtemp(
                prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent
            )
        )
        try:
            stats = _extract(source, manifest, limits, staging, fsync=fsync)
            actual = "sha256:" + stats.hasher.hexdigest()
            if expected_digest is not None and actual != expected_digest:
                raise LayerDigestMismatchError(
                    f"the bundle layer has digest {actual}, not the pinned {expected_digest}",
                    hint="The bytes were altered in transit or in a cache; fetch the layer "
                    "again by digest and never use these bytes.",
                )
            staging.chmod(0o755)
            if fsync:
                _fsync_dir(staging)
            if destination.exists() or destination.is_symlink():
                raise DestinationExistsError(
                    f"cannot unpack into {str(destination)!r}: it appeared while unpacking",
                    hint="Only one unpacker may write a given version directory.",
                )
            staging.rename(destination)
            if fsync:
                _fsync_dir(destination.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return UnpackedBundle(
        path=destination,
        manifest=manifest,
        compressed_size=stats.compressed_size,
        uncompressed_size=stats.uncompressed_size,
    )


def _extract(
    source: IO[bytes],
    manifest: ManifestLike,
    limits: UnpackLimits,
    root: Path,
    *,
    fsync: bool,
) -> _GuardedGunzip:
    gunzip = _GuardedGunzip(source, limits)
    extraction = _Extraction(manifest, limits, root)
    try:
        with tarfile.open(
            fileobj=gunzip,
            mode="r|",
            tarinfo=_tarinfo_class(limits.max_header_size),
            encoding="utf-8",
            errors="strict",
        ) as tar:
            for info in tar:
                extraction.member(info, tar, fsync=fsync)
        gunzip.drain()
    except UnicodeError as exc:
        raise InvalidPathError(f"a member name is not valid UTF-8: {exc}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptArchiveError(f"the bundle layer is not a valid tar stream: {exc}") from None
    if fsync:
        for directory in sorted(set(extraction.dirs.values()), reverse=True):
            _fsync_dir(root / directory)
    extraction.finish()
    return gunzip
