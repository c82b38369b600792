"""The version health series between reconciles: a bundle at rest is re-read every half minute.

A reconcile refreshes the ``logicbundle_version_*`` series (:mod:`._metrics`)
from the distributors' summary: every 2 s while a rollout runs, but a bundle
at rest sleeps until its source interval (an hour, say) unless something wakes
it, and a dashboard would show its stable version's memory and threads as they
were then.  So while a bundle's daemon sleeps longer than
:data:`HEALTH_REFRESH`, it calls :func:`refresh_health` every
:data:`HEALTH_REFRESH`: one summary read (in memory, or one request per
distributor replica) and no decision, no write, no event.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logicbundle.controller._reconcile import Runtime

logger = logging.getLogger("logicbundle.controller")

HEALTH_REFRESH = 30.0
"""Seconds between refreshes of a resting bundle's version health series."""


async def refresh_health(rt: Runtime, *, namespace: str, name: str) -> None:
    """``name``'s version health series from a fresh summary, with the digests last told.

    Only for a bundle at rest (no candidate told): in a rollout the reconciles
    refresh them over the analysis window, and a bundle never reconciled has
    nothing to refresh.  A summary that fails is logged; the next refresh or
    reconcile tries again.
    """
    told = rt.metrics.versions_told(namespace=namespace, name=name)
    if told is None or told[1] is not None:
        return
    try:
        summary = await rt.agents.summaries.summary(namespace, name, since=None)
    except Exception:
        logger.exception("%s/%s: the version health refresh failed", namespace, name)
        return
    rt.metrics.observe_versions(
        namespace=namespace,
        name=name,
        stable=told[0],
        candidate=None,
        versions=summary.versions if summary is not None else None,
    )
