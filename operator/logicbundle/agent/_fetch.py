"""Getting a version onto disk: the distributor's cache first, the registry as the fallback.

Both sources are treated the same way: the OCI manifest is fetched by the
assigned digest and checked against it, the config blob against the digest
the manifest names, and the layer is streamed straight into the safe unpacker
with its digest and size pinned, so no byte is used before it is checked and
a failure leaves nothing behind.  ``http.client`` and ``ssl`` only: the
registry client (``logicbundle.oci``, urllib3 and pydantic) is imported the
first time the distributor cannot serve a digest, never at start.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from logicbundle.agent import _seams
from logicbundle.agent._artifact import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    BundleSpec,
    check_bytes,
    parse_bundle_manifest,
    parse_image_manifest,
)
from logicbundle.agent._errors import (
    AgentError,
    ArtifactInvalidError,
    DigestMismatchError,
    FetchError,
    NotCachedError,
)
from logicbundle.agent._store import BundleStore
from logicbundle.bundle import DEFAULT_LIMITS, BundleError, UnpackLimits, unpack_bundle

logger = logging.getLogger("logicbundle.agent")

USER_AGENT: Final = "logicbundle-agent"
_CHUNK: Final = 64 * 1024


class DistributorClient:
    """HTTP(S) client of the distributor; the pod-bound token is re-read for every request."""

    def __init__(self, base_url: str, *, token_file: Path, ca_file: Path | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the distributor URL {base_url!r} is not http(s)://host[:port]")
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token_file = token_file
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _token(self) -> str | None:
        try:
            return self._token_file.read_text().strip() or None
        except OSError:
            return None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def send(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        sent = {"User-Agent": USER_AGENT, **(headers or {})}
        token = self._token()
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, self._prefix + path, body=body, headers=sent)
        return conn.getresponse()

    @contextlib.contextmanager
    def get(self, path: str, *, timeout: float) -> Iterator[http.client.HTTPResponse]:
        conn = self.connection(timeout)
        try:
            try:
                response = self.send(conn, "GET", path)
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"the distributor is unreachable: GET {path}: {exc}") from None
            yield response
        finally:
            conn.close()

    def targets(
        self, *, version: str | None, wait: float, timeout: float
    ) -> tuple[int, dict[str, Any] | None]:
        """``GET /v1/targets``: ``(status, body)``; body None for 304 and errors."""
        query = {"wait": f"{wait:g}"} if version else {}
        if version:
            query["version"] = version
        path = "/v1/targets" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with self.get(path, timeout=timeout) as response:
            try:
                data = response.read(1024 * 1024 + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"the distributor broke a targets answer: {exc}") from None
            if response.status != 200:
                return response.status, None
            try:
                body = json.loads(data)
            except ValueError:
                raise FetchError("the distributor's targets answer is not JSON") from None
            if not isinstance(body, dict):
                raise FetchError("the distributor's targets answer is not an object")
            return 200, body

    def post_report(self, report: dict[str, Any], *, timeout: float) -> int:
        conn = self.connection(timeout)
        try:
            response = self.send(conn, "POST", "/v1/reports", body=json.dumps(report).encode())
            response.read(65536)
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"the report could not be sent: {exc}") from None
        finally:
            conn.close()

    def read_small(self, path: str, *, limit: int, timeout: float) -> bytes:
        with self.get(path, timeout=timeout) as response:
            _check_status(response, path)
            try:
                data = response.read(limit + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"GET {path} broke off: {exc}") from None
            if len(data) > limit:
                raise ArtifactInvalidError(f"GET {path} is larger than {limit} bytes")
            return data


def _check_status(response: http.client.HTTPResponse, path: str) -> None:
    if response.status == 200:
        return
    detail = response.read(4096).decode(errors="replace")[:300]
    if response.status == 404:
        raise NotCachedError(f"the distributor does not hold {path}: {detail}")
    raise FetchError(f"the distributor answered {response.status} to GET {path}: {detail}")


class _SizedReader(io.RawIOBase):
    """Reads at most ``size`` bytes of a response and fails if fewer arrive; counts them."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        super().__init__()
        self._source = source
        self._left = size
        self._half = size // 2
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        try:
            data = self._source.read(min(len(buffer), self._left, _CHUNK))
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"the layer download broke off: {exc}") from None
        if not data:
            raise FetchError(f"the layer download ended {self._left} bytes early")
        buffer[: len(data)] = data
        self._left -= len(data)
        if self.read_bytes < self._half <= self.read_bytes + len(data):
            _seams.step("layer-half-read")
        self.read_bytes += len(data)
        return len(data)


@dataclass(frozen=True, slots=True)
class Installed:
    digest: str
    via: str
    fetch_ms: float
    unpack_ms: float
    bytes: int


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Fetcher:
    """Puts a digest on disk under a :class:`BundleStore`, checked, or raises."""

    def __init__(
        self,
        *,
        distributor: DistributorClient | None,
        limits: UnpackLimits = DEFAULT_LIMITS,
        timeout: float = 30.0,
    ) -> None:
        self.distributor = distributor
        self.limits = limits
        self.timeout = timeout
        self.distributor_up = True
        """False while the agent's long-poll finds the distributor down: bytes then come
        from the registry at once, not after a request that may hang for ``timeout``."""

    def install(
        self, store: BundleStore, digest: str, *, source: str | None, insecure: bool
    ) -> Installed:
        """Fetch, check and unpack ``digest``; the distributor first, then ``source``."""
        if store.has(digest):
            return Installed(digest=digest, via="disk", fetch_ms=0.0, unpack_ms=0.0, bytes=0)
        first: AgentError | None = None
        if self.distributor is not None and not self.distributor_up and source:
            logger.info("the distributor is down: fetching %s from the registry", digest)
        elif self.distributor is not None:
            try:
                return self._from_distributor(store, digest)
            except (FetchError, DigestMismatchError, ArtifactInvalidError) as exc:
                # Bytes that fail a check from the cache are refused, never used, and
                # the registry (the source of truth) is asked instead.
                logger.warning("distributor cannot serve %s (%s); trying the registry", digest, exc)
                first = exc
        if not source:
            raise first or FetchError(f"no distributor and no registry source for {digest}")
        try:
            return self._from_registry(store, digest, source=source, insecure=insecure)
        except (AgentError, BundleError):
            # A hostile layer is refused with the unpacker's own error, whichever source
            # served it: the same reason the operator gives for the same bytes.
            raise
        except Exception as exc:  # the registry client's own errors
            reason = getattr(exc, "reason", None)
            error = FetchError(f"the registry fallback for {digest} failed: {exc}")
            if reason == "DigestMismatch":
                raise DigestMismatchError(str(exc)) from None
            raise error from None

    def _from_distributor(self, store: BundleStore, digest: str) -> Installed:
        client = self.distributor
        assert client is not None  # noqa: S101
        start = time.perf_counter()
        data = client.read_small(
            f"/v1/manifests/{digest}", limit=MAX_MANIFEST_BYTES, timeout=self.timeout
        )
        image = parse_image_manifest(data, digest=digest, max_layer_bytes=self._max_layer())
        config = client.read_small(
            f"/v1/blobs/{image.config.digest}", limit=MAX_CONFIG_BYTES, timeout=self.timeout
        )
        if len(config) != image.config.size:
            raise DigestMismatchError(f"the config blob of {digest} has the wrong size")
        spec = parse_bundle_manifest(
            config, digest=image.config.digest, max_file_size=self.limits.max_file_size
        )
        fetch_ms = _ms(start)
        start = time.perf_counter()
        path = f"/v1/blobs/{image.layer.digest}"
        with client.get(path, timeout=self.timeout) as response:
            _check_status(response, path)
            reader = _SizedReader(response, image.layer.size)
            buffered = io.BufferedReader(reader, _CHUNK)
            self._unpack(store, digest, spec, buffered, image.layer.digest)
        return Installed(
            digest=digest,
            via="distributor",
            fetch_ms=fetch_ms,
            unpack_ms=_ms(start),
            bytes=len(data) + len(config) + reader.read_bytes,
        )

    def _max_layer(self) -> int:
        return self.limits.max_stream_size

    def _unpack(
        self,
        store: BundleStore,
        digest: str,
        spec: BundleSpec,
        layer: IO[bytes] | Path,
        layer_digest: str,
    ) -> None:
        # The manifest file first: a version directory never exists without it.
        store.write_manifest(digest, spec.raw)
        _seams.step("manifest-written")
        try:
            unpack_bundle(
                layer,
                manifest=spec,
                destination=store.version_path(digest),
                limits=self.limits,
                expected_digest=layer_digest,
            )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                store.manifest_path(digest).unlink()
            raise

    def _from_registry(
        self, store: BundleStore, digest: str, *, source: str, insecure: bool
    ) -> Installed:
        from logicbundle.oci import Reference, RegistryClient  # noqa: PLC0415 - heavy, fallback

        start = time.perf_counter()
        client = RegistryClient(insecure=insecure)
        try:
            ref = Reference.parse(source).with_digest(digest)
            pulled = client.pull_manifest(ref, max_bytes=MAX_MANIFEST_BYTES)
            image = parse_image_manifest(
                pulled.data, digest=digest, max_layer_bytes=self._max_layer()
            )
            sink = io.BytesIO()
            client.pull_blob_to(ref, image.config.digest, sink, max_bytes=MAX_CONFIG_BYTES)
            config = sink.getvalue()
            check_bytes(config, image.config.digest, "the config blob")
            spec = parse_bundle_manifest(
                config, digest=image.config.digest, max_file_size=self.limits.max_file_size
            )
            with tempfile.TemporaryDirectory(prefix=".fetch-", dir=store.versions) as tmp:
                layer = Path(tmp) / "layer.tar.gz"
                client.pull_blob_to(ref, image.layer.digest, layer, max_bytes=image.layer.size)
                fetch_ms = _ms(start)
                start = time.perf_counter()
                size = layer.stat().st_size
                self._unpack(store, digest, spec, layer, image.layer.digest)
        finally:
            client.close()
        return Installed(
            digest=digest,
            via="registry",
            fetch_ms=fetch_ms,
            unpack_ms=_ms(start),
            bytes=len(pulled.data) + len(config) + size,
        )
