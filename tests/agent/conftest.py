"""A fake distributor (http.server in a thread), packed example bundles and a real SDK app.

And the slow path's files as the kubelet writes them: the published rollout
state of a bundle (:func:`publish`) and the pod's downward-API annotations and
labels (:func:`write_pod`).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from examples.sample_app.bundles import ENTRYPOINT, EXAMPLES_DIR, INTERFACE, VERSIONS
from logicbundle import contract
from logicbundle.agent import Agent, format_annotations, parse_config
from logicbundle.artifact import oci_manifest
from logicbundle.bundle import pack_directory
from logicbundle.sdk import AgentListener, LogicHost, serve

DEADLINE = 20.0
COHORT_KEY = "shop/web-0"
ADMITTED = 1_700_000_000_000


# --- the slow path's files -------------------------------------------------------------


def replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` whole at once, like the kubelet's atomic writer (no reader sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def stable_state(digest: str, *, bundle: str = "pricing") -> contract.RolloutState:
    """A state with every pod on ``digest``."""
    return contract.RolloutState(bundle=bundle, stable=digest)


def publish(root: Path, state: contract.RolloutState | bytes, *, bundle: str = "pricing") -> Path:
    """Write ``bundle``'s published state where the agent's ``stateDir`` (``<root>/state``) is.

    ``state`` as bytes is written as it is (for states the agent must refuse).
    """
    data = state if isinstance(state, bytes) else json.dumps(contract.state_to_json(state)).encode()
    path = root / "state" / contract.state_file_name(bundle)
    replace_file(path, data)
    return path


def write_pod(
    root: Path,
    *,
    key: str | None = COHORT_KEY,
    admitted: int | None = ADMITTED,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> None:
    """Write the pod's downward-API annotations and labels files, as the webhook leaves them.

    ``key`` / ``admitted`` None: the pod lacks that annotation.
    """
    written = dict(annotations or {"other": 'x"y'})
    if key is not None:
        written[contract.ANNOTATION_COHORT_KEY] = key
    if admitted is not None:
        written[contract.ANNOTATION_ADMITTED_AT] = str(admitted)
    replace_file(root / "annotations", format_annotations(written).encode())
    replace_file(root / "labels", format_annotations(dict(labels or {})).encode())


@dataclass(frozen=True)
class Packed:
    digest: str
    manifest: bytes
    config: bytes
    config_digest: str
    layer: bytes
    layer_digest: str


def pack_example(name: str) -> Packed:
    packed = pack_directory(
        EXAMPLES_DIR / name,
        name="pricing",
        version=VERSIONS[name],
        interface=INTERFACE,
        entrypoint=ENTRYPOINT,
    )
    manifest = oci_manifest(packed)
    from logicbundle.oci import sha256_digest

    return Packed(
        digest=sha256_digest(manifest),
        manifest=manifest,
        config=packed.config,
        config_digest=packed.config_digest,
        layer=packed.layer,
        layer_digest=packed.layer_digest,
    )


def hostile_bundle() -> Packed:
    """A bundle whose layer holds ``../evil.py`` while its manifest lists ``evil.py``."""
    good = pack_example("pricing-v1")
    data = b"print('owned')\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = buffer.getvalue()
    import hashlib

    config_obj = json.loads(good.config)
    config_obj["files"] = [
        {
            "path": "evil.py",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "mode": 420,
        }
    ]
    config = json.dumps(config_obj, sort_keys=True, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    manifest_obj = json.loads(good.manifest)
    manifest_obj["config"].update(digest=config_digest, size=len(config))
    manifest_obj["layers"][0].update(digest=layer_digest, size=len(layer))
    manifest = json.dumps(manifest_obj).encode()
    return Packed(
        digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
        manifest=manifest,
        config=config,
        config_digest=config_digest,
        layer=layer,
        layer_digest=layer_digest,
    )


@pytest.fixture(scope="session")
def bundles() -> dict[str, Packed]:
    return {
        name: pack_example(name) for name in ("pricing-v1", "pricing-v2", "pricing-bad-selftest")
    }


@dataclass
class FakeDistributor:
    """Targets long-poll, manifests, blobs and reports, like ``logicbundle.distributor``."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    known: bool = True
    version: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    hang: bool = False
    """Hold every long-poll without an answer (a connection that went dead), until cleared."""
    cond: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""
    server: ThreadingHTTPServer | None = None

    def add(self, packed: Packed) -> None:
        self.manifests[packed.digest] = packed.manifest
        self.blobs[packed.config_digest] = packed.config
        self.blobs[packed.layer_digest] = packed.layer

    def set_targets(self, targets: dict[str, Any], *, known: bool = True) -> None:
        with self.cond:
            self.targets = targets
            self.known = known
            self.version += 1
            self.cond.notify_all()

    def wait_report(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        with self.cond:
            while True:
                for report in reversed(self.reports):
                    if predicate(report):
                        return report
                left = deadline - time.monotonic()
                assert left > 0, f"no matching report; last: {self.reports[-1:]}"
                self.cond.wait(left)


def _handler(dist: FakeDistributor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/v1/targets":
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                deadline = time.monotonic() + float(params.get("wait", "0"))
                with dist.cond:
                    while dist.hang or params.get("version") == str(dist.version):
                        if dist.hang:
                            dist.cond.wait(0.1)
                            continue
                        left = deadline - time.monotonic()
                        if left <= 0:
                            self._send(304, b"")
                            return
                        dist.cond.wait(left)
                    body = {
                        "version": str(dist.version),
                        "pod": {"namespace": "ns", "name": "pod", "uid": "u"},
                        "known": dist.known,
                        "targets": dist.targets if dist.known else {},
                    }
                self._send(200, json.dumps(body).encode())
                return
            kind, _, digest = path.removeprefix("/v1/").partition("/")
            store = dist.manifests if kind == "manifests" else dist.blobs
            data = store.get(digest)
            if data is None:
                self._send(404, b'{"error":{"reason":"NotCached","message":"no"}}')
                return
            if digest in dist.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 1])
            self._send(200, data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            report = json.loads(self.rfile.read(length))
            with dist.cond:
                dist.reports.append(report)
                dist.cond.notify_all()
            self._send(204, b"")

        def _send(self, code: int, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def distributor() -> Iterator[FakeDistributor]:
    dist = FakeDistributor()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(dist))
    server.daemon_threads = True
    dist.server = server
    dist.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield dist
    with dist.cond:
        dist.hang = False
        dist.version += 1  # answer held polls
        dist.cond.notify_all()
    server.shutdown()
    server.server_close()
    thread.join(DEADLINE)


@pytest.fixture
def root() -> Iterator[Path]:
    """A short path (Unix socket addresses are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lba-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class App:
    host: LogicHost
    listener: AgentListener


@pytest.fixture
def app(root: Path) -> Iterator[App]:
    host = LogicHost(name="pricing", interface=INTERFACE, root=root)
    listener = serve(host, path=root / "sdk.sock")
    yield App(host=host, listener=listener)
    listener.close()


MakeAgent = Callable[..., Agent]


@pytest.fixture
def make_agent(root: Path) -> Iterator[MakeAgent]:
    started: list[Agent] = []

    def make(
        *,
        distributor: str = "",
        bundle: dict[str, Any] | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> Agent:
        (root / "token").write_text("token-of-the-pod\n")
        document = {
            "root": str(root),
            "distributor": distributor,
            "tokenFile": str(root / "token"),
            "annotationsFile": str(root / "annotations"),
            "labelsFile": str(root / "labels"),
            "stateDir": str(root / "state"),
            "socket": str(root / "sdk.sock"),
            "listen": "127.0.0.1:0",
            "bundles": {"pricing": bundle or {"source": "registry.invalid/shop/pricing"}},
        }
        kwargs.setdefault("annotations_interval", 0.02)
        kwargs.setdefault("report_interval", 0.2)
        kwargs.setdefault("long_poll_wait", 5.0)
        kwargs.setdefault("durable", False)
        agent = Agent(parse_config(json.dumps(document)), **kwargs)
        if start:
            agent.start()
            started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


class Hooks:
    """A local notify hook (``POST``) and health endpoint (``GET``) with scripted answers.

    ``port`` 0 picks a free one; a fixed port lets a test start the hooks late, on the
    port an agent was configured with while nothing listened there.
    """

    def __init__(self, health: int, *, port: int = 0, notify: int = 200) -> None:
        self.health = health
        self.notify = notify
        self.notified: list[dict[str, Any]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hooks.notified.append(json.loads(body))
                self._send(hooks.notify)

            def do_GET(self) -> None:
                self._send(hooks.health)

            def _send(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unused_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        with contextlib.suppress(Exception):
            threading.Event().wait(0.01)
