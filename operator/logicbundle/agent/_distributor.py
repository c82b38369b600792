"""The distributor's HTTP(S) client: targets, reports and checked bytes (``http.client``, ``ssl``).

Imported only when the agent has a distributor to talk to: ``http.client``
brings ``ssl`` (OpenSSL) and the ``email`` package, about 4 MB of resident
memory that an agent on the slow path alone does not pay
(``docs/benchmarks.md``).  The protocol is ``docs/distributor-protocol.md``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from logicbundle.agent import _seams
from logicbundle.agent._errors import ArtifactInvalidError, FetchError, NotCachedError

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

    @contextlib.contextmanager
    def layer(self, path: str, *, size: int, timeout: float) -> Iterator[SizedReader]:
        """``GET`` a layer blob: a reader of exactly ``size`` bytes (FetchError otherwise)."""
        with self.get(path, timeout=timeout) as response:
            check_status(response, path)
            yield SizedReader(response, size)

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
            check_status(response, path)
            try:
                data = response.read(limit + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise FetchError(f"GET {path} broke off: {exc}") from None
            if len(data) > limit:
                raise ArtifactInvalidError(f"GET {path} is larger than {limit} bytes")
            return data


def check_status(response: http.client.HTTPResponse, path: str) -> None:
    if response.status == 200:
        return
    detail = response.read(4096).decode(errors="replace")[:300]
    if response.status == 404:
        raise NotCachedError(f"the distributor does not hold {path}: {detail}")
    raise FetchError(f"the distributor answered {response.status} to GET {path}: {detail}")


class SizedReader(io.RawIOBase):
    """Reads at most ``size`` bytes of a response and fails if fewer arrive; counts them."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        super().__init__()
        self._source = source
        self._left = size
        self._half = size // 2
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def buffered(self) -> io.BufferedReader:
        return io.BufferedReader(self, _CHUNK)

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
