"""The agent socket: line-delimited JSON between the reload agent and the application.

The application listens on a Unix stream socket (mode 0660) in the socket
volume the webhook mounts read-write (``$LOGICBUNDLE_SOCKET``; the bundles
volume is read-only to the application); the agent connects.  Each request
is one JSON object on one line (UTF-8, at most 64 KiB), each reply one line
carrying the request's ``id``.
Requests on one connection are answered in order; open several connections
for concurrency.  The full description, with examples, is in
``docs/sdk-protocol.md``; in short:

``{"op":"activate","id":1,"bundle":"pricing","digest":"sha256:..","path":"/…/.versions/sha256:..",
"manifest":null,"split":{"candidate":"sha256:..","weight":5}|null}``
    Load, check and self-test what is new, hand state over, swap.  Reply
    ``{"id":1,"ok":true,"bundle":..,"digest":..,"candidate":..,"weight":..,"changed":..,
    "timings":{"load":ms,"selftest":ms,"state":ms,"swap":ms,"total":ms},"state":{..}}``, or
    ``{"id":1,"ok":false,"digest":<requested>,"active":<still serving>,"reason":..,"error":..}``.

``{"op":"release","id":2,"bundle":"pricing","digest":"sha256:..","timeout":10}``
    Wait (up to ``timeout`` seconds) until that digest is drained and torn
    down.  ``ok: true`` means the agent may delete its directory; ``ok: false``
    with reason ``InUse`` (still serving) or ``Draining`` (deadline passed).

``{"op":"stats","id":3}`` / ``{"op":"stats","id":3,"bundle":"pricing"}``
    ``{"id":3,"ok":true,"bundles":{"pricing":{..per-version counters..}},
    "process":{"rssBytes":..,"threads":..,"gcPauseNs":..,"gcCollections":..,"wallNs":..}}``
    (the process's health, sampled now; see :mod:`logicbundle.sdk._process`).

``{"op":"ping","id":4}``
    ``{"id":4,"ok":true,"protocol":1,"pid":..,"bundles":{"pricing":{"active":..,"candidate":..}}}``.

``{"op":"subscribe","id":5}``
    ``{"id":5,"ok":true}``, then unsolicited event lines without ``id`` on that
    connection: ``{"event":"released","bundle":..,"digest":..,"drainMs":..,..}``,
    ``{"event":"activated",..}``, ``{"event":"refused",..}``.

A malformed request gets ``{"id":<id or null>,"ok":false,"reason":"BadRequest","error":..}``
and the connection stays usable (an over-long line closes it after the reply).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from logicbundle.contract import DEFAULT_ROOT, ROOT_ENV, SOCKET_ENV, SOCKET_FILE_NAME
from logicbundle.sdk._errors import ActivationRefusedError, ProtocolError, SdkError
from logicbundle.sdk._host import Event, LogicHost, Split
from logicbundle.sdk._process import sample as process_sample

logger = logging.getLogger("logicbundle.sdk")

PROTOCOL_VERSION: Final = 1
MAX_LINE: Final = 64 * 1024
# SOCKET_ENV, ROOT_ENV, DEFAULT_ROOT and the socket's file name are logicbundle.contract's:
# the webhook sets the variables and mounts the volumes they name.  Outside a pod, with
# $LOGICBUNDLE_SOCKET unset, the socket is <root>/sdk.sock (in an injected pod the root is
# read-only and the variable is always set).
_MAX_RELEASE_WAIT: Final = 60.0
_MAX_SUN_PATH: Final = 107


def default_root() -> Path:
    """``$LOGICBUNDLE_ROOT``, or ``/var/run/logicbundle``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def default_socket_path() -> Path:
    """``$LOGICBUNDLE_SOCKET``, or ``<root>/sdk.sock``."""
    explicit = os.environ.get(SOCKET_ENV)
    return Path(explicit) if explicit else default_root() / SOCKET_FILE_NAME


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.write_lock = threading.Lock()
        self.subscribed = False

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
        with self.write_lock:
            self.sock.sendall(data)


class AgentListener:
    """Serves the agent protocol for ``hosts`` on a Unix socket, from daemon threads.

    Use :func:`serve` to create and start one.  :meth:`close` stops it and
    removes the socket file.
    """

    def __init__(self, path: Path, hosts: Iterable[LogicHost]) -> None:
        self.path = path
        self.hosts = {host.name: host for host in hosts}
        if not self.hosts:
            raise ValueError("an agent listener needs at least one LogicHost")
        self._server: socket.socket | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._undo = [host.add_listener(self._broadcast) for host in self.hosts.values()]

    def start(self) -> None:
        """Bind the socket (replacing a stale one) and start accepting."""
        if len(os.fsencode(self.path)) > _MAX_SUN_PATH:
            raise ValueError(
                f"socket path {str(self.path)!r} is longer than {_MAX_SUN_PATH} bytes, the "
                "limit of a Unix socket address; choose a shorter path"
            )
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()  # left by a previous process of this container
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(self.path))
            self.path.chmod(0o660)
            server.listen(16)
        except OSError as exc:
            server.close()
            if exc.errno == errno.EROFS:
                raise OSError(
                    errno.EROFS,
                    f"cannot create the SDK socket {str(self.path)!r}: its directory is on a "
                    f"read-only mount (the bundles volume is read-only to the application); "
                    f"set ${SOCKET_ENV} to a path in a writable directory (the webhook sets it "
                    "to the socket volume it mounts)",
                ) from exc
            raise
        self._server = server
        self._thread = threading.Thread(
            target=self._accept_loop, args=(server,), name="logicbundle-sdk-listener", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, close every connection, remove the socket file."""
        if self._closed.is_set():
            return
        self._closed.set()
        for undo in self._undo:
            undo()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> AgentListener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept_loop(self, server: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = server.accept()
            except OSError:
                if self._closed.is_set():
                    return
                logger.exception("accept on %s failed", self.path)
                continue
            conn = _Connection(sock)
            with self._lock:
                self._connections.add(conn)
            threading.Thread(
                target=self._serve, args=(conn,), name="logicbundle-sdk-conn", daemon=True
            ).start()

    def _serve(self, conn: _Connection) -> None:
        buffer = b""
        try:
            while True:
                try:
                    chunk = conn.sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        conn.send(self.handle_line(line, conn))
                if len(buffer) > MAX_LINE:
                    conn.send(_error(None, ProtocolError(f"request longer than {MAX_LINE} bytes")))
                    return
        except OSError:
            return  # the agent went away mid-reply
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.sock.close()

    def _broadcast(self, event: Event) -> None:
        with self._lock:
            targets = [c for c in self._connections if c.subscribed]
        for conn in targets:
            with contextlib.suppress(OSError):
                conn.send(event)

    # --- requests --------------------------------------------------------------------

    def handle_line(self, line: bytes, conn: _Connection | None = None) -> dict[str, Any]:
        """The reply to one request line; never raises."""
        request_id: Any = None
        try:
            try:
                request = json.loads(line)
            except ValueError as exc:
                raise ProtocolError(f"the request is not JSON: {exc}") from None
            if not isinstance(request, dict):
                raise ProtocolError("the request must be a JSON object")
            request_id = request.get("id")
            op = request.get("op")
            if op == "subscribe":
                if conn is not None:
                    conn.subscribed = True
                return {"id": request_id, "ok": True}
            handlers = {
                "activate": self._activate,
                "release": self._release,
                "stats": self._stats,
                "ping": self._ping,
            }
            handler = handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ProtocolError(
                    f"unknown op {op!r}; expected activate, release, stats, ping or subscribe"
                )
            return handler(request)
        except SdkError as exc:
            return _error(request_id, exc)
        except Exception as exc:  # a bug must cost one request, not the listener
            logger.exception("the SDK failed on a request")
            return {
                "id": request_id,
                "ok": False,
                "reason": "InternalError",
                "error": f"{type(exc).__name__}: {exc}",
            }

    def _host(self, request: dict[str, Any]) -> LogicHost:
        name = request.get("bundle")
        if name is None and len(self.hosts) == 1:
            return next(iter(self.hosts.values()))
        host = self.hosts.get(name) if isinstance(name, str) else None
        if host is None:
            raise ProtocolError(
                f"bundle {name!r} is not hosted by this application "
                f"(it hosts {', '.join(sorted(self.hosts))})"
            )
        return host

    def _path(self, host: LogicHost, raw: Any, field: str) -> Path | None:
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw:
            raise ProtocolError(f"`{field}` must be a path string")
        path = Path(raw)
        if host.root is not None:
            allowed = (host.root / host.name).resolve()
            if not path.resolve().is_relative_to(allowed):
                raise ProtocolError(f"`{field}` {raw!r} is outside the bundle's directory")
        return path

    def _activate(self, request: dict[str, Any]) -> dict[str, Any]:
        host = self._host(request)
        request_id = request.get("id")
        digest = _digest(request.get("digest"), "digest")
        path = self._path(host, request.get("path"), "path")
        manifest = self._path(host, request.get("manifest"), "manifest")
        split = None
        raw_split = request.get("split")
        if raw_split is not None:
            if not isinstance(raw_split, dict):
                raise ProtocolError("`split` must be an object or null")
            weight = raw_split.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ProtocolError("`split.weight` must be a number (percent, 0-100)")
            if not 0 <= weight <= 100:
                raise ProtocolError(f"`split.weight` {weight} is not within 0-100")
            split = Split(
                candidate=_digest(raw_split.get("candidate"), "split.candidate"),
                weight=float(weight),
                path=self._path(host, raw_split.get("path"), "split.path"),
                manifest=self._path(host, raw_split.get("manifest"), "split.manifest"),
            )
        try:
            result = host.activate(digest, path, manifest=manifest, split=split)
        except ActivationRefusedError as exc:
            reply = _error(request_id, exc)
            reply.update(bundle=host.name, digest=digest, active=host.active_digest)
            return reply
        return {
            "id": request_id,
            "ok": True,
            "bundle": host.name,
            "digest": result.digest,
            "candidate": result.candidate,
            "weight": result.weight,
            "changed": result.changed,
            "timings": result.timings,
            "state": {
                d: {"outcome": s.outcome, "schema": s.schema, "detail": s.detail}
                for d, s in result.state.items()
            },
        }

    def _release(self, request: dict[str, Any]) -> dict[str, Any]:
        host = self._host(request)
        digest = _digest(request.get("digest"), "digest")
        timeout = request.get("timeout", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise ProtocolError("`timeout` must be a non-negative number of seconds")
        reply: dict[str, Any] = {"id": request.get("id"), "bundle": host.name, "digest": digest}
        if digest in (host.active_digest, host.candidate_digest):
            reply.update(ok=False, reason="InUse", error=f"{digest} is still serving calls")
        elif host.wait_released(digest, min(float(timeout), _MAX_RELEASE_WAIT)):
            reply.update(ok=True, released=True)
        else:
            reply.update(
                ok=False,
                reason="Draining",
                error=f"{digest} still has calls in flight after {timeout}s",
            )
        return reply

    def _stats(self, request: dict[str, Any]) -> dict[str, Any]:
        hosts = [self._host(request)] if "bundle" in request else list(self.hosts.values())
        return {
            "id": request.get("id"),
            "ok": True,
            "bundles": {host.name: host.stats() for host in hosts},
            "process": process_sample(),
        }

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": request.get("id"),
            "ok": True,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "bundles": {
                name: {"active": host.active_digest, "candidate": host.candidate_digest}
                for name, host in self.hosts.items()
            },
        }


def _digest(raw: Any, field: str) -> str:
    if not isinstance(raw, str):
        raise ProtocolError(f"`{field}` must be a digest string like sha256:<64 hex>")
    algorithm, colon, hexpart = raw.partition(":")
    if not colon or not algorithm or not hexpart or not hexpart.isalnum():
        raise ProtocolError(f"`{field}` {raw!r} is not a digest like sha256:<64 hex>")
    return raw


def _error(request_id: Any, exc: SdkError) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "reason": exc.reason, "error": exc.diagnostics()}


def serve(*hosts: LogicHost, path: Path | None = None) -> AgentListener:
    """Start listening for the agent on ``path`` (default :func:`default_socket_path`)."""
    listener = AgentListener(path or default_socket_path(), hosts)
    listener.start()
    return listener
