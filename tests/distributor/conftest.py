"""A distributor app on aiohttp's test server, with a fake authenticator and real stores.

pytest-aiohttp is not a dependency: each test runs its scenario with
``asyncio.run`` inside :func:`serve`, which starts the app on a test server and
tears it down, failing the test if it leaves asyncio tasks behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from logicbundle.artifact import oci_manifest
from logicbundle.bundle import pack_directory_to
from logicbundle.distributor import (
    DISTRIBUTOR_AUDIENCE,
    AuthenticationFailedError,
    BlobCache,
    DistributorMetrics,
    PodActivity,
    PodIdentity,
    ReportStore,
    TargetStore,
    create_app,
)
from logicbundle.oci import sha256_digest

T = TypeVar("T")

POD_A = PodIdentity(namespace="shop", name="web-a", uid="uid-a", service_account="web")
POD_B = PodIdentity(namespace="shop", name="web-b", uid="uid-b", service_account="web")
READER = PodIdentity(namespace="lb-system", name="", uid="", service_account="status-reader")
"""A ServiceAccount token bound to no pod (``logicbundle status --pods``)."""
TOKENS = {"token-a": POD_A, "token-b": POD_B, "token-reader": READER}
AUTH_A = {"Authorization": "Bearer token-a"}
AUTH_B = {"Authorization": "Bearer token-b"}


class FakeAuthenticator:
    """Knows two tokens; counts calls so caching can be observed."""

    def __init__(self) -> None:
        self.calls = 0

    async def authenticate(self, token: str) -> PodIdentity:
        self.calls += 1
        identity = TOKENS.get(token)
        if identity is None:
            raise AuthenticationFailedError("the token was refused")
        return identity


@dataclass
class Bundle:
    digest: str
    manifest: bytes
    config: bytes
    layer: Path
    layer_digest: str
    config_digest: str


def make_bundle(tmp_path: Path, *, version: str, payload: bytes = b"") -> Bundle:
    """A real packed bundle: OCI manifest bytes, config blob and layer file."""
    src = tmp_path / f"src-{version}"
    src.mkdir()
    (src / "rules.py").write_text(f"VERSION = {version!r}\n")
    (src / "data.bin").write_bytes(payload)
    layer = tmp_path / f"layer-{version}.tar.gz"
    with layer.open("wb") as out:
        result = pack_directory_to(
            src,
            out,
            name="pricing",
            version=version,
            interface={"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}},
            entrypoint="rules:Rules",
        )
    manifest = oci_manifest(result)
    return Bundle(
        digest=sha256_digest(manifest),
        manifest=manifest,
        config=result.config,
        layer=layer,
        layer_digest=result.layer_digest,
        config_digest=sha256_digest(result.config),
    )


@dataclass
class Harness:
    cache_dir: Path
    targets: TargetStore = field(default_factory=TargetStore)
    reports: ReportStore = field(default_factory=ReportStore)
    metrics: DistributorMetrics = field(default_factory=DistributorMetrics)
    auth: FakeAuthenticator = field(default_factory=FakeAuthenticator)
    activities: list[PodActivity] = field(default_factory=list)
    fail_activity: bool = False
    max_wait_seconds: float = 30.0
    max_report_bytes: int = 64 * 1024
    peers: frozenset[tuple[str, str]] = frozenset()
    viewers: frozenset[tuple[str, str]] = frozenset()

    def __post_init__(self) -> None:
        self.blobs = BlobCache(self.cache_dir)

    async def record_activity(self, activity: PodActivity) -> None:
        if self.fail_activity:
            raise RuntimeError("the API server is down")
        self.activities.append(activity)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[TestClient[Any, Any]]:
        app = create_app(
            targets=self.targets,
            blobs=self.blobs,
            reports=self.reports,
            authenticator=self.auth,
            audience=DISTRIBUTOR_AUDIENCE,
            metrics=self.metrics,
            on_activity=self.record_activity,
            max_wait_seconds=self.max_wait_seconds,
            max_report_bytes=self.max_report_bytes,
            peers=self.peers,
            viewers=self.viewers,
        )
        # limit=0: one connection per concurrent long-poll (aiohttp's default is 100).
        connector = aiohttp.TCPConnector(limit=0)
        async with TestClient(TestServer(app), connector=connector) as client:
            yield client

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(cache_dir=tmp_path / "cache")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async scenario; fail when it leaves tasks running."""

    async def checked() -> T:
        result = await scenario()
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leaked, f"leaked tasks: {leaked}"
        return result

    return asyncio.run(checked())


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds: bounded by iterations, not by time.

    ``asyncio.sleep(0)`` is a bare yield to the event loop (no timer), the
    documented way to let other tasks run.
    """
    for _ in range(100_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")
