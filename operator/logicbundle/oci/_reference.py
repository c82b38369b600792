"""Artifact references: ``registry[:port]/repository[:tag][@sha256:...]``.

The registry host is always explicit: the operator never guesses Docker Hub,
because a reference that silently points at another registry is a supply
chain bug.  ``localhost`` and hosts with a dot or a port are registries;
a first component without either is rejected as ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from logicbundle.oci._errors import InvalidReferenceError
from logicbundle.oci._models import check_digest

# The distribution reference grammar, without the docker.io defaults.
_HOST_RE: Final = re.compile(
    r"^(?:localhost|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE: Final = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MAX_REPOSITORY_LENGTH: Final = 255


def _looks_like_host(component: str) -> bool:
    return component == "localhost" or "." in component or ":" in component or "[" in component


def check_tag(tag: str) -> str:
    """Return *tag* when it is a valid OCI tag, or raise :class:`InvalidReferenceError`."""
    if not _TAG_RE.fullmatch(tag):
        raise InvalidReferenceError(
            f"{tag[:140]!r} is not a valid tag",
            hint="Tags are up to 128 characters of [A-Za-z0-9_.-], not starting with . or -.",
        )
    return tag


@dataclass(frozen=True)
class Reference:
    """A parsed artifact reference.

    ``tag`` and ``digest`` are both optional; when both are present the digest
    wins (the tag is kept for display only, as the distribution spec says).
    """

    registry: str
    """Host with optional port, e.g. ``registry.example.com:5000``."""
    repository: str
    """Repository path inside the registry, e.g. ``team/rules``."""
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if not _HOST_RE.fullmatch(self.registry):
            raise InvalidReferenceError(f"{self.registry[:100]!r} is not a registry host")
        if len(self.repository) > _MAX_REPOSITORY_LENGTH or not _REPOSITORY_RE.fullmatch(
            self.repository
        ):
            raise InvalidReferenceError(
                f"{self.repository[:100]!r} is not a valid repository name",
                hint="Repository names are lowercase path components separated by '/'.",
            )
        if self.tag is not None:
            check_tag(self.tag)
        if self.digest is not None:
            check_digest(self.digest)

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``registry[:port]/repository[:tag][@sha256:<hex>]``."""
        if "://" in text:
            raise InvalidReferenceError(
                f"{_safe(text)!r} contains a URL scheme",
                hint="Write the reference without http:// or https://; "
                "set insecure to use plain HTTP.",
            )
        rest, at, digest = text.partition("@")
        host, slash, path = rest.partition("/")
        if not slash or not path or not _looks_like_host(host):
            raise InvalidReferenceError(
                f"{_safe(text)!r} does not start with a registry host",
                hint="Write the registry explicitly, e.g. registry.example.com/team/rules:v1 "
                "(Docker Hub is never assumed).",
            )
        repository, colon, tag = path.rpartition(":")
        if not colon or "/" in tag:
            repository, tag = path, ""
        return cls(
            registry=host,
            repository=repository,
            tag=tag or None,
            digest=digest if at else None,
        )

    @property
    def reference(self) -> str:
        """The manifest reference used in API paths: the digest if known, else the tag."""
        if self.digest:
            return self.digest
        if self.tag:
            return self.tag
        raise InvalidReferenceError(
            f"{self} names neither a tag nor a digest",
            hint="Add :<tag> or @sha256:<digest> to the reference.",
        )

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to *digest* (the tag is kept for display)."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        """The same repository at *tag*, with no digest."""
        return Reference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _safe(text: str) -> str:
    """Trim a user-supplied reference for an error message, dropping any userinfo."""
    if "@" in text.split("/", 1)[0]:
        text = text.split("@", 1)[1]
    if "://" in text:
        scheme, _, rest = text.partition("://")
        host, slash, path = rest.partition("/")
        text = f"{scheme}://{host.rpartition('@')[2]}{slash}{path.split('?', 1)[0]}"
    return text[:200]
