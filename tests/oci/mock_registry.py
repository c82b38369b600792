"""An in-process OCI registry for unit tests, with switches for misbehaviour.

It speaks enough of the distribution API for the client (manifests, blobs,
monolithic uploads, tags, referrers) and can demand basic or bearer auth,
fail requests with chosen statuses, serve tampered bytes, drop a connection
mid-blob, redirect blobs to "storage" on another host name, and speak TLS.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
import ssl
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags|referrers)/(?P<rest>.*)$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class RegistryState:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)
    links: set[tuple[str, str]] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    # Switches.
    auth: str = "none"  # none | basic | bearer
    username: str = "robot"
    password: str = "s3cr3t-passw0rd"
    issued_tokens: set[str] = field(default_factory=set)
    referrers_api: bool = False
    fail_next: list[int] = field(default_factory=list)
    not_found_message: str = "manifest unknown"
    """The message of a manifest's 404 (a registry that echoes what it was given)."""
    token_extra: dict[str, str] = field(default_factory=dict)
    """More fields of the token service's answer (``refresh_token``...)."""
    basic_challenge: str = 'Basic realm="mock"'
    """The ``WWW-Authenticate`` of a basic-auth 401 (a registry may echo anything in it)."""
    retry_after: str | None = None
    tamper_blobs: bool = False
    tamper_manifests: bool = False
    drop_blob_after: int | None = None
    redirect_blobs_to: str | None = None
    realm_override: str | None = None
    lie_about_content_length: bool = False


class MockRegistry:
    """Start with ``with MockRegistry() as registry:``; ``registry.host`` is ``127.0.0.1:port``."""

    def __init__(self, *, tls: tuple[Path, Path] | None = None) -> None:
        self.state = RegistryState()
        self._lock = threading.Lock()
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port = self._server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> MockRegistry:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def seen(self) -> list[Seen]:
        return self.state.seen

    def requests(self, method: str, fragment: str = "") -> list[Seen]:
        return [s for s in self.state.seen if s.method == method and fragment in s.path]


def _make_handler(registry: MockRegistry) -> type[BaseHTTPRequestHandler]:
    state = registry.state

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # --- plumbing -------------------------------------------------------

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            *,
            head: bool = False,
        ) -> None:
            self.send_response(status)
            all_headers = {"Content-Length": str(len(body))}
            all_headers.update(headers or {})
            for key, value in all_headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str = "") -> None:
            body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
            self._send(
                status, body, {"Content-Type": "application/json"}, head=self.command == "HEAD"
            )

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            with registry._lock:
                state.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                failure = state.fail_next.pop(0) if state.fail_next else None
            if failure is not None:
                self._body()
                headers = {"Retry-After": state.retry_after} if state.retry_after else {}
                body = json.dumps({"errors": [{"code": "UNAVAILABLE"}]}).encode()
                self._send(failure, body, headers, head=self.command == "HEAD")
                return
            if parts.path == "/token":
                self._token(parts.query)
                return
            if parts.path.startswith("/storage/"):
                self._storage(parts.path.removeprefix("/storage/"))
                return
            if parts.path == "/v2/":
                self._send(200, b"{}", {"Content-Type": "application/json"})
                return
            match = _ROUTE.match(parts.path)
            if not match:
                self._send(404, b"404 page not found", {"Content-Type": "text/plain"})
                return
            name, kind, rest = match["name"], match["kind"], match["rest"]
            if not self._check_auth(name):
                return
            query = parse_qs(parts.query)
            if kind == "manifests":
                self._manifests(name, rest)
            elif kind == "blobs" and rest.startswith("uploads"):
                self._uploads(name, rest, query)
            elif kind == "blobs":
                self._blobs(name, rest)
            elif kind == "tags":
                self._tags(name, query)
            elif state.referrers_api:
                self._referrers(name, rest, query)
            else:
                self._send(404, b"404 page not found", {"Content-Type": "text/plain"})

        def _check_auth(self, name: str) -> bool:
            header = self.headers.get("Authorization", "")
            if state.auth == "none":
                return True
            if state.auth == "basic":
                raw = f"{state.username}:{state.password}".encode()
                if header == "Basic " + base64.b64encode(raw).decode():
                    return True
                self._body()
                self._send(401, b"", {"WWW-Authenticate": state.basic_challenge})
                return False
            token = header.removeprefix("Bearer ")
            if header.startswith("Bearer ") and token in state.issued_tokens:
                return True
            self._body()
            actions = "pull" if self.command in ("GET", "HEAD") else "pull,push"
            realm = state.realm_override or f"{registry.scheme}://{registry.host}/token"
            challenge = f'Bearer realm="{realm}",service="mock",scope="repository:{name}:{actions}"'
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
            self._send(401, body, {"WWW-Authenticate": challenge}, head=self.command == "HEAD")
            return False

        # --- endpoints ------------------------------------------------------

        def _token(self, query: str) -> None:
            raw = f"{state.username}:{state.password}".encode()
            if self.headers.get("Authorization") != "Basic " + base64.b64encode(raw).decode():
                self._send(401, b'{"details":"bad credentials"}')
                return
            token = "tok-" + uuid.uuid4().hex
            state.issued_tokens.add(token)
            self._send(200, json.dumps({"token": token, **state.token_extra}).encode())

        def _manifests(self, name: str, reference: str) -> None:
            if self.command == "PUT":
                data = self._body()
                media_type = self.headers.get("Content-Type", "")
                digest = digest_of(data)
                if reference.startswith("sha256:") and reference != digest:
                    self._error(400, "DIGEST_INVALID")
                    return
                state.manifests[digest] = (media_type, data)
                if not reference.startswith("sha256:"):
                    state.tags[(name, reference)] = digest
                headers = {
                    "Docker-Content-Digest": digest,
                    "Location": f"/v2/{name}/manifests/{digest}",
                }
                subject = json.loads(data).get("subject")
                if state.referrers_api and subject:
                    headers["OCI-Subject"] = subject["digest"]
                self._send(201, b"", headers)
                return
            digest = (
                reference if reference.startswith("sha256:") else state.tags.get((name, reference))
            )
            if digest is None or digest not in state.manifests:
                self._error(404, "MANIFEST_UNKNOWN", state.not_found_message)
                return
            media_type, data = state.manifests[digest]
            if state.tamper_manifests:
                data = data.replace(b"}", b" }", 1)
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
            self._send(200, data, headers, head=self.command == "HEAD")

        def _blobs(self, name: str, digest: str) -> None:
            if digest not in state.blobs or (name, digest) not in state.links:
                self._error(404, "BLOB_UNKNOWN", "blob unknown")
                return
            if self.command == "GET" and state.redirect_blobs_to:
                self._send(
                    307,
                    b"",
                    {
                        "Location": f"{state.redirect_blobs_to}/storage/{digest}"
                        "?X-Amz-Signature=SIGNATURE-SECRET"
                    },
                )
                return
            self._serve_blob(digest)

        def _storage(self, digest: str) -> None:
            if digest not in state.blobs:
                self._send(404)
                return
            self._serve_blob(digest)

        def _serve_blob(self, digest: str) -> None:
            data = state.blobs[digest]
            if state.tamper_blobs:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
            if self.command == "HEAD":
                self._send(200, b"", {**headers, "Content-Length": str(len(data))}, head=True)
                return
            status, start = 200, 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match:
                start = int(match[1])
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if state.drop_blob_after is not None and status == 200:
                cut = state.drop_blob_after
                state.drop_blob_after = None
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if state.lie_about_content_length:
                headers["Content-Length"] = str(len(body))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body + b"extra bytes the descriptor did not promise")
                self.close_connection = True
                return
            self._send(status, body, headers)

        def _uploads(self, name: str, rest: str, query: dict[str, list[str]]) -> None:
            if self.command == "POST":
                self._body()
                if "mount" in query and query["mount"][0] in state.blobs:
                    state.links.add((name, query["mount"][0]))
                    self._send(201, b"", {"Location": f"/v2/{name}/blobs/{query['mount'][0]}"})
                    return
                session = uuid.uuid4().hex
                state.uploads[session] = name
                location = f"/v2/{name}/blobs/uploads/{session}?_state=opaque-state"
                self._send(202, b"", {"Location": location, "Range": "0-0"})
                return
            session = rest.removeprefix("uploads/")
            data = self._body()
            if self.command != "PUT" or session not in state.uploads:
                self._error(404, "BLOB_UPLOAD_UNKNOWN")
                return
            digest = query.get("digest", [""])[0]
            if digest != digest_of(data):
                self._error(400, "DIGEST_INVALID", "digest did not match content")
                return
            state.blobs[digest] = data
            state.links.add((name, digest))
            del state.uploads[session]
            self._send(
                201,
                b"",
                {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest},
            )

        def _tags(self, name: str, query: dict[str, list[str]]) -> None:
            tags = sorted(tag for (repo, tag) in state.tags if repo == name)
            if not tags:
                self._error(404, "NAME_UNKNOWN")
                return
            last = query.get("last", [""])[0]
            tags = [t for t in tags if t > last]
            headers = {"Content-Type": "application/json"}
            if "n" in query:
                n = int(query["n"][0])
                if len(tags) > n:
                    tags = tags[:n]
                    headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
            self._send(200, json.dumps({"name": name, "tags": tags}).encode(), headers)

        def _referrers(self, name: str, digest: str, query: dict[str, list[str]]) -> None:
            entries = []
            for manifest_digest, (media_type, data) in state.manifests.items():
                document = json.loads(data)
                if (document.get("subject") or {}).get("digest") != digest:
                    continue
                artifact_type = document.get("artifactType") or document["config"]["mediaType"]
                entries.append(
                    {
                        "mediaType": media_type,
                        "digest": manifest_digest,
                        "size": len(data),
                        "artifactType": artifact_type,
                    }
                )
            headers = {"Content-Type": OCI_INDEX}
            if "artifactType" in query:
                entries = [e for e in entries if e["artifactType"] == query["artifactType"][0]]
                headers["OCI-Filters-Applied"] = "artifactType"
            body = json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            ).encode()
            self._send(200, body, headers)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch

    return Handler


def make_self_signed_certificate(
    directory: Path, *, name: str = "mock registry", dns_names: Sequence[str] = ()
) -> tuple[Path, Path]:
    """A CA-flagged self-signed certificate for 127.0.0.1 (and *dns_names*), and its key.

    Certificates that should be told apart in one trust store need distinct *name*s:
    OpenSSL finds a trust anchor by its subject name.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    *(x509.DNSName(name) for name in dns_names),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "registry.crt"
    key_path = directory / "registry.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
