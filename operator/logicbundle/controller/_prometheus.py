"""Asking Prometheus for one number, with the credentials the spec names and none leaking.

The settings (:class:`logicbundle.api.Prometheus`) name Secrets and
ConfigMaps; :func:`endpoint` reads them into a :class:`PrometheusEndpoint`
(the address, the ``Authorization`` header, the CA bundle), and :func:`query`
asks ``/api/v1/query``.

No credential may reach a log line, an event, a condition or an exception
message.  The endpoint's ``repr`` shows none; every message this module
raises is built from the address with its user-info and query string
stripped, and passed through :func:`redact` with the credentials it holds,
in case a server echoes one back.  A refused query (401, 403) says so and
what to check, without the value.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logicbundle.api import Prometheus
from logicbundle.api.formats import parse_duration
from logicbundle.api.v1alpha1 import (
    DEFAULT_BASIC_AUTH_PASSWORD_KEY,
    DEFAULT_BASIC_AUTH_USERNAME_KEY,
    DEFAULT_BEARER_TOKEN_KEY,
    DEFAULT_CA_KEY,
)
from logicbundle.controller._source import ConfigError, ObjectReader
from logicbundle.errors import LogicBundleError

REDACTED = "[redacted]"
"""What replaces a credential that found its way into a message."""


class PrometheusError(LogicBundleError):
    """The query could not be answered: Prometheus down, refused, or an answer not understood."""

    reason = "PrometheusUnavailable"
    retryable = True


def safe_address(address: str) -> str:
    """``address`` without user-info, query string or fragment: fit for a message."""
    parts = urllib.parse.urlsplit(address)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port is not None else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every credential in ``secrets`` (and its base64 form) replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True, kw_only=True)
class PrometheusEndpoint:
    """Where to send a query, and with which credentials (never shown by ``repr``)."""

    address: str
    timeout: float
    authorization: str | None = field(default=None, repr=False)
    """The ``Authorization`` header's value, or None."""
    ca_pem: bytes | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Every credential this endpoint holds (and its encodings): what :func:`redact` hides."""

    def headers(self) -> dict[str, str]:
        """The request headers."""
        headers = {"Accept": "application/json"}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        return headers


def _key(data: Mapping[str, bytes] | Mapping[str, str], key: str, *, what: str) -> str:
    if key not in data:
        raise ConfigError(
            f"{what} has no key {key!r}",
            hint=f"Add the key {key!r}, or name another key in the Prometheus settings.",
        )
    value = data[key]
    text = value.decode("utf-8", errors="strict") if isinstance(value, bytes) else value
    return text.strip()


def endpoint(settings: Prometheus, *, namespace: str, reader: ObjectReader) -> PrometheusEndpoint:
    """The endpoint ``settings`` describe, its Secrets and ConfigMaps read in ``namespace``.

    Raises :class:`ConfigError` (naming the object and key, never a value)
    when one is missing or unusable.
    """
    authorization: str | None = None
    secrets: list[str] = []
    parts = urllib.parse.urlsplit(str(settings.address))
    for part in (parts.username, parts.password, parts.query):
        if part:
            secrets.append(urllib.parse.unquote(part))
            secrets.append(part)
    if settings.bearer_token_secret_ref is not None:
        ref = settings.bearer_token_secret_ref
        token = _key(
            reader.secret(namespace, ref.name),
            ref.key or DEFAULT_BEARER_TOKEN_KEY,
            what=f"Secret {namespace}/{ref.name}",
        )
        if not token:
            raise ConfigError(f"the bearer token in Secret {namespace}/{ref.name} is empty")
        authorization = f"Bearer {token}"
        secrets.append(token)
    elif settings.basic_auth_secret_ref is not None:
        name = settings.basic_auth_secret_ref.name
        data = reader.secret(namespace, name)
        what = f"Secret {namespace}/{name}"
        username = _key(data, DEFAULT_BASIC_AUTH_USERNAME_KEY, what=what)
        password = _key(data, DEFAULT_BASIC_AUTH_PASSWORD_KEY, what=what)
        pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        authorization = f"Basic {pair}"
        secrets.extend((password, pair))
    ca_pem: bytes | None = None
    if settings.ca_secret_ref is not None:
        ref_s = settings.ca_secret_ref
        ca_pem = _key(
            reader.secret(namespace, ref_s.name),
            ref_s.key or DEFAULT_CA_KEY,
            what=f"Secret {namespace}/{ref_s.name}",
        ).encode()
    elif settings.ca_config_map_ref is not None:
        ref_c = settings.ca_config_map_ref
        ca_pem = _key(
            reader.config_map(namespace, ref_c.name),
            ref_c.key or DEFAULT_CA_KEY,
            what=f"ConfigMap {namespace}/{ref_c.name}",
        ).encode()
    return PrometheusEndpoint(
        address=str(settings.address),
        timeout=parse_duration(settings.timeout).total_seconds(),
        authorization=authorization,
        ca_pem=ca_pem,
        secrets=tuple(secrets),
    )


def _context(ca_pem: bytes | None) -> ssl.SSLContext | None:
    if ca_pem is None:
        return None
    try:
        return ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        raise PrometheusError(
            f"the CA bundle is not PEM certificates ({type(exc).__name__})"
        ) from None


def _refused(status: int, address: str, authenticated: bool) -> str:
    words = {401: "Unauthorized", 403: "Forbidden"}.get(status, "")
    if authenticated:
        check = "check the credentials in the Secret the Prometheus settings name"
    else:
        check = "it wants credentials: set basicAuthSecretRef or bearerTokenSecretRef"
    return f"Prometheus at {address} refused the query: HTTP {status} {words} ({check})".replace(
        "  ", " "
    )


def query(target: PrometheusEndpoint, promql: str) -> float | None:
    """The query's one number (None: no series), or :class:`PrometheusError` saying why."""
    address = safe_address(target.address)
    try:
        return _query(target, promql, address)
    except PrometheusError as exc:
        raise PrometheusError(redact(str(exc), target.secrets), hint=exc.hint) from None


def _query(target: PrometheusEndpoint, promql: str, address: str) -> float | None:
    parts = urllib.parse.urlsplit(target.address)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    request = urllib.request.Request(url, headers=target.headers())  # noqa: S310 - http(s) only
    context = _context(target.ca_pem)
    try:
        with urllib.request.urlopen(  # noqa: S310 - the scheme is checked by the API
            request, timeout=target.timeout, context=context
        ) as response:
            body: Any = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise PrometheusError(
                _refused(exc.code, address, target.authorization is not None)
            ) from None
        raise PrometheusError(
            f"Prometheus at {address} answered HTTP {exc.code} {exc.reason}"
        ) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PrometheusError(
            f"Prometheus at {address} did not answer: {type(exc).__name__}: {str(reason)[:200]}"
        ) from None
    try:
        if body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus refused the query: {str(body.get('error', '?'))[:300]}"
            )
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return float(result[1])
        if not result:
            return None
        return float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise PrometheusError(
            f"Prometheus at {address} answered something that is not a query result "
            f"({type(exc).__name__})"
        ) from None
