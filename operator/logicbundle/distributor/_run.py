"""Run the distributor: embedded in the operator's event loop, or on its own.

:class:`DistributorServer` serves an app on a port and stops it cleanly (every
long-poll is answered at shutdown).  :func:`run_distributor` is the standalone
``logicbundle distributor``: it builds a Kubernetes client, the TokenReview
authenticator, the watcher that computes every pod's targets by the rule
(LogicBundles' published states and the pods' own facts) and the pod-status
writer, and serves, once the first lists are in, until SIGTERM or SIGINT.

What the standalone distributor may do in the API (its RBAC, nothing more):
``list``/``watch`` on ``logicbundles.logicbundle.io`` and on ``pods``,
``patch`` on ``pods/status`` (the readiness condition), ``create`` on
``tokenreviews.authentication.k8s.io``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from kubernetes import client, config

from logicbundle.api import names
from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.distributor._app import (
    DEFAULT_MAX_REPORT_BYTES,
    DEFAULT_MAX_WAIT_SECONDS,
    create_app,
)
from logicbundle.distributor._auth import (
    DEFAULT_TTL,
    CachingAuthenticator,
    TokenReviewAuthenticator,
)
from logicbundle.distributor._blobs import BlobCache
from logicbundle.distributor._metrics import DistributorMetrics
from logicbundle.distributor._reports import DEFAULT_WINDOW_SECONDS, ReportStore
from logicbundle.distributor._rules import RuleTargets
from logicbundle.distributor._status import PodStatusWriter
from logicbundle.distributor._targets import TargetStore
from logicbundle.distributor._traces import SwapSpans
from logicbundle.distributor._upstream import Upstream
from logicbundle.distributor._watcher import KubeSource, RuleWatcher
from logicbundle.errors import LogicBundleError
from logicbundle.telemetry import tracing_from_env

logger = logging.getLogger("logicbundle.distributor")


class DistributorConfigError(LogicBundleError):
    """The distributor's settings cannot work; fix them and start again."""

    reason = "InvalidConfiguration"


@dataclass(frozen=True, kw_only=True)
class DistributorSettings:
    """How a standalone distributor runs (``logicbundle distributor``)."""

    cache_dir: Path
    """The verified blob cache, written by the operator (a shared volume)."""
    host: str | None = None
    """Address to bind; None binds every interface."""
    port: int = 8443
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    insecure_http: bool = False
    """Serve plain HTTP: bearer tokens cross the network in clear. Tests and meshes only."""
    audience: str = names.DISTRIBUTOR_AUDIENCE
    namespaces: tuple[str, ...] = ()
    """Namespaces whose LogicBundles and pods are watched; empty watches the whole cluster."""
    excluded_namespaces: tuple[str, ...] = ()
    """Left out of a cluster-wide watch (server-side), besides the system namespaces."""
    kubeconfig: Path | None = None
    """None: in-cluster configuration when in a pod, else the default kubeconfig."""
    write_pod_status: bool = True
    """Write the pods' readiness condition (``logicbundle.io/bundles-ready``) when it changes."""
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES
    auth_cache_seconds: float = DEFAULT_TTL
    auth_negative_cache_seconds: float = 5.0
    report_window_seconds: float = DEFAULT_WINDOW_SECONDS
    upstream_url: str | None = None
    """The operator's distributor, where this replica gets the bytes of published digests."""
    upstream_ca_file: Path | None = None
    """The CA that signed the operator's distributor certificate (None: system CAs)."""
    upstream_server_name: str | None = None
    """The name the operator's certificate carries, when it is reached by another one."""
    token_file: Path = Path("/var/run/secrets/logicbundle/token")
    """This replica's own pod-bound token (audience: the distributor's), shown upstream."""
    operator_identities: tuple[tuple[str, str], ...] = ()
    """``(namespace, service account)`` allowed to read summaries: the operator's."""
    reader_identities: tuple[tuple[str, str], ...] = ()
    """``(namespace, service account)`` allowed to read each pod's report (``status --pods``)."""

    @property
    def served(self) -> ServedNamespaces:
        """The namespaces served (:mod:`logicbundle.api.namespaces`)."""
        return ServedNamespaces.of(named=self.namespaces, exclude=self.excluded_namespaces)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server TLS context, or None for plain HTTP (only with ``insecure_http``)."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            if self.insecure_http:
                return None
            raise DistributorConfigError(
                "the distributor needs a TLS certificate and key",
                hint="Pass --tls-cert-file and --tls-key-file (or --insecure-http for tests).",
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context


class DistributorServer:
    """Serves a distributor app until :meth:`stop`; usable as an async context manager."""

    def __init__(
        self,
        app: web.Application,
        *,
        host: str | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        # handler_cancellation: a long-poll whose agent went away stops waiting at once.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=shutdown_timeout
        )
        self._host = host
        self._port = port
        self._ssl = ssl_context

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._host,
            self._port,
            ssl_context=self._ssl,
        )
        await site.start()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        address = self._runner.addresses[0]
        return int(address[1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> DistributorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def kubernetes_client(kubeconfig: Path | None) -> Any:
    """A kubernetes ``ApiClient``: from ``kubeconfig``, in-cluster, or the default kubeconfig."""
    if kubeconfig is not None:
        # The config loaders are untyped; they return an ApiClient.
        return config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    return config.new_client_from_config()  # type: ignore[no-untyped-call]


async def serve_distributor(
    settings: DistributorSettings,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run a standalone distributor until ``stop`` is set; ``on_ready`` gets the bound port.

    It listens only once the LogicBundles, then the pods, have been listed (see
    :func:`serve_when_synced`).
    """
    ssl_context = settings.ssl_context()
    api_client = kubernetes_client(settings.kubeconfig)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="distributor-k8s")
    loop = asyncio.get_running_loop()
    targets = TargetStore()
    reports = ReportStore(window_seconds=settings.report_window_seconds)
    rules = RuleTargets(targets)
    blobs = BlobCache(settings.cache_dir)
    upstream = None
    if settings.upstream_url:
        upstream_ssl = None
        if settings.upstream_url.startswith("https://"):
            upstream_ssl = ssl.create_default_context(
                cafile=str(settings.upstream_ca_file) if settings.upstream_ca_file else None
            )
        upstream = Upstream(
            url=settings.upstream_url,
            token_file=settings.token_file,
            blobs=blobs,
            ssl_context=upstream_ssl,
            server_hostname=settings.upstream_server_name,
        )
    watcher = RuleWatcher(
        source=KubeSource(api_client, field_selector=settings.served.field_selector),
        rules=rules,
        loop=loop,
        namespaces=settings.namespaces,
        reports=reports,
    )
    authenticator = CachingAuthenticator(
        TokenReviewAuthenticator(
            api_client=api_client, audience=settings.audience, executor=executor
        ),
        ttl=settings.auth_cache_seconds,
        negative_ttl=settings.auth_negative_cache_seconds,
        still_there=rules.knows,
    )
    writer = (
        PodStatusWriter(api_client=api_client, executor=executor, current=watcher.current_readiness)
        if settings.write_pod_status
        else None
    )
    tracing = tracing_from_env("logicbundle-distributor")
    app = create_app(
        targets=targets,
        blobs=blobs,
        reports=reports,
        authenticator=authenticator,
        audience=settings.audience,
        metrics=DistributorMetrics(),
        on_activity=writer,
        max_wait_seconds=settings.max_wait_seconds,
        max_report_bytes=settings.max_report_bytes,
        assigns=rules.assigns,
        peers=frozenset(settings.operator_identities),
        viewers=frozenset(settings.reader_identities),
        upstream=upstream,
        swaps=SwapSpans(tracing),
    )
    server = DistributorServer(app, host=settings.host, port=settings.port, ssl_context=ssl_context)
    try:
        await serve_when_synced(server, watcher=watcher, stop=stop, on_ready=on_ready)
    finally:
        tracing.shutdown()
        if upstream is not None:
            await upstream.close()
        executor.shutdown(wait=True, cancel_futures=True)
        api_client.close()


async def serve_when_synced(
    server: DistributorServer,
    *,
    watcher: RuleWatcher,
    stop: asyncio.Event,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Start ``watcher``; serve with ``server`` once it has synced, until ``stop`` is set.

    Not listening before: a replica that has not loaded the bundles and the
    pods would answer every agent "unknown" (its readiness probe fails instead,
    so the Service routes the agents to replicas that know).  Stops the watcher
    and the server on the way out.
    """
    watcher.start()
    try:
        if not watcher.synced:
            logger.info("listing LogicBundles, then pods, before serving")
            if not await _first_of(stop, watcher):
                return
        await server.start()
        try:
            logger.info("distributor serving on port %d", server.port)
            if on_ready is not None:
                on_ready(server.port)
            await stop.wait()
        finally:
            await server.stop()
    finally:
        await asyncio.to_thread(watcher.stop)


async def _first_of(stop: asyncio.Event, watcher: RuleWatcher) -> bool:
    """Wait until ``watcher`` synced (True) or ``stop`` is set (False)."""
    synced = asyncio.ensure_future(watcher.wait_synced())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (synced, stopped):
            waiter.cancel()
        await asyncio.gather(synced, stopped, return_exceptions=True)
    return watcher.synced and not stop.is_set()


def run_distributor(settings: DistributorSettings) -> int:
    """``logicbundle distributor``: serve until SIGTERM or SIGINT; the process exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await serve_distributor(settings, stop=stop)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

    try:
        asyncio.run(main())
    except LogicBundleError as exc:
        logger.error("%s", exc.diagnostics())
        return 2
    return 0
