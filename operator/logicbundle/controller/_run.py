"""Start kopf with our handlers and settings; return an exit code when it stops."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import kopf
from kopf._core.engines.activities import ActivityError  # kopf does not export it
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from logicbundle.api import names
from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.controller._handlers import ControllerSettings, Memo, register
from logicbundle.controller._leader import LeaderSettings, OwnPod
from logicbundle.controller._summaries import ReplicaSettings
from logicbundle.controller._webhook import WebhookSettings
from logicbundle.errors import LogicBundleError

logger = logging.getLogger("logicbundle.operator")

DEFAULT_STARTUP_TIMEOUT: Final = 60.0
"""Seconds the operator tries to reach the API server at start, by default."""


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """How the operator process runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""

    served: ServedNamespaces = field(default_factory=ServedNamespaces)
    """Whose LogicBundles are reconciled (:mod:`logicbundle.api.namespaces`); default: all."""

    liveness_endpoint: str | None = None
    """kopf's liveness probe URL, e.g. ``http://127.0.0.1:8080/healthz``."""

    peering_name: str | None = None
    """The KopfPeering object replicas coordinate through; None acts alone (standalone)."""

    priority: int | None = None
    """This replica's peering priority; the highest live one acts, the others stand aside.

    kopf does not elect among equal priorities (they all act, with a warning), so by
    default each replica takes minus its start time in microseconds: the oldest replica
    keeps acting, newcomers wait, and the next oldest takes over when it dies.
    """

    pod_name: str | None = None
    pod_namespace: str | None = None
    """The pod this replica runs in (the chart passes ``POD_NAME``/``POD_NAMESPACE``).

    When both are known, the replica is kopf's peer under the identity
    ``<namespace>/<name>`` and labels that pod ``logicbundle.io/leader=true`` while
    it acts, for the distributor Service. None (local runs): no pod is labelled.
    """

    cache_dir: Path | None = None
    """The verified bundle cache the distributor serves; None: a temporary directory."""

    distributor_host: str | None = "127.0.0.1"
    distributor_port: int | None = None
    distributor_tls: tuple[Path, Path] | None = None
    distributor_insecure_http: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    webhook: WebhookSettings | None = None
    replicas: ReplicaSettings | None = None
    """Distributor replicas serve the agents; None: only this process's distributor."""

    startup_timeout: float | None = DEFAULT_STARTUP_TIMEOUT
    """Seconds to keep trying to reach the API server at start before giving up (exit 1).

    kopf alone would retry its login forever, a traceback a minute; a process that
    exits lets the kubelet's back-off (and ``kubectl get pods``) say what is wrong.
    None: no check (tests that start kopf against a fake).
    """


class ApiServerUnreachableError(LogicBundleError):
    """No cluster to talk to: no kubeconfig, or the API server did not answer in time."""

    reason = "ClusterUnreachable"


_PROBE_TIMEOUT: Final = 5.0
"""Seconds one probe of the API server may take (connect and read)."""


def _api_client() -> Any:
    """A client configured the way kopf's ``login_via_client`` is: in-cluster, else kubeconfig."""
    config: Any = kube_config  # partly typed: its loaders are untyped
    configuration = kube_client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration, persist_config=False)
        except config.ConfigException as exc:
            raise ApiServerUnreachableError(
                f"no cluster to talk to: not in a cluster, and no usable kubeconfig ({exc})",
                hint="Set $KUBECONFIG (or write ~/.kube/config), or run the operator in a pod.",
            ) from None
    configuration.retries = False  # the loop below retries, with a deadline
    return kube_client.ApiClient(configuration)


def _probe_failure(exc: BaseException) -> str:
    """Why a probe failed, in a few words and without anything from the credentials."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    for marker, said in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
        ("Name or service not known", "unknown host name"),
    ):
        if marker in text:
            return said
    return type(reason).__name__


def wait_for_api_server(
    timeout: float,
    *,
    api_client: Any = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once the API server answers ``GET /version``; raise after ``timeout`` seconds.

    Retries with a doubling delay (0.5 s up to 8 s). An answer of 401 is final
    (retrying with the same credentials cannot help); any other HTTP answer
    means the server is there.
    """
    api = api_client or _api_client()
    try:
        _wait_for_api_server(api, timeout, clock=clock, sleep=sleep)
    finally:
        if api_client is None:
            api.close()  # its pooled connection: not left for the garbage collector


def _wait_for_api_server(
    api: Any, timeout: float, *, clock: Callable[[], float], sleep: Callable[[float], None]
) -> None:
    host = str(api.configuration.host).rpartition("@")[2]
    deadline = clock() + timeout
    delay, attempts = 0.5, 0
    while True:
        attempts += 1
        try:
            # Raw (not parsed into a model): any 2xx answer means the server is there.
            answer: Any = kube_client.VersionApi(api).get_code(
                _preload_content=False, _request_timeout=(_PROBE_TIMEOUT, _PROBE_TIMEOUT)
            )
            answer.release_conn()
            return
        except ApiException as exc:
            if exc.status == 401:
                raise ApiServerUnreachableError(
                    f"the API server at {host} refused the credentials (401)",
                    hint="Check the kubeconfig's user, or the pod's service account token.",
                ) from None
            if exc.status is not None and exc.status < 500:
                return
            failure = f"HTTP {exc.status}"
        except (HTTPError, OSError) as exc:  # refused, timed out, TLS: all mean "not yet"
            failure = _probe_failure(exc)
        left = deadline - clock()
        if left <= 0:
            raise ApiServerUnreachableError(
                f"cannot reach the API server at {host}: {failure} "
                f"({attempts} attempts over {timeout:g}s)",
                hint="Check that the cluster is up and that $KUBECONFIG names it; "
                "--startup-timeout sets how long to try.",
            )
        logger.warning("the API server at %s: %s; trying again", host, failure)
        sleep(min(delay, left))
        delay = min(delay * 2, 8.0)


def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Only explicit events are posted (one per transition); kopf's own log lines are not.
    settings.posting.loggers = False
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.peering.clusterwide = True
    # One line per handled event would drown the operator's own log.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def run_operator(config: OperatorSettings) -> int:
    """Run kopf until it is told to stop (SIGTERM/SIGINT); 0 on a clean stop.

    Raises :class:`ApiServerUnreachableError` when there is no cluster to talk to
    within ``config.startup_timeout``.
    """
    if config.startup_timeout is not None:
        wait_for_api_server(config.startup_timeout)
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(_configure)
    # A registry of our own has none of kopf's default login handlers: name ours.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    cache_dir = config.cache_dir or Path(tempfile.mkdtemp(prefix="logicbundle-cache-"))
    register(registry)
    peering = config.peering_name
    priority = config.priority if config.priority is not None else -(time.time_ns() // 1000)
    leader = None
    if config.pod_name and config.pod_namespace:
        pod = OwnPod(namespace=config.pod_namespace, name=config.pod_name)
        leader = LeaderSettings(pod=pod, peering_name=peering, priority=priority)
    memo = Memo(
        settings=ControllerSettings(
            cache_dir=cache_dir,
            distributor_host=config.distributor_host,
            distributor_port=config.distributor_port,
            distributor_tls=config.distributor_tls,
            distributor_insecure_http=config.distributor_insecure_http,
            metrics_host=config.metrics_host,
            metrics_port=config.metrics_port,
            webhook=config.webhook,
            leader=leader,
            namespaces=config.namespaces,
            served=config.served,
            replicas=config.replicas,
        )
    )
    logger.info(
        "starting the operator (%s, %s, %s)",
        "namespaces " + ", ".join(config.namespaces)
        if config.namespaces
        else "cluster-wide but " + ", ".join(config.served.excluded or ("nothing",)),
        f"peering {peering} as {leader.identity if leader else 'an unnamed peer'}"
        if peering
        else "standalone",
        f"leader label on pod {leader.identity}" if leader else "no pod to label",
    )
    try:
        _run_kopf(config, registry, memo, leader=leader, peering=peering, priority=priority)
    except ActivityError as exc:
        # The start-up gave up after its retries (see _handlers.start): say why, in one line.
        causes = [o.exception for o in exc.outcomes.values() if o.exception is not None]
        # kopf wraps the last one ("Activity 'start' failed ... retries: start-up failed: ...").
        said = (str(c).rpartition("start-up failed: ")[2] for c in causes)
        why = "; ".join(dict.fromkeys(said)) or "a start-up handler failed"
        raise OperatorStartError(f"the operator could not start: {why}") from None
    logger.info("the operator stopped")
    return 0


class OperatorStartError(LogicBundleError):
    """The start-up handlers kept failing until kopf gave up on them."""

    reason = "StartFailed"


def _run_kopf(
    config: OperatorSettings,
    registry: kopf.OperatorRegistry,
    memo: Memo,
    *,
    leader: LeaderSettings | None,
    peering: str | None,
    priority: int,
) -> None:
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=peering is None,
            # The labeler decides leadership from kopf's record of this identity;
            # None lets kopf make one up (no pod to label then). Identity is a
            # NewType kopf does not export.
            identity=cast(Any, leader.identity if leader else None),
            peering_name=peering,
            priority=priority if peering else None,
            liveness_endpoint=config.liveness_endpoint,
            memo=memo,
        )
    )
