"""logicbundle.contract: what crosses the pod boundary, defined once.

Standard library only, imported by the agent and the SDK in every pod, and by
the distributor, the webhook and the controller.  It holds:

* the target rule (what a pod should run, computed from one published
  rollout state and the pod's own facts) and its published form
  (``_rule``);
* the names of the annotations, of the published state's ConfigMap and of
  the files the agent reads them from (``_names``);
* the shared volume's layout: the default root, ``.versions``, ``current``,
  ``split.json``, the manifest beside each version, the socket's file name
  (``_layout``);
* the environment variables the webhook sets for the agent and the SDK
  (``_env``);
* the latency-bucket schema the SDK counts in, the agent reports, the
  distributor caps and the controller reads (``_buckets``);
* how the documents of a bundle are read as JSON: no key twice (``_json``);
* a rollout's trace context, W3C ``traceparent``, and its derived span ids
  (``_trace``);
* a leaked version as the agent reports it: its bounds and cleaning (``_leaks``).
"""

from logicbundle.contract._buckets import (
    LATENCY_BUCKETS_SCHEMA,
    MAX_LATENCY_BUCKETS,
    bucket_of,
    bucket_of_upper_ns,
    bucket_upper_ns,
    bucket_upper_seconds,
)
from logicbundle.contract._env import AGENT_CONFIG_ENV, ROOT_ENV, SOCKET_ENV
from logicbundle.contract._json import DuplicateKeyError, loads_unique
from logicbundle.contract._layout import (
    CURRENT_LINK,
    DEFAULT_ROOT,
    MANIFEST_SUFFIX,
    SOCKET_FILE_NAME,
    SPLIT_FILE,
    VERSIONS_DIR,
)
from logicbundle.contract._leaks import (
    LEAK_REFERRER_KINDS,
    MAX_LEAK_DETAIL,
    MAX_LEAK_REFERRERS,
    MAX_LEAKS_PER_BUNDLE,
    leaks_of,
)
from logicbundle.contract._names import (
    ANNOTATION_ADMITTED_AT,
    ANNOTATION_COHORT_KEY,
    DISTRIBUTOR_AUDIENCE,
    LABELS_FILE_NAME,
    STATE_CONFIGMAP_PREFIX,
    STATE_DIR,
    STATE_KEY,
    TOKEN_HEADER,
    admitted_at,
    pod_facts,
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
from logicbundle.contract._trace import (
    TraceParent,
    parse_traceparent,
    phase_span_id,
    rollout_trace_id,
    swap_span_id,
)

__all__ = [
    "AGENT_CONFIG_ENV",
    "ANNOTATION_ADMITTED_AT",
    "ANNOTATION_COHORT_KEY",
    "CURRENT_LINK",
    "DEFAULT_ROOT",
    "DISTRIBUTOR_AUDIENCE",
    "LABELS_FILE_NAME",
    "LATENCY_BUCKETS_SCHEMA",
    "LEAK_REFERRER_KINDS",
    "MANIFEST_SUFFIX",
    "MAX_LATENCY_BUCKETS",
    "MAX_LEAKS_PER_BUNDLE",
    "MAX_LEAK_DETAIL",
    "MAX_LEAK_REFERRERS",
    "MAX_STATE_BYTES",
    "POSITION_BITS",
    "POSITION_LIMIT",
    "ROOT_ENV",
    "SOCKET_ENV",
    "SOCKET_FILE_NAME",
    "SPLIT_FILE",
    "STATE_CONFIGMAP_PREFIX",
    "STATE_DIR",
    "STATE_KEY",
    "TOKEN_HEADER",
    "VERSIONS_DIR",
    "Carry",
    "DuplicateKeyError",
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
    "TraceParent",
    "admitted_at",
    "bucket_of",
    "bucket_of_upper_ns",
    "bucket_upper_ns",
    "bucket_upper_seconds",
    "cohort",
    "leaks_of",
    "loads_unique",
    "parse_traceparent",
    "phase_span_id",
    "plan_percent",
    "pod_facts",
    "position",
    "rollout_trace_id",
    "share",
    "state_configmap_name",
    "state_file_name",
    "state_from_bytes",
    "state_from_json",
    "state_to_json",
    "swap_span_id",
    "target_of",
]
