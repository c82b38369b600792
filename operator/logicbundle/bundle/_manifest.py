"""The bundle manifest: the contract between a bundle's author, the operator and the application.

The manifest travels as the config blob of the OCI artifact (media type
:data:`CONFIG_MEDIA_TYPE`), so it is covered by the signed manifest digest.  It
names the bundle, lists every file with its sha256, size and mode (the unpacker
refuses any layer that does not match this list exactly), and describes the
bundle's *interface*, whose hash lets the in-application SDK refuse a bundle
built against a different contract than the one the application declares.

Parsing validates: once a :class:`BundleManifest` exists, it is well-formed.
Unknown fields are rejected rather than ignored, so that a newer format is never
misread as an older one, and so is a key given twice in one object (JSON
parsers disagree on which one wins).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from logicbundle.bundle import _paths
from logicbundle.bundle._errors import InvalidManifestError
from logicbundle.contract import DuplicateKeyError, loads_unique

_IDENTIFIER: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED: Final = rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*"

FILE_MODE_REGULAR: Final = 0o644
"""Mode of every non-executable file in a bundle."""
FILE_MODE_EXECUTABLE: Final = 0o755
"""Mode of every executable file (and of every directory) in a bundle."""

_ParamKind = Literal[
    "positional-only", "positional-or-keyword", "keyword-only", "var-positional", "var-keyword"
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Parameter(_Model):
    """One parameter of a declared function."""

    name: Annotated[str, Field(pattern=rf"^{_IDENTIFIER}$", description="The parameter's name.")]
    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            description="The annotation as source text, e.g. `dict[str, int]`. Default `Any`.",
        ),
    ] = "Any"
    kind: Annotated[
        _ParamKind,
        Field(description="How the parameter is passed. Default `positional-or-keyword`."),
    ] = "positional-or-keyword"
    required: Annotated[bool, Field(strict=True, description="False when it has a default.")] = True


class FunctionSignature(_Model):
    """The signature of one function the bundle provides."""

    params: Annotated[
        tuple[Parameter, ...], Field(description="Parameters in declaration order.")
    ] = ()
    returns: Annotated[
        str,
        Field(min_length=1, max_length=1024, description="Return annotation as source text."),
    ] = "Any"

    @field_validator("params")
    @classmethod
    def _unique_names(cls, params: tuple[Parameter, ...]) -> tuple[Parameter, ...]:
        seen: set[str] = set()
        for param in params:
            if param.name in seen:
                raise ValueError(f"parameter {param.name!r} is declared twice")
            seen.add(param.name)
        return params


class Interface(_Model):
    """What the bundle offers the application: declared functions, a JSON schema, or both.

    Python bundles declare ``functions`` (name -> signature); data bundles (rule
    tables, configuration) describe their shape with ``jsonSchema``.
    """

    functions: Annotated[
        dict[Annotated[str, Field(pattern=rf"^{_DOTTED}$")], FunctionSignature],
        Field(description="Functions by (dotted) name. Default empty."),
    ] = Field(default_factory=dict)
    json_schema: Annotated[
        dict[str, JsonValue] | None,
        Field(description="A JSON schema of the bundle's data. Default none."),
    ] = None

    @model_validator(mode="after")
    def _not_empty(self) -> Interface:
        if not self.functions and self.json_schema is None:
            raise ValueError(
                "the interface declares nothing: give `functions`, `jsonSchema`, or both"
            )
        return self


def canonical_json(value: Any) -> bytes:
    """Serialise JSON-compatible data canonically: sorted keys, no whitespace, UTF-8.

    Not RFC 8785: numbers are written as Python writes them.  NaN and infinities
    are refused.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def interface_hash(interface: Interface) -> str:
    """The ``interfaceHash`` of an interface: ``sha256:`` and the hex digest of its canonical JSON.

    The canonical JSON is the interface with every default filled in, fields
    named in camelCase, ``jsonSchema`` left out when absent, keys sorted, no
    whitespace, UTF-8 (see :func:`canonical_json`).  Two interfaces that differ
    only in spelled-out defaults or key order therefore hash the same.  The SDK
    computes the same value from what the application declares.
    """
    data = interface.model_dump(mode="json", by_alias=True, exclude_none=True)
    return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()


class FileEntry(_Model):
    """One file of the bundle, as the unpacker will check it."""

    path: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="Canonical relative POSIX path inside the bundle.",
        ),
    ]
    sha256: Annotated[
        str, Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex sha256 of the content.")
    ]
    size: Annotated[int, Field(strict=True, ge=0, description="Size in bytes.")]
    mode: Annotated[
        int, Field(strict=True, description="0o644 (420) or 0o755 (493, executable).")
    ] = FILE_MODE_REGULAR

    @field_validator("path")
    @classmethod
    def _canonical_path(cls, path: str) -> str:
        try:
            return _paths.check_canonical(path)
        except _paths.PathRuleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: int) -> int:
        if mode not in (FILE_MODE_REGULAR, FILE_MODE_EXECUTABLE):
            raise ValueError(
                f"mode {mode:#o} is not allowed: use 0o644 (420) or 0o755 (493, executable)"
            )
        return mode


_VERSION_RE: Final = re.compile(r"^(\d+)\.(\d+)\.(\d+)(.*)$")


class BundleManifest(_Model):
    """The bundle manifest, serialised as the config blob of the artifact."""

    name: Annotated[
        str,
        Field(
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            max_length=56,
            description=(
                "Lower-case DNS label, at most 56 characters, so that the pod annotation "
                "`logicbundle.io/target.<name>` stays a valid annotation key."
            ),
        ),
    ]
    version: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$",
            description="The author's version label (informational; digests decide).",
        ),
    ]
    entrypoint: Annotated[
        str | None,
        Field(
            pattern=rf"^{_DOTTED}:{_DOTTED}$",
            description="`module:object` for Python bundles; none for data bundles.",
        ),
    ] = None
    interface: Interface
    interface_hash: Annotated[
        str,
        Field(
            pattern=r"^sha256:[0-9a-f]{64}$",
            description="`interface_hash(interface)`; checked when the manifest is parsed.",
        ),
    ]
    min_agent_version: Annotated[
        str,
        Field(
            pattern=r"^\d+\.\d+\.\d+$",
            description="Oldest reload agent (MAJOR.MINOR.PATCH) that may load the bundle.",
        ),
    ] = "0.0.0"
    files: Annotated[
        tuple[FileEntry, ...],
        Field(min_length=1, description="Every file of the layer; kept sorted by path."),
    ]
    labels: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=253)], str],
        Field(description="Free-form labels. Default empty."),
    ] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _files_form_a_tree(cls, files: tuple[FileEntry, ...]) -> tuple[FileEntry, ...]:
        ordered = tuple(sorted(files, key=lambda f: f.path))
        by_key: dict[str, str] = {}
        for entry in ordered:
            key = _paths.collision_key(entry.path)
            if key in by_key:
                raise ValueError(
                    f"files {by_key[key]!r} and {entry.path!r} name the same file on a "
                    "case-insensitive or Unicode-normalising file system; rename one"
                )
            by_key[key] = entry.path
        directories: dict[str, str] = {}
        for entry in ordered:
            for parent in _paths.parents(entry.path):
                key = _paths.collision_key(parent)
                clash = by_key.get(key)
                if clash is not None:
                    raise ValueError(
                        f"{clash!r} is listed as a file but {entry.path!r} needs it to be "
                        "a directory"
                    )
                spelled = directories.setdefault(key, parent)
                if spelled != parent:
                    raise ValueError(
                        f"directories {spelled!r} and {parent!r} are the same directory on a "
                        "case-insensitive or Unicode-normalising file system; rename one"
                    )
        return ordered

    @model_validator(mode="after")
    def _contract_holds(self) -> BundleManifest:
        expected = interface_hash(self.interface)
        if self.interface_hash != expected:
            raise ValueError(
                f"interfaceHash {self.interface_hash} does not match the interface "
                f"(its hash is {expected}); recompute it with interface_hash()"
            )
        if self.entrypoint is not None:
            module = self.entrypoint.split(":", 1)[0].replace(".", "/")
            candidates = (f"{module}.py", f"{module}/__init__.py")
            if not any(self.file(c) is not None for c in candidates):
                raise ValueError(
                    f"entrypoint {self.entrypoint!r} names module file "
                    f"{candidates[0]!r} (or {candidates[1]!r}), which is not in `files`"
                )
        return self

    def file(self, path: str) -> FileEntry | None:
        """The entry for ``path`` (canonical spelling), or None."""
        for entry in self.files:
            if entry.path == path:
                return entry
        return None

    @property
    def total_size(self) -> int:
        """Sum of the sizes of all files."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """The canonical JSON of the manifest: the exact bytes of the config blob."""
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    def accepts_agent(self, agent_version: str) -> bool:
        """True when an agent of ``agent_version`` may load this bundle.

        ``agent_version`` is read as ``MAJOR.MINOR.PATCH`` optionally followed by
        a suffix; a suffix other than ``+local`` marks a pre-release, which comes
        *before* its release (``0.2.0.dev0`` does not satisfy ``0.2.0``).
        Unparseable versions are refused.
        """
        match = _VERSION_RE.match(agent_version)
        if match is None:
            return False
        release = tuple(int(x) for x in match.group(1, 2, 3))
        suffix = match.group(4)
        minimum = tuple(int(x) for x in self.min_agent_version.split("."))
        if release != minimum:
            return release > minimum
        return suffix == "" or suffix.startswith("+")


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(manifest)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def parse_manifest(data: bytes | str | Mapping[str, Any]) -> BundleManifest:
    """Parse and validate a bundle manifest from JSON (bytes or text) or a mapping.

    Raises :class:`InvalidManifestError` listing every problem found, or naming
    a key given twice in one JSON object.
    """
    if isinstance(data, bytes | str):
        try:
            loads_unique(data)
        except DuplicateKeyError as exc:
            raise InvalidManifestError(
                f"the bundle manifest is invalid: {exc}",
                hint="JSON parsers disagree on which of two equal keys wins; give each key "
                "once, or re-create the manifest with `logicbundle pack`.",
            ) from None
        except (ValueError, RecursionError):
            pass  # not JSON: the model's parser below says where
    try:
        if isinstance(data, bytes | str):
            return BundleManifest.model_validate_json(data)
        return BundleManifest.model_validate(data)
    except ValidationError as exc:
        raise InvalidManifestError(
            f"the bundle manifest is invalid ({exc.error_count()} problem(s)):\n{_describe(exc)}",
            hint="Fix the listed fields, or re-create the manifest with `logicbundle pack`.",
        ) from None
