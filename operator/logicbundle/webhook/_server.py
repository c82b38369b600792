"""The HTTPS endpoint the API server calls: AdmissionReview v1 in, JSONPatch out.

aiohttp, not kopf's admission machinery: kopf's webhook server is built
around kopf handlers and its own certificate handling, while this endpoint
needs a certificate that is shared through a Secret and swapped without a
restart, a hard deadline below the configuration's ``timeoutSeconds``, and a
pure mutation function called with data listed from the cluster.  aiohttp is
already in the operator (kopf depends on it), and the distributor is served
the same way.

Whatever goes wrong inside (a listing fails, the deadline passes, a bug),
the answer is ``allowed: true`` with no patch and a warning: the pod is
created without the agent, exactly what ``failurePolicy: Ignore`` does when
the webhook is unreachable, and the controller reports such pods
(:func:`pods_without_agent`).  See ``docs/webhook.md``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

from aiohttp import web
from pydantic import ValidationError

from logicbundle.api import LogicBundle
from logicbundle.webhook._certs import CertificateBundle
from logicbundle.webhook._config import WEBHOOK_PATH
from logicbundle.webhook._mutate import Mutation, mutate_pod
from logicbundle.webhook._settings import InjectionSettings

logger = logging.getLogger("logicbundle.webhook")

DEFAULT_DEADLINE_SECONDS: Final = 4.0
"""Below the configuration's 5 s timeout: we answer (allowed, no patch) before it passes."""

MAX_REVIEW_BYTES: Final = 3 * 1024 * 1024
"""An AdmissionReview of a pod is far smaller; anything larger is refused with 413."""

_SETTINGS_KEY: Final = web.AppKey("settings", InjectionSettings)

Clock = Callable[[], int]
"""The current instant in milliseconds since the epoch (tests pass a fixed one)."""


def epoch_ms() -> int:
    """The wall clock in milliseconds since the epoch: the admission instant a pod records."""
    return time.time_ns() // 1_000_000


class ClusterView(Protocol):
    """What the webhook reads from the cluster: raw bodies, newest the view has.

    The operator may back it by kopf indexes or informers; the plain
    implementation (:class:`KubernetesClusterView`) lists on every call.
    """

    async def logic_bundles(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        """The ``LogicBundle`` objects of ``namespace``."""


_VIEW_KEY: Final = web.AppKey("view", ClusterView)
_DEADLINE_KEY: Final = web.AppKey("deadline", float)
_CLOCK_KEY: Final[web.AppKey[Clock]] = web.AppKey("clock")


def _parse_bundles(raw: Sequence[Mapping[str, Any]]) -> list[LogicBundle]:
    bundles = []
    for body in raw:
        try:
            bundles.append(LogicBundle.model_validate(body))
        except ValidationError as error:
            name = (body.get("metadata") or {}).get("name")
            logger.warning("LogicBundle %s is invalid and is ignored: %s", name, error)
    return bundles


async def decide(
    *,
    request: Mapping[str, Any],
    view: ClusterView,
    settings: InjectionSettings,
    clock: Clock = epoch_ms,
) -> Mutation:
    """The mutation for one AdmissionReview ``request`` (lists what it needs from ``view``).

    ``clock`` gives the admission instant the pod records (read once the
    bundles are listed, so it is never earlier than what the listing saw).
    """
    if request.get("operation") != "CREATE" or (request.get("kind") or {}).get("kind") != "Pod":
        return Mutation()
    pod = request.get("object")
    if not isinstance(pod, dict):
        raise ValueError("the admission request carries no pod")
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace")
    if not namespace:
        raise ValueError("the admission request names no namespace")
    bundles = _parse_bundles(await view.logic_bundles(namespace))
    return mutate_pod(
        pod=pod,
        namespace=namespace,
        request_uid=str(request.get("uid")),
        bundles=bundles,
        admitted_ms=clock(),
        settings=settings,
    )


def review_response(uid: str, mutation: Mutation) -> dict[str, Any]:
    """The AdmissionReview v1 answer: always allowed, with the patch when there is one."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if mutation.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(mutation.patch)).encode()).decode()
    if mutation.warnings:
        response["warnings"] = list(mutation.warnings)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


async def _mutate(request: web.Request) -> web.Response:
    try:
        review = await request.json()
        admission = review["request"]
        uid = str(admission["uid"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="expected an admission.k8s.io/v1 AdmissionReview") from None
    app = request.app
    try:
        async with asyncio.timeout(app[_DEADLINE_KEY]):
            mutation = await decide(
                request=admission,
                view=app[_VIEW_KEY],
                settings=app[_SETTINGS_KEY],
                clock=app[_CLOCK_KEY],
            )
    except Exception as error:
        meta = (admission.get("object") or {}).get("metadata") or {}
        pod = meta.get("name") or meta.get("generateName") or "?"
        logger.exception(
            "admission of pod %s/%s failed; admitted without the agent",
            admission.get("namespace"),
            pod,
        )
        reason = "timed out" if isinstance(error, TimeoutError) else "an internal error"
        mutation = Mutation(
            warnings=(
                f"logicbundle: the reload agent was not injected ({reason}); the operator reports "
                "this pod and it needs re-creating to receive its logic bundles",
            )
        )
    else:
        if mutation.bundles:
            logger.info(
                "injected the agent into a pod of %s for %s",
                admission.get("namespace"),
                ", ".join(mutation.bundles),
            )
    return web.json_response(review_response(uid, mutation))


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app(
    *,
    view: ClusterView,
    settings: InjectionSettings,
    deadline: float = DEFAULT_DEADLINE_SECONDS,
    clock: Clock = epoch_ms,
) -> web.Application:
    """The webhook's aiohttp application: ``POST /mutate-pods`` and ``GET /healthz``."""
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app[_VIEW_KEY] = view
    app[_SETTINGS_KEY] = settings
    app[_DEADLINE_KEY] = deadline
    app[_CLOCK_KEY] = clock
    app.router.add_post(WEBHOOK_PATH, _mutate)
    app.router.add_get("/healthz", _healthz)
    return app


class ServingTls:
    """The server's TLS context, whose certificate is replaced in place.

    ``SSLContext.load_cert_chain`` on the live context swaps the certificate
    for every later handshake; connections already open keep theirs.  The
    standard library loads keys only from files, so the PEMs go through a
    private temporary directory and are deleted at once.
    """

    def __init__(self, bundle: CertificateBundle | None = None) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.serial: int | None = None
        if bundle is not None:
            self.load(bundle)

    def load(self, bundle: CertificateBundle) -> None:
        """Serve ``bundle``'s certificate from the next handshake on."""
        with tempfile.TemporaryDirectory(prefix="logicbundle-tls-") as directory:
            cert = Path(directory) / "tls.crt"
            key = Path(directory) / "tls.key"
            cert.write_bytes(bundle.cert)
            key.touch(mode=0o600)
            key.write_bytes(bundle.key)
            self.context.load_cert_chain(cert, key)
        self.serial = bundle.certificate.serial_number


class WebhookServer:
    """Serves the webhook app over TLS until :meth:`stop`; an async context manager."""

    def __init__(
        self,
        app: web.Application,
        *,
        tls: ServingTls,
        host: str | None = None,
        port: int = 0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        self._tls = tls
        self._host = host
        self._port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=self._tls.context)
        await site.start()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, and close every connection.

        aiohttp's cleanup only *starts* closing a TLS connection: the
        transport sends close_notify and waits (up to asyncio's SSL shutdown
        timeout) for the peer's -- the API server keeps idle connections
        open -- so the socket would outlive ``stop`` and, with the event loop
        closed soon after, be left to the garbage collector.  What is still
        open after the graceful cleanup is aborted.
        """
        for site in list(self._runner.sites):
            await site.stop()  # nothing new arrives from here on
        server = self._runner.server
        transports = [] if server is None else [c.transport for c in server.connections]
        await self._runner.cleanup()
        for transport in transports:
            if transport is not None:
                transport.abort()

    async def __aenter__(self) -> WebhookServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
