"""Condition types, reasons and the ``metav1.Condition`` shape.

Flux, Argo CD and ``kubectl wait`` judge a resource by its conditions (the
kstatus convention), so their types and reasons are part of the API, not an
implementation detail: each is a named constant here, and the tests and the
docs quote the constants rather than string literals.

The contract (../shared/DESIGN.md, "Status contract"):

* ``Ready`` is always present.
* ``Reconciling=True`` while a rollout is in flight; its reason names the
  stage or what is being waited for.
* ``Stalled=True`` (with ``Ready=False``) after an automatic rollback or an
  unrecoverable error, so GitOps tools fail fast instead of timing out.
* ``Reconciling`` and ``Stalled`` are never ``True`` together.
* ``Verified`` reports the signature verification of the latest resolved digest.
* Every condition carries the ``observedGeneration`` it was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from pydantic import Field

from logicbundle.api._base import StatusModel
from logicbundle.api.formats import ConditionReason, ConditionType, Timestamp

ConditionStatus = Literal["True", "False", "Unknown"]

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

# --- Condition types ------------------------------------------------------------

READY: Final = "Ready"
"""The stable digest is verified and active on every selected pod, and nothing is in flight."""

RECONCILING: Final = "Reconciling"
"""A rollout (or a rollback) is in flight; the reason says which step or wait."""

STALLED: Final = "Stalled"
"""Progress stopped and will not resume without a change of spec or a manual action."""

VERIFIED: Final = "Verified"
"""The latest resolved digest's signature matched the verification policy."""

CONDITION_TYPES: Final = (READY, RECONCILING, STALLED, VERIFIED)

# --- Reasons --------------------------------------------------------------------
# Reasons are CamelCase, stable, and documented: users write alerts and
# Argo CD health checks against them.

SUCCEEDED: Final = "Succeeded"
"""Ready=True: the stable digest is active on every selected pod."""

PROGRESSING: Final = "Progressing"
"""Ready=False / Reconciling=True: a rollout is in flight (the message names the stage)."""

RESOLVING: Final = "Resolving"
"""Reconciling=True: the source reference is being resolved to a digest."""

VERIFYING: Final = "Verifying"
"""Reconciling=True / Verified=Unknown: the signature of a new digest is being checked."""

WAITING_FOR_PODS: Final = "WaitingForPods"
"""Reconciling=True: pods of the current stage have not all reported the candidate active."""

WAITING_FOR_PAUSE: Final = "WaitingForPause"
"""Reconciling=True: the stage's pause has not elapsed yet."""

WAITING_FOR_ANALYSIS: Final = "WaitingForAnalysis"
"""Reconciling=True: the analysis of the current stage has not reached a verdict yet."""

INSUFFICIENT_DATA: Final = "InsufficientData"
"""Reconciling=True: the analysis has fewer samples than required; waiting (never a pass)."""

WAITING_FOR_PROMOTION: Final = "WaitingForPromotion"
"""Reconciling=True: the stage has a manual gate and waits for a ``promote`` action."""

ROLLING_BACK: Final = "RollingBack"
"""Reconciling=True: every pod is being sent back to the stable digest."""

SUPERSEDED: Final = "Superseded"
"""Reconciling=True: a newer digest replaced the candidate mid-rollout."""

ROLLED_BACK: Final = "RolledBack"
"""Stalled=True / Ready=False: the analysis failed and every pod went back to stable."""

ANALYSIS_FAILED: Final = "AnalysisFailed"
"""Stalled=True: the analysis failed more often than ``failureLimit`` allows."""

HEALTH_CHECK_FAILED: Final = "HealthCheckFailed"
"""Stalled=True: agents reported that the candidate failed its health check."""

ABORTED: Final = "Aborted"
"""Stalled=True: an ``abort`` action rolled back and holds the rollout."""

FROZEN: Final = "Frozen"
"""Stalled=True: a failure froze the rollout (``onFailure: freeze``): every pod keeps what it
runs, no stage advances and nothing rolls back until a ``retry``, ``abort`` or ``rollback``
action or a new digest."""

SUSPENDED: Final = "Suspended"
"""Ready=False / Reconciling=False: ``spec.suspend`` is true; nothing changes until it is false."""

RESOLVE_FAILED: Final = "ResolveFailed"
"""Ready=False / Reconciling=True / Stalled=False: the source could not be resolved, fetched or
checked for a reason a retry may fix (registry unreachable, repository or tag missing, credentials
refused or unreadable, a Secret or ConfigMap missing); the message starts with the cause. Retried
with backoff (15 s doubling up to the source interval, at most 5 min); the last verified digest
keeps serving."""

INVALID_SOURCE: Final = "InvalidSource"
"""Stalled=True / Ready=False: the source cannot be used as the spec and the objects it names
stand (a malformed reference; a registry, token service or redirect that asks for plain HTTP
while ``source.insecure`` is false; a trusted root that does not load or lacks CAs or logs); the
message starts with the cause. Not retried with backoff: checked again at once when the spec
changes, else at the source interval (to see a fixed Secret, ConfigMap or registry); the last
verified digest keeps serving."""

INVALID_SPEC: Final = "InvalidSpec"
"""Stalled=True / Ready=False: the spec passed the CRD schema but cannot be acted on (the message
says which fields); nothing changes, every pod keeps what it runs, until the spec is edited."""

VERIFICATION_SUCCEEDED: Final = "VerificationSucceeded"
"""Verified=True: the signature matched the policy (the message names the signer)."""

VERIFICATION_FAILED: Final = "VerificationFailed"
"""Verified=False / Stalled=True: the signature is missing, invalid, or from another signer."""

AUDIT_REJECTED: Final = "AuditRejected"
"""Verified=False: the content audit found forbidden code and ``verify.audit`` is ``reject``."""

REASONS: Final = (
    SUCCEEDED,
    PROGRESSING,
    RESOLVING,
    VERIFYING,
    WAITING_FOR_PODS,
    WAITING_FOR_PAUSE,
    WAITING_FOR_ANALYSIS,
    INSUFFICIENT_DATA,
    WAITING_FOR_PROMOTION,
    ROLLING_BACK,
    SUPERSEDED,
    ROLLED_BACK,
    ANALYSIS_FAILED,
    HEALTH_CHECK_FAILED,
    ABORTED,
    FROZEN,
    SUSPENDED,
    RESOLVE_FAILED,
    INVALID_SOURCE,
    INVALID_SPEC,
    VERIFICATION_SUCCEEDED,
    VERIFICATION_FAILED,
    AUDIT_REJECTED,
)
"""Every reason the operator may put in a condition."""

# --- The model ------------------------------------------------------------------


class Condition(StatusModel):
    """One status condition, shaped exactly like ``metav1.Condition``."""

    type: ConditionType = Field(
        description=(
            "Type of the condition, CamelCase: `Ready`, `Reconciling`, `Stalled` or `Verified`. "
            "Required."
        )
    )
    status: ConditionStatus = Field(
        description="Status of the condition: `True`, `False` or `Unknown`. Required."
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The `metadata.generation` the condition was computed from; older than "
            "`metadata.generation` means the condition is stale. Default: unset."
        ),
    )
    last_transition_time: Timestamp = Field(
        description=(
            "When `status` last changed (RFC 3339, UTC). A new reason or message with the "
            "same status keeps the time. Required."
        )
    )
    reason: ConditionReason = Field(
        description=(
            "Why the condition has its status: a CamelCase word from "
            "`logicbundle.api.conditions`. Required."
        )
    )
    message: str = Field(
        default="",
        max_length=32768,
        description=(
            "Human-readable details; never contains secrets or URL credentials. Default: empty."
        ),
    )


def find_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of type ``type_``, or None when absent."""
    return next((condition for condition in conditions if condition.type == type_), None)


def with_condition(conditions: Iterable[Condition], new: Condition) -> tuple[Condition, ...]:
    """``conditions`` with ``new`` put in place of the condition of the same type.

    ``lastTransitionTime`` is kept from the old condition when the status did
    not change, as Kubernetes' ``meta.SetStatusCondition`` does.  Order is
    kept; a new type is appended.
    """
    result: list[Condition] = []
    replaced = False
    for condition in conditions:
        if condition.type != new.type:
            result.append(condition)
            continue
        replaced = True
        if condition.status == new.status:
            new = new.model_copy(update={"last_transition_time": condition.last_transition_time})
        result.append(new)
    if not replaced:
        result.append(new)
    return tuple(result)
