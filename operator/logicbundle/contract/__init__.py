"""logicbundle.contract: what crosses the pod boundary, defined once.

Standard library only, imported by the agent and the SDK in every pod, and by
the distributor, the webhook and the controller.  Today: the target rule (what
a pod should run, computed from one published rollout state and the pod's
own facts) and its published form.
"""

from logicbundle.contract._names import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_COHORT_KEY,
    LABELS_FILE_NAME,
    STATE_CONFIGMAP_PREFIX,
    STATE_DIR,
    STATE_KEY,
    admitted_at,
    state_configmap_name,
    state_file_name,
)
from logicbundle.contract._rule import (
    MAX_STATE_BYTES,
    POSITION_BITS,
    POSITION_LIMIT,
    Carry,
    Everyone,
    Internal,
    Percent,
    PodFacts,
    Requirement,
    RolloutState,
    Selector,
    Split,
    Stage,
    StateError,
    Target,
    cohort,
    plan_percent,
    position,
    share,
    state_from_bytes,
    state_from_json,
    state_to_json,
    target_of,
)

__all__ = [
    "ANNOTATION_ADMITTED_AT",
    "ANNOTATION_COHORT_KEY",
    "LABELS_FILE_NAME",
    "MAX_STATE_BYTES",
    "POSITION_BITS",
    "POSITION_LIMIT",
    "STATE_CONFIGMAP_PREFIX",
    "STATE_DIR",
    "STATE_KEY",
    "Carry",
    "Everyone",
    "Internal",
    "Percent",
    "PodFacts",
    "Requirement",
    "RolloutState",
    "Selector",
    "Split",
    "Stage",
    "StateError",
    "Target",
    "admitted_at",
    "cohort",
    "plan_percent",
    "position",
    "share",
    "state_configmap_name",
    "state_file_name",
    "state_from_bytes",
    "state_from_json",
    "state_to_json",
    "target_of",
]
