"""HTTP for the registry client: TLS, auth challenges, redirects, retries, redaction.

A thin layer over ``urllib3`` (already pinned through the kubernetes client;
no ``requests``, no kopf) so the in-pod agent can reuse the pull side cheaply.
It owns every decision that could leak a secret or weaken transport security:

* TLS always verifies the certificate chain and the host name; a CA bundle is
  trusted in addition to the system roots, never instead of them;
* plain HTTP only when the client was built with ``insecure=True`` — for the
  registry, its token realm, upload locations and redirects alike;
* a registry's credentials go only to that registry (Basic auth) and to the
  token service its Bearer challenge names, and to that token service only over
  HTTPS or on the registry's own host name (any port). When credentials are
  configured, a plain-HTTP realm on another host is refused with
  :class:`InsecureTransportError` before anything is sent to it; without
  credentials it is asked anonymously, as any realm is;
* tokens go only to the host that challenged for them; neither credentials nor
  tokens follow a redirect to blob storage on another host;
* URLs in errors and logs are reduced to scheme, host and path (pre-signed
  storage URLs carry signatures in their query strings), and every message
  is scrubbed of the passwords and tokens this transport has seen;
* connection errors, 5xx and 429 are retried with exponential backoff and
  jitter (many agents pulling at once must not stampede the registry);
  other 4xx are not, because retrying cannot change the answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, NoReturn, TypeAlias

import urllib3
from urllib3.exceptions import HTTPError, SSLError

from logicbundle.oci._auth import Challenge, Credentials, DockerConfig, parse_challenge
from logicbundle.oci._errors import (
    AccessDeniedError,
    AuthenticationError,
    InsecureTransportError,
    NotFoundError,
    RegistryError,
    RegistryRequestError,
    RegistryUnavailableError,
    TLSVerificationError,
)

logger = logging.getLogger("logicbundle.oci")


class _RedactQueries(logging.Filter):
    """Strip query strings from urllib3's debug lines ("GET /path?X-Amz-Signature=...").

    urllib3 logs every request target at DEBUG; pre-signed storage URLs carry
    their signature in the query, so turning on debug logging must not leak it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactQueries())

Body: TypeAlias = bytes | Callable[[], BinaryIO] | None
"""A request body: bytes, or a factory opening a fresh stream for every (re)try."""

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS: Final = 5
_MAX_ERROR_BODY: Final = 64 * 1024
_MAX_TOKEN_RESPONSE: Final = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry transient failures.

    The delay before retry *n* (1-based) is ``initial_delay * multiplier**(n-1)``,
    capped at ``max_delay``, then scaled by a random factor in [0.5, 1] when
    ``jitter`` is on.  ``attempts`` counts the first try.
    """

    attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number *retry* (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        if self.jitter:
            # Not security relevant: only spreads retries of many clients apart.
            return base * random.uniform(0.5, 1.0)  # noqa: S311
        return base


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of *url*: no userinfo, no query, no fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_CONTEXTS: dict[tuple[object, ...], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()
MAX_CONTEXTS = 64


def tls_context(ca_bundle: str | Path | None) -> ssl.SSLContext:
    """:func:`new_tls_context`, shared: one per CA bundle file as it is on disk.

    Loading the system roots takes tens of milliseconds; at 1,000 LogicBundles
    each resolve building its own context was a quarter of the operator's CPU.
    A context is never changed once built, so clients in any thread share it; a
    bundle file rewritten (another size or mtime) gets a new one.
    """
    # The system roots come from the default paths (or SSL_CERT_FILE / SSL_CERT_DIR).
    key: tuple[object, ...] = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    if ca_bundle is not None:
        try:
            stat = Path(ca_bundle).stat()
        except OSError:
            return new_tls_context(ca_bundle)  # raises the clear error
        key += (str(ca_bundle), stat.st_mtime_ns, stat.st_size)
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
    if context is not None:
        return context
    context = new_tls_context(ca_bundle)
    with _CONTEXTS_LOCK:
        if len(_CONTEXTS) >= MAX_CONTEXTS:
            _CONTEXTS.clear()
        _CONTEXTS[key] = context
    return context


def new_tls_context(ca_bundle: str | Path | None) -> ssl.SSLContext:
    """A client TLS context: the system roots plus *ca_bundle*, chain and host name checked.

    ``ssl.create_default_context`` loads the system roots; the bundle is loaded on top of
    them (``ca_certs=`` in urllib3 would load it *instead*, so a private CA would cut the
    client off from every publicly trusted registry and token service).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    # Like urllib3's own context: a certificate must name the host in its SAN, not its CN.
    context.hostname_checks_common_name = False
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise TLSVerificationError(
                f"cannot load the CA bundle {Path(ca_bundle).name!r}: {exc}",
                hint="The CA bundle must hold one or more PEM certificates "
                "(-----BEGIN CERTIFICATE-----).",
            ) from None
    return context


def _host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2].lower()


def _repository_of(url: str) -> str:
    """The repository named by a ``/v2/<name>/<kind>/...`` path, for scoping tokens."""
    path = urllib.parse.urlsplit(url).path
    if not path.startswith("/v2/"):
        return ""
    for marker in ("/manifests/", "/blobs/", "/tags/", "/referrers/"):
        if marker in path:
            return path[4 : path.index(marker)]
    return ""


SECRET_FRAGMENT: Final = 6
"""A registry's text holding this many consecutive characters of a secret is withheld."""

WITHHELD: Final = "(the registry's text is withheld: it held part of a credential)"


_USERINFO: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")


def mask_userinfo(text: str) -> str:
    """*text* with the ``user:password@`` of every URL in it replaced by ``***@``.

    For passwords the transport was never given: a registry may quote a URL
    with someone's credentials in it.
    """
    return _USERINFO.sub(r"\1***@", text)


def registry_errors(body: bytes, scrub: Callable[[str], str] = lambda text: text) -> str:
    """A short summary of an OCI error body (``{"errors": [{code, message}]}``).

    ``scrub`` masks secrets in each whole field *before* it is cut short: cutting
    first could leave the start of a password (or of a Basic header) that no
    longer matches the whole secret.  URL userinfo is masked too, also before
    the cut.
    """
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return ""
    parts = []
    for error in document["errors"][:3]:
        if isinstance(error, dict):
            code = mask_userinfo(scrub(str(error.get("code", ""))))[:40]
            message = mask_userinfo(scrub(str(error.get("message", ""))))[:160]
            parts.append(f"{code}: {message}" if message else code)
    return "; ".join(parts)


class Transport:
    """One connection pool, its auth state and its retry policy."""

    def __init__(
        self,
        *,
        auth: DockerConfig | None,
        insecure: bool,
        ca_bundle: str | Path | None,
        connect_timeout: float,
        read_timeout: float,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        user_agent: str,
    ) -> None:
        self.insecure = insecure
        self.retry = retry
        self._sleep = sleep
        self._auth = auth or DockerConfig()
        self._user_agent = user_agent
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=4,
            cert_reqs="CERT_REQUIRED",
            ssl_context=tls_context(ca_bundle),
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
        )
        self._lock = threading.Lock()
        # Authorization header per (registry host, repository) that last worked.
        self._authorization: dict[tuple[str, str], str] = {}
        self._secrets: set[str] = set()
        for credentials in self._auth.auths.values():
            self._remember_secret(credentials)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()

    @property
    def scheme(self) -> str:
        """``http`` when insecure, ``https`` otherwise."""
        return "http" if self.insecure else "https"

    # --- secrets and errors -------------------------------------------------

    def _remember_secret(self, credentials: Credentials | str) -> None:
        if isinstance(credentials, str):
            secrets = [credentials] if credentials else []
        elif credentials.password:
            secrets = [credentials.password, credentials.basic_header().split(" ", 1)[1]]
        else:
            secrets = []
        with self._lock:
            for secret in secrets:
                self._secrets.add(secret)
                # As a URL or a form would quote it ("p@ss" in userinfo is "p%40ss").
                self._secrets.add(urllib.parse.quote(secret, safe=""))
                self._secrets.add(urllib.parse.quote_plus(secret))

    def scrub(self, text: str) -> str:
        """*text* with every known password and token replaced by ``***``."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def holds_fragment(self, text: str) -> bool:
        """Whether *text* holds :data:`SECRET_FRAGMENT` consecutive characters of a secret,
        in any case (a registry may lower-case what it echoes, an auth scheme say)."""
        with self._lock:
            secrets = [secret.casefold() for secret in self._secrets]
        text = text.casefold()
        for secret in secrets:
            size = min(SECRET_FRAGMENT, len(secret))
            if any(secret[i : i + size] in text for i in range(len(secret) - size + 1)):
                return True
        return False

    def registry_detail(self, body: bytes) -> str:
        """The registry's error text for a message: masked whole, cut, and withheld when
        any fragment of a secret survives (an echo of part of a token, for example)."""
        detail = registry_errors(body, self.scrub)
        return WITHHELD if detail and self.holds_fragment(detail) else detail

    def registry_text(self, text: str, *, limit: int) -> str:
        """Any other text a registry chose (a header, say), made fit for a message the
        same way: masked whole, then cut to ``limit``, withheld if a fragment survives."""
        cut = mask_userinfo(self.scrub(text))[:limit]
        return WITHHELD if cut and self.holds_fragment(cut) else cut

    def fail(
        self, error: type[RegistryError], message: str, *, hint: str | None = None
    ) -> NoReturn:
        """Raise *error* with the message and hint scrubbed of secrets."""
        raise error(self.scrub(message), hint=self.scrub(hint) if hint else None)

    def check_url(self, url: str) -> None:
        """Refuse any URL whose scheme the client is not allowed to speak."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme == "https":
            return
        if scheme == "http" and self.insecure:
            return
        if scheme == "http":
            self.fail(
                InsecureTransportError,
                f"refusing plain HTTP to {redact_url(url)}",
                hint="The registry (or its token service or storage) asked for plain HTTP; "
                "set insecure: true only for a registry you trust on a trusted network.",
            )
        self.fail(InsecureTransportError, f"refusing URL scheme {scheme!r} ({redact_url(url)})")

    # --- requests -----------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
        ok: Iterable[int] = (200,),
        missing_ok: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request with auth, redirects and retries; return a response in *ok*.

        With ``stream=True`` the body is left unread for the caller (who must
        ``release_conn()``).  With ``missing_ok`` a 404 is returned, not raised.
        ``action`` names what we were doing, for error messages.
        """
        accepted = set(ok)
        if missing_ok:
            accepted.add(404)
        attempt = 0
        challenges_answered: list[str] = []
        redirects = 0
        current_method, current_url = method, url
        while True:
            self.check_url(current_url)
            attempt += 1
            try:
                response = self._send(current_method, current_url, headers, body, stream)
            except SSLError as exc:
                self._fail_tls(current_url, exc, action)
            except HTTPError as exc:
                self._backoff_or_fail(attempt, current_url, action, type(exc).__name__)
                continue

            status = response.status
            logger.debug("%s %s -> %d", current_method, redact_url(current_url), status)
            if status in accepted:
                return response
            if status in _REDIRECTS:
                redirects += 1
                current_url = self._redirect_target(response, current_url, redirects, action)
                if status == 303:
                    current_method, body = "GET", None
                attempt = 0
                continue
            if status == 401:
                self._answer_challenge(response, current_url, action, challenges_answered)
                continue
            error_body = self._read_error_body(response)
            if status == 429 or status >= 500:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                self._backoff_or_fail(
                    attempt,
                    current_url,
                    action,
                    f"HTTP {status}",
                    delay=retry_after,
                    detail=self.registry_detail(error_body),
                )
                continue
            self._fail_status(status, current_url, action, error_body)

    def _redirect_target(
        self, response: urllib3.BaseHTTPResponse, url: str, redirects: int, action: str
    ) -> str:
        location = response.headers.get("Location")
        self.discard(response)
        if not location or redirects > _MAX_REDIRECTS:
            self.fail(
                RegistryRequestError,
                f"{action}: too many or empty redirects at {redact_url(url)}",
            )
        return urllib.parse.urljoin(url, location)

    def _answer_challenge(
        self, response: urllib3.BaseHTTPResponse, url: str, action: str, answered: list[str]
    ) -> None:
        """Authenticate after a 401, unless we already answered this very challenge."""
        header = response.headers.get("WWW-Authenticate", "")
        self.discard(response)
        key = f"{_host_of(url)} {header}"
        if key in answered or len(answered) >= 3:
            self._fail_status(401, url, action, b"")
        answered.append(key)
        self._authenticate(url, parse_challenge(header), action)

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        body: Body,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        all_headers = {"User-Agent": self._user_agent, "Accept-Encoding": "identity"}
        all_headers.update(headers or {})
        key = (_host_of(url), _repository_of(url))
        with self._lock:
            authorization = self._authorization.get(key)
            if authorization is None:
                authorization = self._authorization.get((key[0], ""))
        if authorization is not None:
            all_headers["Authorization"] = authorization
        payload: bytes | BinaryIO | None = body() if callable(body) else body
        try:
            return self._pool.request(
                method,
                url,
                body=payload,
                headers=all_headers,
                redirect=False,
                retries=False,
                preload_content=not stream,
                decode_content=False,
            )
        finally:
            if payload is not None and not isinstance(payload, bytes):
                payload.close()

    @staticmethod
    def discard(response: urllib3.BaseHTTPResponse) -> None:
        with contextlib.suppress(HTTPError):
            response.drain_conn()
        response.release_conn()

    @staticmethod
    def _read_error_body(response: urllib3.BaseHTTPResponse) -> bytes:
        try:
            data = response.read(_MAX_ERROR_BODY, decode_content=False)
        except HTTPError:
            data = b""
        Transport.discard(response)
        return data

    def _backoff_or_fail(
        self,
        attempt: int,
        url: str,
        action: str,
        failure: str,
        *,
        delay: float | None = None,
        detail: str = "",
    ) -> None:
        described = f"{failure} ({detail})" if detail else failure
        if attempt >= self.retry.attempts:
            self.fail(
                RegistryUnavailableError,
                f"{action}: {redact_url(url)} failed {attempt} times, last with {described}",
                hint="The registry is unreachable or overloaded; this is retried later. "
                "Check the registry's health and the network path to it.",
            )
        wait = self.retry.delay(attempt) if delay is None else min(delay, self.retry.max_delay)
        logger.info(
            "%s: %s failed with %s; retry %d of %d in %.2fs",
            action,
            redact_url(url),
            self.scrub(described),
            attempt,
            self.retry.attempts - 1,
            wait,
        )
        self._sleep(wait)

    def backoff_or_fail(self, attempt: int, url: str, action: str, failure: str) -> None:
        """Sleep before retry *attempt*, or raise when the attempts are used up."""
        self._backoff_or_fail(attempt, url, action, failure)

    def _fail_tls(self, url: str, exc: SSLError, action: str) -> NoReturn:
        reason = ""
        for candidate in (exc, *exc.args):
            if isinstance(candidate, ssl.SSLError) and candidate.reason:
                reason = str(candidate.reason)
                break
        if not reason:
            text = str(exc)
            for marker in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "hostname"):
                if marker in text:
                    reason = marker
                    break
        self.fail(
            TLSVerificationError,
            f"{action}: TLS with {redact_url(url)} failed" + (f" ({reason})" if reason else ""),
            hint="If the registry uses a private CA, pass its bundle as the CA; if it speaks "
            "plain HTTP (WRONG_VERSION_NUMBER), set insecure: true for that registry only.",
        )

    def _fail_status(self, status: int, url: str, action: str, body: bytes) -> NoReturn:
        detail = self.registry_detail(body)
        where = f"{action}: {redact_url(url)} returned {status}" + (
            f" ({detail})" if detail else ""
        )
        if status == 401:
            self.fail(
                AuthenticationError,
                where,
                hint="The registry did not accept our credentials; check the pull secret "
                "(kubernetes.io/dockerconfigjson) has an entry for this registry host.",
            )
        if status == 403:
            self.fail(
                AccessDeniedError,
                where,
                hint="The credentials are valid but lack permission for this repository.",
            )
        if status == 404:
            self.fail(
                NotFoundError,
                where,
                hint="Check the repository, tag or digest exists in this registry.",
            )
        self.fail(RegistryRequestError, where, hint="The registry rejected the request.")

    # --- auth ---------------------------------------------------------------

    def _authenticate(self, url: str, challenge: Challenge | None, action: str) -> None:
        host = _host_of(url)
        key = (host, _repository_of(url))
        credentials = self._auth.credentials_for(host)
        if challenge is None:
            self._fail_status(401, url, action, b"")
        if challenge.scheme == "basic":
            if credentials is None:
                self.fail(
                    AuthenticationError,
                    f"{action}: {redact_url(url)} requires credentials and none are "
                    f"configured for {host}",
                    hint="Add an entry for this registry host to the pull secret.",
                )
            with self._lock:
                self._authorization[key] = credentials.basic_header()
            return
        if challenge.scheme != "bearer":
            self.fail(
                AuthenticationError,
                f"{action}: {redact_url(url)} asks for unsupported auth scheme "
                f"{self.registry_text(challenge.scheme, limit=20)!r}",
                hint="Only Basic and Bearer token auth are supported.",
            )
        token = self._fetch_token(challenge, credentials=credentials, url=url, action=action)
        self._remember_secret(token)
        with self._lock:
            self._authorization[key] = f"Bearer {token}"

    def _fetch_token(
        self,
        challenge: Challenge,
        *,
        credentials: Credentials | None,
        url: str,
        action: str,
    ) -> str:
        """A token from the challenge's realm; *url* is the registry URL that challenged."""
        realm = challenge.params.get("realm", "")
        if not realm:
            self.fail(AuthenticationError, f"{action}: bearer challenge without a realm")
        self.check_url(realm)
        if credentials is not None and not _may_receive_credentials(realm, registry=url):
            registry_host = urllib.parse.urlsplit(url).hostname or ""
            self.fail(
                InsecureTransportError,
                f"{action}: refusing to send the credentials for {registry_host} over plain "
                f"HTTP to the token service {redact_url(realm)} on another host",
                hint="insecure: true covers the registry's own host only; the registry named "
                "a token service elsewhere on plain HTTP. Serve that token service over HTTPS "
                "or on the registry's host, or remove the registry's pull secret to pull "
                "anonymously.",
            )
        query = [(k, challenge.params[k]) for k in ("service", "scope") if k in challenge.params]
        separator = "&" if urllib.parse.urlsplit(realm).query else "?"
        token_url = realm + (separator + urllib.parse.urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if credentials is not None:
            headers["Authorization"] = credentials.basic_header()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._pool.request(
                    "GET",
                    token_url,
                    headers={"User-Agent": self._user_agent, **headers},
                    redirect=False,
                    retries=False,
                    preload_content=False,
                )
            except SSLError as exc:
                self._fail_tls(realm, exc, f"{action} (token service)")
            except HTTPError as exc:
                self._backoff_or_fail(
                    attempt, realm, f"{action} (token service)", type(exc).__name__
                )
                continue
            data = response.read(_MAX_TOKEN_RESPONSE + 1, decode_content=True)
            self.discard(response)
            if response.status == 429 or response.status >= 500:
                self._backoff_or_fail(
                    attempt, realm, f"{action} (token service)", f"HTTP {response.status}"
                )
                continue
            break
        if response.status in (401, 403):
            self.fail(
                AuthenticationError,
                f"{action}: the token service {redact_url(realm)} refused the credentials "
                f"({response.status})",
                hint="Check the user name and password in the pull secret for this registry."
                if credentials is not None
                else "The registry needs credentials: add them to the pull secret.",
            )
        if response.status != 200 or len(data) > _MAX_TOKEN_RESPONSE:
            self.fail(
                AuthenticationError,
                f"{action}: the token service {redact_url(realm)} answered {response.status}",
            )
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            document = None
        token = self._tokens_in(document)
        if not isinstance(token, str) or not token:
            self.fail(
                AuthenticationError,
                f"{action}: the token service {redact_url(realm)} returned no token",
            )
        return token

    def _tokens_in(self, document: object) -> object:
        """The token of a token service's answer; every token in it is remembered as a
        secret, the one used or not (a registry may echo the refresh token)."""
        if not isinstance(document, dict):
            return None
        for key in ("token", "access_token", "refresh_token"):
            value = document.get(key)
            if isinstance(value, str):
                self._remember_secret(value)
        return document.get("token") or document.get("access_token")


def _may_receive_credentials(realm: str, *, registry: str) -> bool:
    """Whether a token realm may be sent the registry's credentials.

    Over HTTPS, yes (token services on their own host, like Docker Hub's, are the norm).
    Over plain HTTP, which ``check_url`` allows only with ``insecure``, only on the host
    name that the user opted into talking to insecurely: another host on the path would
    get the password in clear text.
    """
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme.lower() == "https":
        return True
    return parts.hostname is not None and parts.hostname == urllib.parse.urlsplit(registry).hostname


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # An HTTP date: use our own backoff instead.
    return max(0.0, seconds)
