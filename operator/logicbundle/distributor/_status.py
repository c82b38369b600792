"""Record on the pod what its agent reported active: an annotation and a pod condition.

The agent never writes to the API; the operator does it for it, here.  Each
``logicbundle.io/active.<bundle>`` annotation holds the digest the agent
reports active, and the pod condition that the webhook lists as a readiness
gate turns ``True`` once every assigned bundle is active, so the pod only
receives traffic after its first activation.  The condition goes through the
``pods/status`` subresource (the only way to set a readiness-gate condition).

Both patches carry the pod's uid, which the API server treats as a
precondition: a pod recreated under the same name is never given another
pod's state.  Kept apart from the HTTP service and injected as its activity
callback, so tests and other deployments can swap it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes import client

from logicbundle.api import names
from logicbundle.distributor._reports import PodActivity

REASON_ACTIVE: Final = "BundlesActive"
REASON_PENDING: Final = "BundlesPending"


def active_annotations(activity: PodActivity) -> dict[str, str | None]:
    """The annotation patch (None deletes) for a pod's reported bundles."""
    return {names.active_annotation(b): digest for b, digest in sorted(activity.active.items())}


def ready_condition(activity: PodActivity, *, now: datetime) -> dict[str, str] | None:
    """The pod condition to write, or None when readiness is unknown."""
    if activity.ready is None:
        return None
    condition = {
        "type": names.POD_CONDITION_READY,
        "status": "True" if activity.ready else "False",
        "reason": REASON_ACTIVE if activity.ready else REASON_PENDING,
        "message": activity.message,
    }
    if activity.ready_changed:
        condition["lastTransitionTime"] = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return condition


class PodStatusWriter:
    """Patches a pod's active annotations and readiness condition (sync client, in a thread).

    Needs ``patch`` on ``pods`` and on ``pods/status``.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        executor: Executor | None = None,
        request_timeout: float = 10.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._executor = executor
        self._timeout = request_timeout
        self._now = now

    async def __call__(self, activity: PodActivity) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.write, activity)

    def write(self, activity: PodActivity) -> None:
        """Blocking: patch the annotations, then the condition when readiness is known."""
        annotations = active_annotations(activity)
        if annotations:
            self._core.patch_namespaced_pod(
                activity.name,
                activity.namespace,
                {"metadata": {"uid": activity.uid, "annotations": annotations}},
                _content_type="application/merge-patch+json",
                _request_timeout=self._timeout,
            )
        condition = ready_condition(activity, now=self._now())
        if condition is not None:
            self._core.patch_namespaced_pod_status(
                activity.name,
                activity.namespace,
                {"metadata": {"uid": activity.uid}, "status": {"conditions": [condition]}},
                _content_type="application/strategic-merge-patch+json",
                _request_timeout=self._timeout,
            )
