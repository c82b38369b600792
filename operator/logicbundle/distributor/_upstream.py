"""A replica fills its cache from the operator: verified bytes, by digest, once each.

Only the operator verifies signatures.  A distributor replica serves a digest
only when a LogicBundle's published state names it (the operator publishes a
digest only after verifying it), and gets its bytes from the operator's own
distributor, authenticated with the replica's pod-bound token; the operator
answers a replica's ServiceAccount for any published digest.  Every byte is
checked against its digest on the way in (:meth:`BlobCache.put`), so the
replica trusts the operator for *which* digests, never for the bytes.

One fetch per digest at a time: concurrent pods asking for the same new
digest wait on the same fetch.  A failed fetch is not cached; the next
request tries again, and the agent meanwhile falls back to the registry.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import tempfile
from pathlib import Path
from typing import Final

import aiohttp

from logicbundle.distributor._blobs import BlobCache, BlobCacheError, CachedBundle
from logicbundle.oci import OCI_MANIFEST

logger = logging.getLogger("logicbundle.distributor.upstream")

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
MAX_LAYER_BYTES: Final = 1024 * 1024 * 1024
_CHUNK: Final = 256 * 1024


class UpstreamError(Exception):
    """The operator did not hand over a digest's bytes (down, refused, or wrong bytes)."""


class Upstream:
    """Fills a :class:`BlobCache` from the operator's distributor."""

    def __init__(
        self,
        *,
        url: str,
        token_file: Path,
        blobs: BlobCache,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._token_file = token_file
        self._blobs = blobs
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._inflight: dict[str, asyncio.Future[CachedBundle]] = {}
        self.fetches = 0
        """Digests fetched from the operator (a digest is fetched once)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fill(self, digest: str) -> CachedBundle:
        """The cached bundle, fetched from the operator first when absent."""
        cached = self._blobs.get(digest)
        if cached is not None:
            return cached
        running = self._inflight.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[CachedBundle] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            entry = await self._fetch(digest)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else UpstreamError("stopped"))
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(entry)
            return entry
        finally:
            del self._inflight[digest]

    async def _fetch(self, digest: str) -> CachedBundle:
        token = self._token()
        manifest = await self._get(f"/v1/manifests/{digest}", token, limit=MAX_MANIFEST_BYTES)
        try:
            entry = BlobCache._parse(digest, manifest)
        except BlobCacheError as exc:
            raise UpstreamError(f"the operator's manifest of {digest} is refused: {exc}") from None
        config = await self._get(
            f"/v1/blobs/{entry.config_digest}", token, limit=MAX_MANIFEST_BYTES
        )
        with tempfile.NamedTemporaryFile(dir=self._blobs.root / "tmp", delete=True) as layer:
            await self._download(f"/v1/blobs/{entry.layer_digest}", token, Path(layer.name))
            try:
                stored = await asyncio.to_thread(
                    self._blobs.put,
                    digest=digest,
                    manifest=manifest,
                    config=config,
                    layer=Path(layer.name),
                )
            except BlobCacheError as exc:
                raise UpstreamError(
                    f"the operator's bytes of {digest} are refused: {exc}"
                ) from None
        self.fetches += 1
        logger.info("cached %s from the operator", digest)
        return stored

    def _token(self) -> str:
        try:
            return self._token_file.read_text().strip()
        except OSError as exc:
            raise UpstreamError(f"cannot read the replica's token: {exc.strerror}") from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _get(self, path: str, token: str, *, limit: int) -> bytes:
        try:
            async with self._client().get(
                self._url + path,
                headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST},
                ssl=self._ssl if self._ssl is not None else False,
                server_hostname=self._server_hostname,
            ) as response:
                if response.status != 200:
                    raise UpstreamError(f"the operator answered HTTP {response.status} for {path}")
                data = await response.content.read(limit + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"the operator is unreachable: {type(exc).__name__}") from None
        if len(data) > limit:
            raise UpstreamError(f"{path} is larger than {limit} bytes")
        return data

    async def _download(self, path: str, token: str, target: Path) -> None:
        try:
            async with self._client().get(
                self._url + path,
                headers={"Authorization": f"Bearer {token}"},
                ssl=self._ssl if self._ssl is not None else False,
                server_hostname=self._server_hostname,
            ) as response:
                if response.status != 200:
                    raise UpstreamError(f"the operator answered HTTP {response.status} for {path}")
                size = 0
                with target.open("wb") as out:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        size += len(chunk)
                        if size > MAX_LAYER_BYTES:
                            raise UpstreamError(f"{path} is larger than {MAX_LAYER_BYTES} bytes")
                        await asyncio.to_thread(out.write, chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(f"the operator is unreachable: {type(exc).__name__}") from None
