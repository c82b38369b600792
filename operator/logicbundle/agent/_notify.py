"""Telling the application: the SDK socket, an HTTP hook, a signal; and the HTTP health check.

The SDK protocol is ``docs/sdk-protocol.md``: one JSON object per line over a
Unix stream socket, replies carrying the request's ``id``, event lines (no
``id``) skipped.  A connection is kept open and re-made once when the
application restarted underneath it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from logicbundle.agent._errors import NotifyError

MAX_LINE: Final = 64 * 1024
SIGNALS: Final = {"SIGHUP": signal.SIGHUP, "SIGUSR1": signal.SIGUSR1, "SIGUSR2": signal.SIGUSR2}


class SdkUnavailableError(NotifyError):
    """Nothing listens on the SDK socket (the application is not running, or not yet)."""

    reason = "SdkUnavailable"


class HookUnavailableError(NotifyError):
    """Nothing listens on a localhost hook or health URL (the application is not running yet)."""

    reason = "HookUnavailable"


class SdkClient:
    """A line-JSON client of the application's SDK socket; one request at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._buffer = b""

    def _connect(self, timeout: float) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                sock.close()
                raise SdkUnavailableError(
                    f"no application listens on the SDK socket {str(self.path)!r}: {exc}"
                ) from None
            self._sock = sock
        return self._sock

    def call(
        self,
        request: dict[str, Any],
        *,
        timeout: float,
        sent: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Send ``request`` (an ``id`` is added) and return its reply, or raise NotifyError.

        ``sent`` is called once the request is out, before its reply is read.
        """
        with self._lock:
            for attempt in (0, 1):
                sock = self._connect(timeout)
                try:
                    return self._exchange(sock, request, timeout, sent)
                except (ConnectionError, BrokenPipeError) as exc:
                    self._drop()  # the application restarted: try a fresh connection once
                    if attempt:
                        raise NotifyError(f"the SDK connection broke: {exc}") from None
                except TimeoutError:
                    self._drop()
                    raise NotifyError(
                        f"the application did not answer {request.get('op')!r} within {timeout:g}s"
                    ) from None
                except OSError as exc:
                    self._drop()
                    raise NotifyError(f"the SDK socket failed: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(
        self,
        sock: socket.socket,
        request: dict[str, Any],
        timeout: float,
        sent: Callable[[], None] | None,
    ) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        line = json.dumps({**request, "id": request_id}, separators=(",", ":")).encode() + b"\n"
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        sock.sendall(line)
        if sent is not None:
            sent()
        while True:
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the application closed the SDK connection")
                self._buffer += chunk
                if len(self._buffer) > MAX_LINE:
                    raise ConnectionResetError("an SDK reply is longer than 64 KiB")
            raw, self._buffer = self._buffer.split(b"\n", 1)
            try:
                reply = json.loads(raw)
            except ValueError:
                continue
            if isinstance(reply, dict) and reply.get("id") == request_id:
                return reply


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    timeout: float,
    sent: Callable[[], None] | None = None,
) -> int:
    """POST ``body`` to a localhost ``url``; the status.

    :class:`HookUnavailableError` when nothing listens there (connection
    refused), :class:`NotifyError` on any other failure.  ``sent`` is called
    once the request is out, before the answer is read.
    """
    return _request("POST", url, json.dumps(body).encode(), timeout, sent)


def get_status(url: str, *, timeout: float) -> int:
    return _request("GET", url, None, timeout)


def _request(
    method: str,
    url: str,
    body: bytes | None,
    timeout: float,
    sent: Callable[[], None] | None = None,
) -> int:
    import http.client  # noqa: PLC0415 - the HTTP hook only: it brings ssl and email

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body, headers)
        if sent is not None:
            sent()
        response = conn.getresponse()
        response.read(65536)
        return response.status
    except ConnectionRefusedError as exc:
        raise HookUnavailableError(f"{method} {url} failed: nothing listens ({exc})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NotifyError(f"{method} {url} failed: {exc}") from None
    finally:
        conn.close()


def find_processes(name: str, *, proc: Path = Path("/proc")) -> list[int]:
    """Pids whose command name is ``name`` (as ``pgrep -x``); needs shareProcessNamespace."""
    found: list[int] = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            comm = (entry / "comm").read_text().rstrip("\n")
            if comm != name[:15]:
                continue
            if len(name) > 15:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
                if Path(argv0.decode(errors="replace")).name != name:
                    continue
        except OSError:
            continue  # it exited, or is not ours to read
        found.append(int(entry.name))
    return found


def send_signal(process_name: str, signal_name: str) -> list[int]:
    """Signal every process named ``process_name``; NotifyError when there is none."""
    pids = find_processes(process_name)
    if not pids:
        raise NotifyError(
            f"no process named {process_name!r} to send {signal_name} to (signal notification "
            "needs shareProcessNamespace: true on the pod)"
        )
    signalled = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, SIGNALS[signal_name])
            signalled.append(pid)
    return signalled
