"""Getting a version onto disk: the distributor's cache first, the registry as the fallback.

Both sources are treated the same way: the OCI manifest is fetched by the
assigned digest and checked against it, the config blob against the digest
the manifest names, and the layer is streamed straight into the safe unpacker
with its digest and size pinned, so no byte is used before it is checked and
a failure leaves nothing behind.  The distributor's client
(:mod:`logicbundle.agent._distributor`, ``http.client`` and ``ssl``) exists
only when a distributor is configured; the artifact parsers and the safe
unpacker (``tarfile``, ``lzma``, ``unicodedata``...) are imported by the first
fetch, not at start (an agent restarted beside versions already on disk never
loads them); the registry client (``logicbundle.oci``, urllib3 and pydantic)
the first time the distributor cannot serve a digest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from logicbundle.agent import _seams
from logicbundle.agent._errors import (
    AgentError,
    ArtifactInvalidError,
    DigestMismatchError,
    FetchError,
)
from logicbundle.agent._store import BundleStore
from logicbundle.bundle import BundleError  # its _errors module only: the package is lazy

if TYPE_CHECKING:
    from logicbundle.agent._artifact import BundleSpec
    from logicbundle.agent._distributor import DistributorClient
    from logicbundle.bundle import UnpackLimits

logger = logging.getLogger("logicbundle.agent")


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
        limits: UnpackLimits | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.distributor = distributor
        self._limits = limits
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

    @property
    def limits(self) -> UnpackLimits:
        """The unpack limits (the bundle package's defaults unless given)."""
        if self._limits is None:
            from logicbundle.bundle import DEFAULT_LIMITS  # noqa: PLC0415 - the first fetch

            self._limits = DEFAULT_LIMITS
        return self._limits

    def _from_distributor(self, store: BundleStore, digest: str) -> Installed:
        from logicbundle.agent._artifact import (  # noqa: PLC0415 - the first fetch
            MAX_CONFIG_BYTES,
            MAX_MANIFEST_BYTES,
            parse_bundle_manifest,
            parse_image_manifest,
        )

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
        with client.layer(path, size=image.layer.size, timeout=self.timeout) as reader:
            self._unpack(store, digest, spec, reader.buffered(), image.layer.digest)
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
        from logicbundle.bundle import unpack_bundle  # noqa: PLC0415 - the first fetch

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
        import tempfile  # noqa: PLC0415 - the registry fallback only

        from logicbundle.agent._artifact import (  # noqa: PLC0415 - the first fetch
            MAX_CONFIG_BYTES,
            MAX_MANIFEST_BYTES,
            check_bytes,
            parse_bundle_manifest,
            parse_image_manifest,
        )
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
