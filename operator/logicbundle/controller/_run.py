"""Start kopf with our handlers and settings; return an exit code when it stops."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf

from logicbundle.api import names
from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.controller._handlers import ControllerSettings, Memo, register
from logicbundle.controller._leader import LeaderSettings, OwnPod
from logicbundle.controller._summaries import ReplicaSettings
from logicbundle.controller._webhook import WebhookSettings

logger = logging.getLogger("logicbundle.operator")


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
    """Run kopf until it is told to stop (SIGTERM/SIGINT); 0 on a clean stop."""
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
    logger.info("the operator stopped")
    return 0
