"""Pods that opted in but have no agent, and how the operator says so.

With ``failurePolicy: Ignore`` a pod created while the webhook was down (or
slow) is admitted without the agent; so is a pod that opted in before any
``LogicBundle`` selected it.  Such a pod never receives a bundle until it is
re-created.  The controller calls :func:`pods_without_agent` on the pods a
bundle selects, puts :attr:`WithoutAgent.count` into
``status.pods.withoutAgent`` and posts :func:`without_agent_event`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from logicbundle.api import names
from logicbundle.webhook._mutate import SKIPPED_NOTHING_SELECTS, has_agent, injection_record

EVENT_PODS_WITHOUT_AGENT: Final = "PodsWithoutAgent"
"""Reason of the Warning event on a ``LogicBundle`` whose selected pods lack the agent."""

MissingReason = Literal["NotOptedIn", "WebhookDidNotRun", "NotSelectedAtAdmission", "Skipped"]

_MAX_NAMES_IN_EVENT: Final = 5


@dataclass(frozen=True, kw_only=True, slots=True)
class PodWithoutAgent:
    """One selected pod without the agent, and why it has none.

    ``NotOptedIn``: no ``logicbundle.io/inject: "true"`` label.
    ``WebhookDidNotRun``: opted in, but the webhook never saw it (down, timed
    out, or the pod predates it).  ``NotSelectedAtAdmission``: opted in, but
    no ``LogicBundle`` selected it when it was created.  ``Skipped``: the
    webhook refused to inject (its record names the reason, e.g. a volume
    name clash).
    """

    namespace: str
    name: str
    reason: MissingReason


@dataclass(frozen=True, kw_only=True, slots=True)
class WithoutAgent:
    """The pods without the agent; ``opted_in`` are those a restart would fix."""

    pods: tuple[PodWithoutAgent, ...]

    @property
    def count(self) -> int:
        """For ``status.pods.withoutAgent``."""
        return len(self.pods)

    @property
    def opted_in(self) -> tuple[PodWithoutAgent, ...]:
        return tuple(pod for pod in self.pods if pod.reason != "NotOptedIn")


def _reason(pod: Mapping[str, Any]) -> MissingReason:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(names.LABEL_INJECT) != names.LABEL_INJECT_ENABLED:
        return "NotOptedIn"
    record = injection_record(pod)
    if record is None:
        return "WebhookDidNotRun"
    if record.get("skipped") == SKIPPED_NOTHING_SELECTS:
        return "NotSelectedAtAdmission"
    return "Skipped"


def pods_without_agent(pods: Iterable[Mapping[str, Any]]) -> WithoutAgent:
    """The pods (raw bodies) that have no injected agent, sorted by namespace and name.

    Pass the pods a bundle selects; terminated pods (phase Succeeded or
    Failed) are not counted: they will never run anything again.
    """
    missing = []
    for pod in pods:
        if has_agent(pod):
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        meta = pod.get("metadata") or {}
        missing.append(
            PodWithoutAgent(
                namespace=meta.get("namespace") or "",
                name=meta.get("name") or "",
                reason=_reason(pod),
            )
        )
    missing.sort(key=lambda p: (p.namespace, p.name))
    return WithoutAgent(pods=tuple(missing))


def without_agent_event(bundle_name: str, without: WithoutAgent) -> tuple[str, str] | None:
    """The Warning event ``(reason, message)`` for ``bundle_name``, or None when every pod has one.

    The message says what happens (those pods never receive the bundle) and
    what to do (re-create them, for example ``kubectl rollout restart``).
    """
    if not without.pods:
        return None
    opted_in = without.opted_in
    not_opted = without.count - len(opted_in)
    parts = [
        f"{without.count} selected pod(s) have no reload agent and will not receive {bundle_name}"
    ]
    if opted_in:
        shown = ", ".join(p.name for p in opted_in[:_MAX_NAMES_IN_EVENT])
        more = len(opted_in) - _MAX_NAMES_IN_EVENT
        shown += f" and {more} more" if more > 0 else ""
        parts.append(
            f"{len(opted_in)} opted in but were created without the agent (webhook unavailable, "
            f"or no LogicBundle selected them yet): {shown}; re-create them, e.g. "
            "`kubectl rollout restart`"
        )
    if not_opted:
        parts.append(
            f'{not_opted} lack the label {names.LABEL_INJECT}: "{names.LABEL_INJECT_ENABLED}"; '
            "add it to their pod template"
        )
    return EVENT_PODS_WITHOUT_AGENT, "; ".join(parts)
