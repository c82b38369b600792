"""Version leaks the agents report: one ``VersionLeak`` event per digest, and a gauge.

The SDK in an application finds a retired version still alive after its grace
period; the agent reports it, each distributor replica sums the reports per
digest (:class:`~logicbundle.distributor.Leak`: how many pods, which kinds of
referrer) and the leader reads the sum every reconcile.  A leak lasts (it is
reported again every 10 s until the application lets go, usually until the pod
restarts), so the event is posted once per leaked digest, not per reconcile:
the bundle's memory keeps the set of ``(LogicBundle uid, digest)`` already told.
That set lives in this process only (like every memory, :mod:`._memory`): an
operator restarted, or a new leader, tells each lasting leak once more, and the
API server folds a repeated event into the first one's count.  The gauge
``logicbundle_retired_versions_alive`` (retired versions still alive, summed
over the bundle's pods) is what ``LogicBundleVersionLeak`` fires on when the
applications' own pods are not scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from logicbundle.controller._memory import BundleMemory
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.distributor import BundleSummary

REASON_VERSION_LEAK: Final = "VersionLeak"
MAX_TOLD: Final = 256
"""Leaked digests remembered per LogicBundle; beyond it the oldest is forgotten."""

PostEvent = Callable[[Mapping[str, Any], str, str, str], None]


def report_leaks(
    *,
    body: Mapping[str, Any],
    memory: BundleMemory,
    summary: BundleSummary | None,
    metrics: OperatorMetrics,
    post_event: PostEvent,
) -> None:
    """Post a ``VersionLeak`` Warning for each leaked digest not told yet; set the gauge.

    ``summary`` None (a distributor replica did not answer): nothing is told
    and the gauge keeps its value (a partial view would under-count).
    """
    if summary is None:
        return
    meta = body["metadata"]
    metrics.observe_leaks(
        namespace=meta["namespace"],
        name=meta["name"],
        alive=sum(leak.pods for leak in summary.leaks.values()),
    )
    uid = str(meta.get("uid") or "")
    for digest, leak in sorted(summary.leaks.items()):
        key = (uid, digest)
        if key in memory.told_leaks:
            continue
        memory.told_leaks[key] = None
        while len(memory.told_leaks) > MAX_TOLD:
            del memory.told_leaks[next(iter(memory.told_leaks))]
        kinds = ", ".join(leak.kinds) or "unknown"
        held = f" ({leak.detail})" if leak.detail else ""
        post_event(
            body,
            "Warning",
            REASON_VERSION_LEAK,
            f"retired version {digest} is still alive in {leak.pods} pod(s) after its grace "
            f"period, held by: {kinds}{held}; something in the application keeps a reference "
            "to its code (a registry, a cache, a thread, a closure), so each swap grows its "
            "memory (the SDK's warning log in the pod names the referrer)",
        )
