"""The agent's probe and metrics server: HTTP/1.1 GET on ``socketserver``, not ``http.server``.

The server answers four GET paths with short bodies.  ``http.server`` would
bring ``http.client``, ``ssl`` (with OpenSSL), ``email``, ``html`` and
``mimetypes`` into every pod's agent, about 4 MB of its resident memory
(``docs/benchmarks.md``), and resolve the listen address's name at start.
This module reads what a probe, a scraper or ``curl`` sends -- a request line
and headers, no body -- and answers with ``Content-Length``, keeping the
connection open as HTTP/1.1 does unless the client asks to close it.  Any
other method gets 501, anything malformed 400, and the connection is closed.
"""

from __future__ import annotations

import socketserver
from collections.abc import Callable
from typing import Final

Route = Callable[[str], tuple[int, str, str]]
"""``path -> (status, content type, body)`` for one GET (the query string is cut off)."""

MAX_LINE: Final = 8192
MAX_HEADERS: Final = 100
IDLE_TIMEOUT: Final = 60.0
"""Seconds a kept-alive connection may stay silent before the server closes it."""
SERVER: Final = "logicbundle-agent"

_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class _Handler(socketserver.StreamRequestHandler):
    server: ProbeServer
    timeout = IDLE_TIMEOUT

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (OSError, ValueError):
            return  # the peer went away or stayed silent: nothing to answer

    def _one(self) -> bool:
        """Answer one request; whether the connection stays open for another."""
        line = self.rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        words = line.decode("latin-1").split()
        if len(line) > MAX_LINE or len(words) != 3 or not words[2].startswith("HTTP/1."):
            self._send(400, "text/plain; charset=utf-8", "bad request line\n", close=True)
            return False
        method, target, version = words
        connection = ""
        for _ in range(MAX_HEADERS + 1):
            header = self.rfile.readline(MAX_LINE + 1)
            if len(header) > MAX_LINE:
                break
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "connection":
                connection = value.strip().lower()
        else:
            header = b"x"  # more headers than MAX_HEADERS
        if header not in (b"\r\n", b"\n", b""):
            self._send(431, "text/plain; charset=utf-8", "headers too large\n", close=True)
            return False
        if method != "GET":
            self._send(501, "text/plain; charset=utf-8", f"{method} is not served\n", close=True)
            return False
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        status, content_type, body = self.server.route(target.split("?", 1)[0])
        self._send(status, content_type, body, close=close)
        return not close

    def _send(self, status: int, content_type: str, body: str, *, close: bool) -> None:
        data = body.encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
            f"Server: {SERVER}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(data)}",
        ]
        if close:
            lines.append("Connection: close")
        head = "\r\n".join(lines) + "\r\n\r\n"
        self.wfile.write(head.encode("latin-1") + data)


class ProbeServer(socketserver.ThreadingTCPServer):
    """Serves ``route`` on ``address``, one daemon thread per connection."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], route: Route) -> None:
        self.route = route
        super().__init__(address, _Handler)
