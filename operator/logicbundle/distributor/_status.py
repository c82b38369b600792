"""Record on the pod that its bundles are active: the readiness-gate condition, on change only.

The agent never writes to the API; the distributor does it for it, here.  The
pod condition that the webhook lists as a readiness gate turns ``True`` once
every assigned bundle is active, so the pod only receives traffic after its
first activation.  It goes through the ``pods/status`` subresource (the only
way to set a readiness-gate condition).

This is the one per-pod write left: a pod's first activation and a change of
its readiness.  What each pod runs is not written anywhere (the agents report
it to the distributor, which sums it per bundle and digest), so a rollout step
writes nothing per pod.  ``current`` (optional) tells the writer what the pod
already shows, from a watch cache, so a restarted distributor does not
rewrite a condition every pod already has.

The patch carries the pod's uid, which the API server treats as a
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


CurrentReadiness = Callable[[str, str, str], bool | None]
"""``(namespace, name, uid)`` -> the pod's readiness condition now (None: unknown)."""


class PodStatusWriter:
    """Patches a pod's readiness condition when it changes (sync client, in a thread).

    Needs ``patch`` on ``pods/status``.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        executor: Executor | None = None,
        request_timeout: float = 10.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        current: CurrentReadiness | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._executor = executor
        self._timeout = request_timeout
        self._now = now
        self._current = current
        self.writes = 0

    async def __call__(self, activity: PodActivity) -> None:
        if not self.needed(activity):
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.write, activity)

    def needed(self, activity: PodActivity) -> bool:
        """Whether ``activity`` changes what the pod shows."""
        if activity.ready is None:
            return False
        if self._current is not None:
            shown = self._current(activity.namespace, activity.name, activity.uid)
            if shown is not None:
                return shown != activity.ready
        return activity.ready_changed

    def write(self, activity: PodActivity) -> None:
        """Blocking: patch the condition (when readiness is known)."""
        condition = ready_condition(activity, now=self._now())
        if condition is None:
            return
        self._core.patch_namespaced_pod_status(
            activity.name,
            activity.namespace,
            {"metadata": {"uid": activity.uid}, "status": {"conditions": [condition]}},
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=self._timeout,
        )
        self.writes += 1
