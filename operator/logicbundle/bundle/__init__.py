"""The logic bundle artifact format: manifest contract, deterministic pack, safe unpack, audit.

This package is pure: it reads and writes local files and bytes, never the
network, so the CLI (pack), the operator (verify, audit) and the agent
(unpack) share one implementation of the format.  The media types of the OCI
artifact are named here, once, for the whole project.

* :class:`BundleManifest` (with :func:`parse_manifest`, :func:`interface_hash`)
  is the contract carried in the config blob.
* :func:`pack_directory` / :func:`pack_directory_to` turn a directory into a
  byte-identical tar.gz layer and its manifest.
* :func:`unpack_bundle` treats a layer as hostile input, checks it against the
  manifest and the :class:`UnpackLimits`, and leaves nothing behind on failure.
* :func:`audit_sources` / :func:`audit_directory` scan Python code for denied
  constructs; :func:`enforce_audit` applies an :class:`AuditPolicy`.  The audit
  is defence in depth; the signature is the trust root.

Names are imported lazily (PEP 562): the agent imports the unpacker in every
pod without loading pydantic, which only the manifest model, the packer and
the audit need.

Every error derives from :class:`BundleError` (itself a
:class:`logicbundle.errors.LogicBundleError`) and has a distinct ``reason``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from logicbundle.bundle._audit import (
        DEFAULT_DENY_LIST,
        RULE_DENIED_IMPORT,
        RULE_DENIED_NAME,
        RULE_DYNAMIC_IMPORT,
        RULE_OPAQUE_CODE,
        RULE_SYNTAX_ERROR,
        AuditPolicy,
        AuditReport,
        DenyList,
        Finding,
        audit_directory,
        audit_sources,
        enforce_audit,
    )
    from logicbundle.bundle._errors import (
        AbsolutePathError,
        AmbiguousNameError,
        AuditRejectedError,
        BundleError,
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
        InvalidManifestError,
        InvalidPathError,
        LayerDigestMismatchError,
        LimitExceededError,
        LinkInSourceError,
        LinkRejectedError,
        ManifestMismatchError,
        MissingFileError,
        PackError,
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
        UnsupportedSourceFileError,
    )
    from logicbundle.bundle._manifest import (
        FILE_MODE_EXECUTABLE,
        FILE_MODE_REGULAR,
        BundleManifest,
        FileEntry,
        FunctionSignature,
        Interface,
        Parameter,
        canonical_json,
        interface_hash,
        parse_manifest,
    )
    from logicbundle.bundle._media import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE
    from logicbundle.bundle._pack import (
        GZIP_LEVEL,
        PackedBundle,
        PackResult,
        collect_source_files,
        layer_digest,
        pack_directory,
        pack_directory_to,
        sha256_digest,
    )
    from logicbundle.bundle._paths import PathRuleError, check_canonical, collision_key
    from logicbundle.bundle._unpack import (
        DEFAULT_LIMITS,
        UnpackedBundle,
        UnpackLimits,
        unpack_bundle,
    )

_EXPORTS: Final[dict[str, str]] = {
    "AuditPolicy": "_audit",
    "AuditReport": "_audit",
    "DEFAULT_DENY_LIST": "_audit",
    "DenyList": "_audit",
    "Finding": "_audit",
    "RULE_DENIED_IMPORT": "_audit",
    "RULE_DENIED_NAME": "_audit",
    "RULE_DYNAMIC_IMPORT": "_audit",
    "RULE_OPAQUE_CODE": "_audit",
    "RULE_SYNTAX_ERROR": "_audit",
    "audit_directory": "_audit",
    "audit_sources": "_audit",
    "enforce_audit": "_audit",
    "AbsolutePathError": "_errors",
    "AmbiguousNameError": "_errors",
    "AuditRejectedError": "_errors",
    "BundleError": "_errors",
    "CompressionRatioExceededError": "_errors",
    "CorruptArchiveError": "_errors",
    "DestinationExistsError": "_errors",
    "DeviceFileError": "_errors",
    "DuplicateEntryError": "_errors",
    "FifoError": "_errors",
    "FileTooLargeError": "_errors",
    "HardlinkRejectedError": "_errors",
    "HashMismatchError": "_errors",
    "HeaderTooLargeError": "_errors",
    "InvalidManifestError": "_errors",
    "InvalidPathError": "_errors",
    "LayerDigestMismatchError": "_errors",
    "LimitExceededError": "_errors",
    "LinkInSourceError": "_errors",
    "LinkRejectedError": "_errors",
    "ManifestMismatchError": "_errors",
    "MissingFileError": "_errors",
    "PackError": "_errors",
    "PathConflictError": "_errors",
    "PathTooDeepError": "_errors",
    "PathTooLongError": "_errors",
    "PathTraversalError": "_errors",
    "SizeMismatchError": "_errors",
    "SymlinkRejectedError": "_errors",
    "TooManyFilesError": "_errors",
    "TotalSizeExceededError": "_errors",
    "UnexpectedFileError": "_errors",
    "UnpackError": "_errors",
    "UnsupportedMemberError": "_errors",
    "UnsupportedSourceFileError": "_errors",
    "BundleManifest": "_manifest",
    "FILE_MODE_EXECUTABLE": "_manifest",
    "FILE_MODE_REGULAR": "_manifest",
    "FileEntry": "_manifest",
    "FunctionSignature": "_manifest",
    "Interface": "_manifest",
    "Parameter": "_manifest",
    "canonical_json": "_manifest",
    "interface_hash": "_manifest",
    "parse_manifest": "_manifest",
    "ARTIFACT_TYPE": "_media",
    "CONFIG_MEDIA_TYPE": "_media",
    "LAYER_MEDIA_TYPE": "_media",
    "GZIP_LEVEL": "_pack",
    "PackResult": "_pack",
    "PackedBundle": "_pack",
    "collect_source_files": "_pack",
    "layer_digest": "_pack",
    "pack_directory": "_pack",
    "pack_directory_to": "_pack",
    "sha256_digest": "_pack",
    "DEFAULT_LIMITS": "_unpack",
    "UnpackLimits": "_unpack",
    "UnpackedBundle": "_unpack",
    "unpack_bundle": "_unpack",
    "PathRuleError": "_paths",
    "check_canonical": "_paths",
    "collision_key": "_paths",
}
"""Public name -> the private module that defines it."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "DEFAULT_DENY_LIST",
    "DEFAULT_LIMITS",
    "FILE_MODE_EXECUTABLE",
    "FILE_MODE_REGULAR",
    "GZIP_LEVEL",
    "LAYER_MEDIA_TYPE",
    "RULE_DENIED_IMPORT",
    "RULE_DENIED_NAME",
    "RULE_DYNAMIC_IMPORT",
    "RULE_OPAQUE_CODE",
    "RULE_SYNTAX_ERROR",
    "AbsolutePathError",
    "AmbiguousNameError",
    "AuditPolicy",
    "AuditRejectedError",
    "AuditReport",
    "BundleError",
    "BundleManifest",
    "CompressionRatioExceededError",
    "CorruptArchiveError",
    "DenyList",
    "DestinationExistsError",
    "DeviceFileError",
    "DuplicateEntryError",
    "FifoError",
    "FileEntry",
    "FileTooLargeError",
    "Finding",
    "FunctionSignature",
    "HardlinkRejectedError",
    "HashMismatchError",
    "HeaderTooLargeError",
    "Interface",
    "InvalidManifestError",
    "InvalidPathError",
    "LayerDigestMismatchError",
    "LimitExceededError",
    "LinkInSourceError",
    "LinkRejectedError",
    "ManifestMismatchError",
    "MissingFileError",
    "PackError",
    "PackResult",
    "PackedBundle",
    "Parameter",
    "PathConflictError",
    "PathRuleError",
    "PathTooDeepError",
    "PathTooLongError",
    "PathTraversalError",
    "SizeMismatchError",
    "SymlinkRejectedError",
    "TooManyFilesError",
    "TotalSizeExceededError",
    "UnexpectedFileError",
    "UnpackError",
    "UnpackLimits",
    "UnpackedBundle",
    "UnsupportedMemberError",
    "UnsupportedSourceFileError",
    "audit_directory",
    "audit_sources",
    "canonical_json",
    "check_canonical",
    "collect_source_files",
    "collision_key",
    "enforce_audit",
    "interface_hash",
    "layer_digest",
    "pack_directory",
    "pack_directory_to",
    "parse_manifest",
    "sha256_digest",
    "unpack_bundle",
]
