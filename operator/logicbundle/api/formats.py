"""String formats of the API: OCI references, digests, durations, names.

Each format is a regular expression written once and used twice: by pydantic
(so manifests are checked offline, by the CLI and the tests) and by the
generated CRD (so the API server refuses the same input).  The expressions
use only the syntax common to Go's RE2 (the API server) and Rust's ``regex``
(pydantic): no look-around, no back-references.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

from pydantic import AfterValidator, Field, PlainSerializer, StringConstraints

DIGEST_PATTERN: Final = r"^sha256:[a-f0-9]{64}$"
"""A content digest: ``sha256:`` and 64 lower-case hex characters.

sha256 is the only algorithm logicbundle pins by; OCI allows others, but
accepting them would only widen what has to be trusted.
"""

_DOMAIN_COMPONENT: Final = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN: Final = (
    rf"(?:(?:localhost|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})+|\[[a-fA-F0-9:]+\])"
    rf"(?::[0-9]{{1,5}})?|{_DOMAIN_COMPONENT}:[0-9]{{1,5}})"
)
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG: Final = r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}"

OCI_REFERENCE_PATTERN: Final = (
    rf"^{_DOMAIN}/{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    rf"(?::{_TAG}(?:@sha256:[a-f0-9]{{64}})?|@sha256:[a-f0-9]{{64}})$"
)
"""A fully qualified OCI reference: ``registry/repo:tag`` or ``registry/repo@sha256:...``.

The registry host is required (it must contain a dot or a port, or be
``localhost``): there is no implicit ``docker.io``, because an ambiguous
reference is a supply-chain risk.  A tag or a digest is required: there is no
implicit ``latest``.  ``repository:tag@sha256:...`` is accepted and the digest
wins; the tag is then only informational.
"""

OCI_REFERENCE_MESSAGE: Final = (
    "must be a fully qualified OCI reference with a tag or a digest: "
    "registry.example.com/repository:tag or registry.example.com/repository@sha256:<64 hex> "
    "(the registry host is required, and there is no implicit latest)"
)
"""What ``kubectl apply`` and the offline checks say about a malformed reference.

The CRD checks the reference with a CEL rule carrying this message rather than
a ``pattern``: the API server answers a failed pattern with the whole
500-character expression, which tells a user nothing.
"""

DURATION_PATTERN: Final = r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$"
"""A Go-style duration such as ``30s``, ``5m``, ``1h30m`` or ``1.5h`` (units ms, s, m, h)."""

DNS_LABEL_PATTERN: Final = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$"
"""An RFC 1123 label: lower-case alphanumerics and ``-``, at most 63 characters."""

DNS_SUBDOMAIN_PATTERN: Final = (
    r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$"
)
"""An RFC 1123 subdomain, the format of most Kubernetes object names."""

CONDITION_TYPE_PATTERN: Final = (
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)
"""``metav1.Condition.type``: a qualified name, CamelCase by convention."""

CONDITION_REASON_PATTERN: Final = r"^[A-Za-z](?:[A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
"""``metav1.Condition.reason``: a CamelCase word, the same pattern Kubernetes enforces."""

ABSOLUTE_PATH_PATTERN: Final = r"^/(?:[^/\x00]+/?)*$"
"""An absolute path inside a container."""

LOCAL_HTTP_URL_PATTERN: Final = (
    r"^http://(?:localhost|127\.0\.0\.1|\[::1\])(?::[0-9]{1,5})?(?:/\S*)?$"
)
"""An ``http://`` URL on the pod's loopback interface (``localhost``, ``127.0.0.1`` or ``[::1]``).

Hooks and health checks talk to the application inside the same pod; a URL
that leaves the pod is refused rather than followed.
"""

HTTP_URL_PATTERN: Final = r"^https?://[^\s/?#]+(?:/\S*)?$"
"""An ``http://`` or ``https://`` URL."""

PLACEHOLDERS: Final = ("namespace", "bundle", "digest", "stable_digest")
"""The placeholders a PromQL template may use, each written ``{{name}}``."""

_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN, max_length=71)]


def _oci_reference(value: str) -> str:
    if not re.fullmatch(OCI_REFERENCE_PATTERN, value):
        raise ValueError(OCI_REFERENCE_MESSAGE)
    return value


OciReference = Annotated[
    str,
    StringConstraints(max_length=512),
    AfterValidator(_oci_reference),
    Field(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches(r'{OCI_REFERENCE_PATTERN}')",
                    "message": OCI_REFERENCE_MESSAGE,
                }
            ]
        }
    ),
]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
ObjectName = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
ConditionType = Annotated[str, StringConstraints(pattern=CONDITION_TYPE_PATTERN, max_length=316)]
ConditionReason = Annotated[
    str, StringConstraints(pattern=CONDITION_REASON_PATTERN, min_length=1, max_length=1024)
]
ContainerPath = Annotated[
    str, StringConstraints(pattern=ABSOLUTE_PATH_PATTERN, min_length=1, max_length=4096)
]
LocalHttpUrl = Annotated[str, StringConstraints(pattern=LOCAL_HTTP_URL_PATTERN, max_length=2048)]
HttpUrl = Annotated[str, StringConstraints(pattern=HTTP_URL_PATTERN, max_length=2048)]
Percent = Annotated[int, Field(ge=0, le=100, strict=True)]


def _require_timezone(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (Kubernetes times are UTC, RFC 3339)")
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """``value`` the way ``metav1.Time`` writes it: RFC 3339, UTC, whole seconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    datetime,
    AfterValidator(_require_timezone),
    PlainSerializer(format_timestamp, return_type=str, when_used="json-unless-none"),
]
"""A point in time, serialized as RFC 3339 in UTC with whole seconds (``metav1.Time``)."""

_DURATION_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}
_DURATION_PART_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_RE: Final = re.compile(DURATION_PATTERN)


def parse_duration(value: str) -> timedelta:
    """Parse a Go-style duration (``1h30m``, ``2.5s``) into a :class:`~datetime.timedelta`.

    Raises :class:`ValueError` for anything :data:`DURATION_PATTERN` refuses.
    """
    if not _DURATION_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a duration; write a number and a unit "
            "(ms, s, m or h), e.g. '30s', '5m' or '1h30m'"
        )
    total = timedelta()
    for number, unit in _DURATION_PART_RE.findall(value):
        total += float(number) * _DURATION_UNITS[unit]
    return total


def format_duration(value: timedelta) -> str:
    """Write ``value`` as a Go-style duration (``1h30m``, ``45s``, ``250ms``)."""
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds < 0:
        raise ValueError("durations in the API are never negative")
    if milliseconds == 0:
        return "0s"
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{seconds}s" if seconds else "")
    parts.append(f"{millis}ms" if millis else "")
    return "".join(parts)


def short_digest(digest: str, *, length: int = 12) -> str:
    """The first ``length`` hex characters of a digest, as ``kubectl get`` shows it."""
    return digest.removeprefix("sha256:")[:length]


def template_placeholders(template: str) -> list[str]:
    """The placeholder names used in a PromQL template, in order of appearance."""
    return [match.group(1) for match in _PLACEHOLDER_RE.finditer(template)]


def unknown_placeholders(template: str) -> list[str]:
    """Placeholders in ``template`` that are not among :data:`PLACEHOLDERS`."""
    return [name for name in template_placeholders(template) if name not in PLACEHOLDERS]
