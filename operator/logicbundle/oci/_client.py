"""The registry client: resolve, pull and push by digest, referrers, tags.

Our own small client rather than oras-py: every byte we read is checked
against the digest we asked for (the registry is untrusted), blobs stream
through a hash into a temporary file that only becomes visible when the
digest matches, manifests have a size limit, and the referrers API falls back
to the ``sha256-<hex>`` tag schema on registries without it.  The pull side
imports neither kopf nor the kubernetes client, so the in-pod agent reuses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from urllib3 import BaseHTTPResponse
from urllib3.exceptions import HTTPError

from logicbundle.oci._auth import DockerConfig
from logicbundle.oci._errors import (
    DigestMismatchError,
    InvalidManifestError,
    InvalidReferenceError,
    NotFoundError,
    RegistryRequestError,
    RegistryUnavailableError,
    SizeLimitError,
)
from logicbundle.oci._models import (
    ALL_MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    Descriptor,
    Index,
    Manifest,
    check_digest,
    is_digest,
    parse_index,
    parse_manifest,
    sha256_digest,
)
from logicbundle.oci._reference import Reference
from logicbundle.oci._transport import RetryPolicy, Transport, logger, redact_url

DEFAULT_MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_BLOB_BYTES: Final = 1024 * 1024 * 1024
_CHUNK: Final = 1024 * 1024
_MAX_PAGES: Final = 100
_DEFAULT_ACCEPT: Final = tuple(sorted(ALL_MANIFEST_MEDIA_TYPES))


class BlobSink(Protocol):
    """Where :meth:`RegistryClient.pull_blob_to` may stream a blob instead of a file.

    A sink cannot be rolled back: when the pull raises, discard what it got.
    """

    def write(self, data: bytes, /) -> object:
        """Take the next chunk of the blob."""


@dataclass(frozen=True)
class PulledManifest:
    """A manifest's verified bytes, its descriptor and its parsed form."""

    descriptor: Descriptor
    data: bytes
    manifest: Manifest | Index


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for *digest*: ``sha256-<hex>``."""
    algorithm, _, hexdigest = check_digest(digest).partition(":")
    return f"{algorithm}-{hexdigest}"


class RegistryClient:
    """A client for OCI distribution registries.

    One instance can serve many registries and repositories (credentials are
    looked up per host in *auth*); it is thread-safe and keeps connections
    pooled, so create one per process and :meth:`close` it at the end.
    """

    def __init__(
        self,
        *,
        auth: DockerConfig | None = None,
        insecure: bool = False,
        ca_bundle: str | Path | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        user_agent: str = "logicbundle-oci/0.1",
    ) -> None:
        """Build a client.

        ``insecure`` allows plain HTTP (never used otherwise, for the registry,
        its token service, upload locations or redirects).  ``ca_bundle`` is a
        PEM file trusted in addition to the system roots.  ``sleep`` is how the
        client waits between retries; tests pass a recorder so they never wait.
        """
        self._transport = Transport(
            auth=auth,
            insecure=insecure,
            ca_bundle=ca_bundle,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            user_agent=user_agent,
        )
        self.max_manifest_bytes = max_manifest_bytes
        self.max_blob_bytes = max_blob_bytes

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- URLs ---------------------------------------------------------------

    def _url(self, ref: Reference, kind: str, tail: str = "") -> str:
        return f"{self._transport.scheme}://{ref.registry}/v2/{ref.repository}/{kind}/{tail}"

    # --- manifests ----------------------------------------------------------

    def resolve(self, ref: Reference, *, accept: Iterable[str] = _DEFAULT_ACCEPT) -> Descriptor:
        """Resolve *ref* (usually a tag) to the descriptor of its manifest.

        Uses HEAD and the registry's ``Docker-Content-Digest``; falls back to
        GET and hashing the bytes when the registry sends no usable digest.
        When *ref* already has a digest, a different answer is an error.
        """
        accepted = tuple(accept)
        action = f"resolving {ref}"
        url = self._url(ref, "manifests", ref.reference)
        response = self._transport.request(
            "HEAD", url, action=action, headers={"Accept": ", ".join(accepted)}
        )
        digest = response.headers.get("Docker-Content-Digest", "")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        length = response.headers.get("Content-Length", "")
        if is_digest(digest) and media_type in accepted and length.isdigit():
            if ref.digest and digest != ref.digest:
                self._transport.fail(
                    DigestMismatchError,
                    f"{action}: the registry reports digest {digest} for {ref.digest}",
                    hint="The registry is serving something other than what was asked for.",
                )
            return Descriptor(media_type=media_type, digest=digest, size=int(length))
        return self.pull_manifest(ref, accept=accepted).descriptor

    def pull_manifest(
        self,
        ref: Reference,
        *,
        accept: Iterable[str] = _DEFAULT_ACCEPT,
        max_bytes: int | None = None,
    ) -> PulledManifest:
        """Fetch, size-limit, digest-check and parse the manifest *ref* names.

        The digest is always computed from the bytes; a registry whose bytes
        disagree with the digest asked for, or with its own
        ``Docker-Content-Digest``, raises :class:`DigestMismatchError`.
        """
        accepted = tuple(accept)
        limit = self.max_manifest_bytes if max_bytes is None else max_bytes
        action = f"pulling manifest {ref}"
        url = self._url(ref, "manifests", ref.reference)
        response = self._transport.request(
            "GET", url, action=action, headers={"Accept": ", ".join(accepted)}, stream=True
        )
        try:
            data = self._read_limited(response, limit, action, url)
            media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
            claimed = response.headers.get("Docker-Content-Digest")
        finally:
            response.release_conn()
        digest = sha256_digest(data)
        if claimed is not None and not claimed.startswith("sha256:"):
            claimed = None  # Another algorithm: we check our own sha256 instead.
        expected = ref.digest or claimed
        if expected is not None and digest != expected:
            self._transport.fail(
                DigestMismatchError,
                f"{action}: the registry served bytes with digest {digest}, "
                f"expected {expected[:80]}",
                hint="The registry returned content that does not match its digest: treat it "
                "as tampering or corruption; do not use this artifact.",
            )
        if media_type not in accepted:
            self._transport.fail(
                InvalidManifestError,
                f"{action}: the registry answered with media type {media_type[:100]!r}",
                hint=f"Expected one of {', '.join(accepted)}.",
            )
        manifest = parse_manifest(data, media_type)
        return PulledManifest(
            descriptor=Descriptor(media_type=media_type, digest=digest, size=len(data)),
            data=data,
            manifest=manifest,
        )

    def _read_limited(self, response: BaseHTTPResponse, limit: int, action: str, url: str) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            self._transport.fail(
                SizeLimitError,
                f"{action}: {redact_url(url)} is {length} bytes, more than the limit of {limit}",
                hint="Manifests are small; a larger one is a misbehaving or hostile registry.",
            )
        try:
            data = response.read(limit + 1, decode_content=False)
        except HTTPError as exc:
            self._transport.fail(
                RegistryUnavailableError,
                f"{action}: reading {redact_url(url)} failed ({type(exc).__name__})",
                hint="The connection broke mid-response; this is retried later.",
            )
        if len(data) > limit:
            self._transport.fail(
                SizeLimitError,
                f"{action}: {redact_url(url)} is more than the limit of {limit} bytes",
                hint="Manifests are small; a larger one is a misbehaving or hostile registry.",
            )
        return data

    def push_manifest(
        self,
        target: Reference,
        data: bytes,
        *,
        media_type: str,
        update_referrers_fallback: bool = True,
    ) -> Descriptor:
        """Push manifest bytes under *target*'s tag (or by digest when it has none).

        The bytes are validated first.  A manifest with a ``subject`` is a
        referrer: when the registry does not confirm it indexed it (no
        ``OCI-Subject`` header) the ``sha256-<hex>`` fallback index is updated,
        as the distribution spec asks of clients.
        """
        if len(data) > self.max_manifest_bytes:
            self._transport.fail(
                SizeLimitError,
                f"manifest for {target} is {len(data)} bytes, more than {self.max_manifest_bytes}",
            )
        manifest = parse_manifest(data, media_type)
        digest = sha256_digest(data)
        if target.digest and target.digest != digest:
            self._transport.fail(
                DigestMismatchError,
                f"pushing {target}: the manifest bytes have digest {digest}",
            )
        reference = target.tag or digest
        action = f"pushing manifest {target.with_tag(target.tag)}"
        response = self._transport.request(
            "PUT",
            self._url(target, "manifests", reference),
            action=action,
            headers={"Content-Type": media_type},
            body=data,
            ok=(200, 201),
        )
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed is not None and claimed != digest:
            self._transport.fail(
                DigestMismatchError,
                f"{action}: the registry stored digest {claimed[:80]} for bytes with "
                f"digest {digest}",
                hint="The registry rewrote the manifest; push to a registry that stores "
                "manifests byte for byte.",
            )
        descriptor = Descriptor(media_type=media_type, digest=digest, size=len(data))
        if (
            manifest.subject is not None
            and update_referrers_fallback
            and not response.headers.get("OCI-Subject")
        ):
            self._add_to_fallback_index(target, manifest, descriptor)
        return descriptor

    def _add_to_fallback_index(
        self, target: Reference, manifest: Manifest | Index, descriptor: Descriptor
    ) -> None:
        if manifest.subject is None:
            return
        artifact_type = manifest.artifact_type
        if artifact_type is None and isinstance(manifest, Manifest):
            artifact_type = manifest.config.media_type
        entry = descriptor.model_copy(
            update={"artifact_type": artifact_type, "annotations": manifest.annotations}
        )
        tag = fallback_tag(manifest.subject.digest)
        existing = self._fetch_index(target.with_tag(tag), missing_ok=True)
        entries = list(existing.manifests) if existing else []
        if any(item.digest == entry.digest for item in entries):
            return
        entries.append(entry)
        index = Index(manifests=tuple(entries))
        # Not atomic: two clients attaching at the same instant can lose one
        # entry. The referrers API proper has no such race.
        self.push_manifest(
            target.with_tag(tag),
            index.to_json_bytes(),
            media_type=OCI_INDEX,
            update_referrers_fallback=False,
        )

    def _fetch_index(self, ref: Reference, *, missing_ok: bool) -> Index | None:
        try:
            pulled = self.pull_manifest(ref, accept=(OCI_INDEX,))
        except NotFoundError:
            if missing_ok:
                return None
            raise
        if not isinstance(pulled.manifest, Index):
            self._transport.fail(InvalidManifestError, f"{ref} is not an OCI index")
        return pulled.manifest

    # --- referrers ----------------------------------------------------------

    def referrers(
        self, subject: Reference, *, artifact_type: str | None = None
    ) -> tuple[Descriptor, ...]:
        """The manifests that name *subject* (which must carry a digest) as subject.

        Uses the referrers API, and the ``sha256-<hex>`` tag fallback when the
        registry does not have it (404).  Filtering by *artifact_type* is
        always re-applied locally: a registry's filter is not trusted.
        """
        if subject.digest is None:
            raise InvalidReferenceError(
                f"{subject} has no digest",
                hint="Referrers are attached to digests; resolve the tag first.",
            )
        action = f"listing referrers of {subject}"
        url = self._url(subject, "referrers", subject.digest)
        if artifact_type is not None:
            url += "?" + urllib.parse.urlencode({"artifactType": artifact_type})
        found: list[Descriptor] = []
        pages = 0
        next_url: str | None = url
        while next_url is not None:
            pages += 1
            if pages > _MAX_PAGES:
                self._transport.fail(RegistryRequestError, f"{action}: too many pages")
            response = self._transport.request(
                "GET",
                next_url,
                action=action,
                headers={"Accept": OCI_INDEX},
                stream=True,
                missing_ok=True,
            )
            try:
                if response.status == 404:
                    Transport.discard(response)
                    if pages == 1:
                        return self._fallback_referrers(subject, artifact_type)
                    break
                data = self._read_limited(response, self.max_manifest_bytes, action, next_url)
                link = response.headers.get("Link")
            finally:
                response.release_conn()
            found.extend(parse_index(data).manifests)
            next_url = _next_link(next_url, link)
        return _filter(found, artifact_type)

    def _fallback_referrers(
        self, subject: Reference, artifact_type: str | None
    ) -> tuple[Descriptor, ...]:
        if subject.digest is None:
            return ()
        logger.debug("no referrers API at %s; using the tag schema", subject.registry)
        index = self._fetch_index(subject.with_tag(fallback_tag(subject.digest)), missing_ok=True)
        if index is None:
            return ()
        return _filter(index.manifests, artifact_type)

    # --- tags ---------------------------------------------------------------

    def list_tags(self, repository: Reference, *, page_size: int | None = None) -> tuple[str, ...]:
        """Every tag of *repository*, following ``Link`` pagination."""
        action = f"listing tags of {repository.with_tag(None)}"
        url = self._url(repository, "tags", "list")
        if page_size is not None:
            url += "?" + urllib.parse.urlencode({"n": page_size})
        tags: list[str] = []
        next_url: str | None = url
        pages = 0
        while next_url is not None:
            pages += 1
            if pages > _MAX_PAGES * 10:
                self._transport.fail(RegistryRequestError, f"{action}: too many pages")
            response = self._transport.request("GET", next_url, action=action, stream=True)
            try:
                data = self._read_limited(response, self.max_manifest_bytes, action, next_url)
                link = response.headers.get("Link")
            finally:
                response.release_conn()
            try:
                document = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                document = None
            page = document.get("tags") if isinstance(document, dict) else None
            if page is None and isinstance(document, dict):
                page = []
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                self._transport.fail(InvalidManifestError, f"{action}: malformed tag list")
            tags.extend(page)
            next_url = _next_link(next_url, link)
        return tuple(tags)

    # --- blobs --------------------------------------------------------------

    def blob_exists(self, repository: Reference, digest: str) -> bool:
        """True when the registry has blob *digest* in *repository*."""
        response = self._transport.request(
            "HEAD",
            self._url(repository, "blobs", check_digest(digest)),
            action=f"checking blob {digest} in {repository.with_tag(None)}",
            missing_ok=True,
        )
        return response.status == 200

    def push_blob(
        self,
        repository: Reference,
        source: bytes | Path,
        *,
        media_type: str = "application/octet-stream",
        mount_from: str | None = None,
    ) -> Descriptor:
        """Upload *source* (bytes, or a file streamed from disk) unless it is already there.

        A monolithic upload (POST, then PUT with the digest); the file is read
        twice — once to hash, once to send — and never held in memory.
        *mount_from* names another repository of the same registry to mount
        the blob from instead of uploading it, when the registry allows.
        """
        if isinstance(source, bytes):
            digest, size = sha256_digest(source), len(source)
            body: bytes | Callable[[], BinaryIO] = source
        else:
            path = source
            digest, size = _hash_file(path)

            def body() -> BinaryIO:
                return path.open("rb")

        descriptor = Descriptor(media_type=media_type, digest=digest, size=size)
        if self.blob_exists(repository, digest):
            return descriptor
        action = f"pushing blob {digest} to {repository.with_tag(None)}"
        uploads = self._url(repository, "blobs", "uploads/")
        if mount_from is not None:
            uploads += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        response = self._transport.request(
            "POST", uploads, action=action, headers={"Content-Length": "0"}, ok=(201, 202)
        )
        if response.status == 201:
            return descriptor  # Mounted.
        location = response.headers.get("Location")
        if not location:
            self._transport.fail(
                RegistryRequestError, f"{action}: the registry gave no upload location"
            )
        upload_url = urllib.parse.urljoin(uploads, location)
        separator = "&" if urllib.parse.urlsplit(upload_url).query else "?"
        upload_url += separator + urllib.parse.urlencode({"digest": digest})
        self._transport.request(
            "PUT",
            upload_url,
            action=action,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
            ok=(201, 204),
        )
        return descriptor

    def pull_blob_to(
        self,
        repository: Reference,
        blob: Descriptor | str,
        destination: Path | BlobSink,
        *,
        max_bytes: int | None = None,
    ) -> Descriptor:
        """Stream blob *blob* into *destination*, checking its digest on the fly.

        A :class:`~pathlib.Path` destination is written through a temporary
        file beside it and appears only once size and digest match; on any
        error nothing is left behind.  A :class:`BlobSink` gets the bytes as
        they arrive and must be discarded when this raises.  A connection
        dropped mid-way resumes with a ``Range`` request.  The size is capped
        by the descriptor's size, else by *max_bytes* (default: the client's
        ``max_blob_bytes``).
        """
        if isinstance(blob, Descriptor):
            digest, expected_size = blob.digest, blob.size
        else:
            digest, expected_size = check_digest(blob), None
        limit = expected_size if expected_size is not None else (max_bytes or self.max_blob_bytes)
        if not isinstance(destination, Path):
            return self._stream_blob(repository, digest, expected_size, limit, destination)
        directory = destination.parent
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=directory)
        temporary_path = Path(temporary)
        try:
            with os.fdopen(handle, "wb") as output:
                result = self._stream_blob(repository, digest, expected_size, limit, output)
                output.flush()
                os.fsync(output.fileno())
            temporary_path.replace(destination)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temporary_path.unlink()
            raise
        return result

    def _stream_blob(
        self,
        repository: Reference,
        digest: str,
        expected_size: int | None,
        limit: int,
        sink: BlobSink,
    ) -> Descriptor:
        action = f"pulling blob {digest} from {repository.with_tag(None)}"
        url = self._url(repository, "blobs", digest)
        hasher = hashlib.sha256()
        written = 0
        attempt = 0
        while True:
            attempt += 1
            headers = {"Range": f"bytes={written}-"} if written else {}
            response = self._transport.request(
                "GET", url, action=action, headers=headers, stream=True, ok=(200, 206)
            )
            try:
                skip = self._resume_offset(response, written, action, url)
                while True:
                    chunk = response.read(_CHUNK, decode_content=False)
                    if not chunk:
                        break
                    if skip:
                        # Already written (and hashed) from an earlier response.
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                        if not chunk:
                            continue
                    written += len(chunk)
                    if written > limit:
                        self._transport.fail(
                            SizeLimitError,
                            f"{action}: the registry sent more than {limit} bytes",
                            hint="The blob is larger than its descriptor says or than the "
                            "configured limit; the registry may be hostile.",
                        )
                    hasher.update(chunk)
                    sink.write(chunk)
            except HTTPError as exc:
                self._transport.backoff_or_fail(attempt, url, action, type(exc).__name__)
                continue
            finally:
                response.release_conn()
            break
        actual = "sha256:" + hasher.hexdigest()
        if (expected_size is not None and written != expected_size) or actual != digest:
            self._transport.fail(
                DigestMismatchError,
                f"{action}: the registry served {written} bytes with digest {actual}",
                hint="The bytes do not match the digest asked for: treat it as tampering or "
                "corruption; nothing was kept.",
            )
        return Descriptor(media_type="application/octet-stream", digest=digest, size=written)

    def _resume_offset(
        self, response: BaseHTTPResponse, written: int, action: str, url: str
    ) -> int:
        """How many leading bytes of *response* were already written."""
        if response.status == 200:
            return written
        content_range = response.headers.get("Content-Range", "")
        unit, _, spec = content_range.partition(" ")
        start = spec.partition("-")[0]
        if unit != "bytes" or not start.isdigit() or int(start) != written:
            self._transport.fail(
                RegistryRequestError,
                f"{action}: {redact_url(url)} answered a resume with a wrong range",
            )
        return 0


def _filter(descriptors: Iterable[Descriptor], artifact_type: str | None) -> tuple[Descriptor, ...]:
    return tuple(
        d for d in descriptors if artifact_type is None or d.artifact_type == artifact_type
    )


def _next_link(current: str, link: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against *current*."""
    if not link:
        return None
    for part in link.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return urllib.parse.urljoin(current, target.strip().strip("<>"))
    return None


def _hash_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size
