"""The sample application: an HTTP pricing service whose logic is a logic bundle.

Endpoints:

* ``GET /price?item=apple&qty=3&user=alice`` -- ``{"item", "qty", "price", "digest"}``.
  With ``user``, the call is routed by that sticky key (``price.by_key``), so
  during a request-level split the same user always sees the same version.
  A bundle error answers 500, no bundle yet 503.
* ``GET /healthz`` -- 200 once a version is active, else 503.
* ``GET /metrics`` -- Prometheus text: the SDK's per-digest series (calls,
  errors, latency histogram, in flight, activations) and the app's requests.
* ``GET /stats`` -- the SDK's JSON report (what the agent receives).

Configuration (flags win over environment): ``--root``/``$LOGICBUNDLE_ROOT``
(the shared volume, read-only in a pod), ``--socket``/``$LOGICBUNDLE_SOCKET``
(in a pod the webhook sets it to its writable socket volume; default
``<root>/sdk.sock``, for local runs), ``--bundle``/``$LOGICBUNDLE_BUNDLE``
(default ``pricing``), ``--host``/``--port``/``$PORT`` (default
127.0.0.1:8080; port 0 picks a free one), ``--port-file`` (written once
listening, for test harnesses), ``--leak-grace SECONDS`` (how long a retired
version may stay alive before the SDK reports it leaked; default the SDK's, 60).
At start the app loads ``<root>/<bundle>/current`` when it exists (with the request split the agent
describes next to it, so a restart mid-split keeps the split), then waits for
the agent on the socket.  SIGTERM stops it cleanly.

Run: ``.venv/bin/python -m examples.sample_app.app --root /tmp/lb --port 8080``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from examples.sample_app.bundles import BUNDLE_NAME, INTERFACE
from logicbundle.sdk import (
    LogicHost,
    NoBundleLoadedError,
    default_root,
    default_socket_path,
    prometheus_text,
    serve,
)

logger = logging.getLogger("sample_app")


class _Requests:
    """Request counts by path and status, for /metrics (a lock is fine here)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, int], int] = {}

    def add(self, path: str, status: int) -> None:
        with self.lock:
            self.counts[(path, status)] = self.counts.get((path, status), 0) + 1

    def text(self) -> str:
        lines = [
            "# HELP sample_app_requests Requests served by path and status.",
            "# TYPE sample_app_requests counter",
        ]
        with self.lock:
            for (path, status), count in sorted(self.counts.items()):
                lines.append(f'sample_app_requests_total{{path="{path}",code="{status}"}} {count}')
        return "\n".join(lines) + "\n"


class PricingApp:
    """The application object: its LogicHost, the HTTP server and the agent listener."""

    def __init__(
        self, *, root: Path, bundle: str = BUNDLE_NAME, leak_grace: float | None = None
    ) -> None:
        grace = {} if leak_grace is None else {"leak_grace": leak_grace}
        self.host = LogicHost(name=bundle, interface=INTERFACE, root=root, **grace)
        self.price = self.host.function("price")
        self.requests = _Requests()

    def handle(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, str]:
        """``(status, content type, body)`` for one GET."""
        if path == "/price":
            return self._price(query)
        if path == "/healthz":
            active = self.host.active_digest
            status = 200 if active else 503
            return status, "application/json", json.dumps({"active": active})
        if path == "/metrics":
            body = prometheus_text(self.host) + self.requests.text()
            return 200, "text/plain; version=0.0.4; charset=utf-8", body
        if path == "/stats":
            return 200, "application/json", json.dumps(self.host.stats())
        return 404, "application/json", json.dumps({"error": f"no route {path}"})

    def _price(self, query: dict[str, list[str]]) -> tuple[int, str, str]:
        item = query.get("item", ["apple"])[0]
        try:
            qty = int(query.get("qty", ["1"])[0])
        except ValueError:
            return 400, "application/json", json.dumps({"error": "qty must be an integer"})
        user = query.get("user", [None])[0]
        body: dict[str, Any] = {"item": item, "qty": qty}
        try:
            if user is None:
                body["digest"] = self.host.active_digest
                body["price"] = self.price(item, qty)
            else:
                body["user"] = user
                body["digest"] = self.host.route_for(user)
                body["price"] = self.price.by_key(user, item, qty)
        except NoBundleLoadedError as exc:
            return 503, "application/json", json.dumps({"error": exc.message})
        except Exception as exc:
            body["error"] = f"{type(exc).__name__}: {exc}"
            return 500, "application/json", json.dumps(body)
        return 200, "application/json", json.dumps(body)


def _handler(app: PricingApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, content_type, body = app.handle(url.path, parse_qs(url.query))
            app.requests.add(url.path, status)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The logicbundle sample pricing service.")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--socket", type=Path, default=None)
    parser.add_argument("--bundle", default=os.environ.get("LOGICBUNDLE_BUNDLE", BUNDLE_NAME))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--port-file", type=Path, default=None)
    parser.add_argument("--leak-grace", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    root = args.root or default_root()
    if args.root is not None and args.socket is None and "LOGICBUNDLE_SOCKET" not in os.environ:
        socket_path = root / "sdk.sock"
    else:
        socket_path = args.socket or default_socket_path()
    app = PricingApp(root=root, bundle=args.bundle, leak_grace=args.leak_grace)
    if (root / args.bundle / "current").exists():
        activation = app.host.load_current()
        logger.info("loaded %s from current", activation.digest)
    listener = serve(app.host, path=socket_path)
    server = ThreadingHTTPServer((args.host, args.port), _handler(app))
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file is not None:
        temporary = args.port_file.with_name(args.port_file.name + ".tmp")
        temporary.write_text(f"{port}\n")
        temporary.replace(args.port_file)
    logger.info("serving on http://%s:%d, agent socket %s", args.host, port, socket_path)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        listener.close()
        app.host.close(timeout=5)


if __name__ == "__main__":
    main()
