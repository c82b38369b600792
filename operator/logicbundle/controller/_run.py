"""Start kopf with our settings and return an exit code when it stops."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import kopf

logger = logging.getLogger("logicbundle.operator")


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """How the operator process runs."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""

    liveness_endpoint: str | None = None
    """kopf's liveness probe URL, e.g. ``http://127.0.0.1:8080/healthz``."""

    standalone: bool = True
    """Act without peering; two standalone replicas would both act."""

    peering_name: str | None = None
    """The KopfPeering object replicas coordinate through (wins over ``standalone``)."""


def _configure(settings: kopf.OperatorSettings, **_: object) -> None:
    # kopf posts its own events for handler failures; we write ours in one place.
    settings.posting.enabled = False
    settings.persistence.finalizer = "logicbundle.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="logicbundle.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="logicbundle.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300


def run_operator(config: OperatorSettings) -> int:
    """Run kopf until it is told to stop (SIGTERM/SIGINT); 0 on a clean stop."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(_configure)
    # A registry of our own has none of kopf's default login handlers: name ours.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    peering = config.peering_name
    logger.info(
        "starting the operator (%s, %s)",
        "namespaces " + ", ".join(config.namespaces) if config.namespaces else "cluster-wide",
        f"peering {peering}" if peering else "standalone",
    )
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=not config.namespaces,
            namespaces=list(config.namespaces),
            standalone=peering is None,
            peering_name=peering,
            liveness_endpoint=config.liveness_endpoint,
        )
    )
    logger.info("the operator stopped")
    return 0
