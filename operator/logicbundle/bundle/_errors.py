"""The errors of the bundle format, one class per way a bundle can be refused.

Every rejection has its own class and its own CamelCase ``reason`` so that the
controller can put it into a condition and an event without parsing messages,
and so that tests can assert *which* check fired.  None of them is retryable:
a bundle is pinned by digest, so the same bytes fail the same way every time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from logicbundle.errors import LogicBundleError

if TYPE_CHECKING:
    from logicbundle.bundle._audit import Finding

_HOSTILE_HINT = (
    "The bundle layer is malformed or hostile. Do not deploy this digest; rebuild the "
    "bundle with `logicbundle pack`, push it again and point the LogicBundle at the new digest."
)


class BundleError(LogicBundleError):
    """Root of every error of the bundle format."""

    reason = "BundleInvalid"


# --- the manifest -----------------------------------------------------------------------------


class InvalidManifestError(BundleError):
    """The bundle manifest (the config blob) is not valid JSON or breaks the contract."""

    reason = "InvalidManifest"


# --- packing ----------------------------------------------------------------------------------


class PackError(BundleError):
    """The source directory cannot be packed as it is."""

    reason = "PackFailed"


class LinkInSourceError(PackError):
    """The source directory contains a symbolic link; bundles carry no links."""

    reason = "LinkInSource"


class UnsupportedSourceFileError(PackError):
    """The source directory contains a device, FIFO, socket or other non-regular file."""

    reason = "UnsupportedFileInSource"


# --- unpacking --------------------------------------------------------------------------------


class UnpackError(BundleError):
    """The bundle layer was refused; nothing was written to the destination."""

    reason = "UnsafeBundle"

    def __init__(self, message: str, *, member: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=_HOSTILE_HINT if hint is None else hint)
        self.member = member
        """The tar member name (as found in the archive) that was refused, if any."""


class DestinationExistsError(UnpackError):
    """The destination directory exists already; unpacking never overwrites."""

    reason = "DestinationExists"


class LayerDigestMismatchError(UnpackError):
    """The layer's bytes do not have the digest the caller pinned."""

    reason = "LayerDigestMismatch"


class CorruptArchiveError(UnpackError):
    """The layer is not a well-formed gzip-compressed tar stream."""

    reason = "CorruptArchive"


class InvalidPathError(UnpackError):
    """A member name is empty, not UTF-8, or contains a backslash or a control character."""

    reason = "InvalidPath"


class AmbiguousNameError(UnpackError):
    """A member's tar header names another file than its pax ``path`` or GNU long name.

    Readers that honour the extended name and readers that do not would write
    different files; a scanner could approve one while an unpacker writes the
    other.  Only a stand-in is accepted in the header: the same name, its first
    bytes cut to the header field, or its ASCII placeholder (``?`` for each
    non-ASCII character), and never one that is absolute or has a ``..``.
    """

    reason = "AmbiguousName"


class AbsolutePathError(UnpackError):
    """A member name is an absolute path."""

    reason = "AbsolutePath"


class PathTraversalError(UnpackError):
    """A member name has a ``..`` component."""

    reason = "PathTraversal"


class LinkRejectedError(UnpackError):
    """A member is a link; bundles carry no links at all."""

    reason = "LinkRejected"


class SymlinkRejectedError(LinkRejectedError):
    """A member is a symbolic link."""

    reason = "SymlinkRejected"


class HardlinkRejectedError(LinkRejectedError):
    """A member is a hard link."""

    reason = "HardlinkRejected"


class DeviceFileError(UnpackError):
    """A member is a character or block device."""

    reason = "DeviceFile"


class FifoError(UnpackError):
    """A member is a FIFO (named pipe)."""

    reason = "Fifo"


class UnsupportedMemberError(UnpackError):
    """A member has a type other than regular file or directory (sparse, contiguous, ...)."""

    reason = "UnsupportedMemberType"


class DuplicateEntryError(UnpackError):
    """Two members name the same path, possibly spelled differently (``a/./b``, case, Unicode)."""

    reason = "DuplicateEntry"


class PathConflictError(UnpackError):
    """A member needs a path to be both a file and a directory."""

    reason = "PathConflict"


class LimitExceededError(UnpackError):
    """The layer exceeds one of the :class:`UnpackLimits`."""

    reason = "LimitExceeded"


class TotalSizeExceededError(LimitExceededError):
    """The uncompressed layer, or the sum of the file sizes, is larger than allowed."""

    reason = "TotalSizeExceeded"


class FileTooLargeError(LimitExceededError):
    """One file is larger than allowed."""

    reason = "FileTooLarge"


class TooManyFilesError(LimitExceededError):
    """The layer has more members than allowed."""

    reason = "TooManyFiles"


class PathTooDeepError(LimitExceededError):
    """A path has more components than allowed."""

    reason = "PathTooDeep"


class PathTooLongError(LimitExceededError):
    """A path is longer (in UTF-8 bytes) than allowed."""

    reason = "PathTooLong"


class CompressionRatioExceededError(LimitExceededError):
    """The layer inflates far more than real content does: a decompression bomb."""

    reason = "CompressionRatioExceeded"


class HeaderTooLargeError(LimitExceededError):
    """A pax or GNU extended header is larger than any honest one."""

    reason = "HeaderTooLarge"


class ManifestMismatchError(UnpackError):
    """The layer does not hold exactly the files the manifest lists."""

    reason = "ManifestMismatch"


class HashMismatchError(ManifestMismatchError):
    """A file's sha256 differs from the manifest."""

    reason = "HashMismatch"


class SizeMismatchError(ManifestMismatchError):
    """A file's size differs from the manifest."""

    reason = "SizeMismatch"


class MissingFileError(ManifestMismatchError):
    """A file listed in the manifest is absent from the layer."""

    reason = "MissingFile"


class UnexpectedFileError(ManifestMismatchError):
    """The layer holds a file the manifest does not list."""

    reason = "UnexpectedFile"


# --- the content audit ------------------------------------------------------------------------


class AuditRejectedError(BundleError):
    """The content audit found denied constructs and the policy is ``reject``."""

    reason = "AuditRejected"

    def __init__(
        self, message: str, *, findings: Sequence[Finding], hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.findings = tuple(findings)
        """Every finding of the audit, in file and line order."""
