"""The ``LogicBundle`` API: the models every other part of logicbundle reads.

Import from here, not from the modules: this file is the public surface and
the modules behind it may move.  The sub-modules ``names`` (labels,
annotations, API names), ``conditions`` (types, reasons) and ``actions``
(manual-action annotations) are public too, and meant to be imported whole::

    from logicbundle.api import LogicBundle, conditions, names

    bundle = LogicBundle.model_validate(body)
    if bundle.spec.suspend: ...

The CRD YAML and the Markdown reference are generated from these models by
``python -m logicbundle.api.crd``.
"""

from logicbundle.api import actions, conditions, formats, names
from logicbundle.api._base import SpecModel
from logicbundle.api.actions import InvalidActionError, RequestedAction, format_action, parse_action
from logicbundle.api.conditions import Condition, find_condition, with_condition
from logicbundle.api.formats import (
    format_duration,
    format_timestamp,
    parse_duration,
    short_digest,
)
from logicbundle.api.meta import (
    ConfigMapKeyReference,
    LabelSelector,
    LabelSelectorRequirement,
    LocalObjectReference,
    SecretKeyReference,
)
from logicbundle.api.v1alpha1 import (
    DEFAULT_METRICS,
    DEFAULT_STAGES,
    HISTORY_LIMIT,
    HISTORY_MAX_BYTES,
    Analysis,
    AnalysisStatus,
    DigestCount,
    HealthCheck,
    HistoryEntry,
    HistoryOutcome,
    HistoryStage,
    HttpNotify,
    Identity,
    Keyless,
    LogicBundle,
    LogicBundleMetricTemplate,
    LogicBundleSpec,
    LogicBundleStatus,
    Metric,
    MetricResult,
    MetricTemplateArgument,
    MetricTemplateReference,
    MetricTemplateSpec,
    Notify,
    ObjectMeta,
    Phase,
    PodCounts,
    Prometheus,
    PublicKey,
    Rollout,
    SignalNotify,
    Source,
    Stage,
    StatusSummary,
    Target,
    TrustedRootReference,
    Verdict,
    VerifiedIdentity,
    Verify,
)

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_STAGES",
    "HISTORY_LIMIT",
    "HISTORY_MAX_BYTES",
    "Analysis",
    "AnalysisStatus",
    "Condition",
    "ConfigMapKeyReference",
    "DigestCount",
    "HealthCheck",
    "HistoryEntry",
    "HistoryOutcome",
    "HistoryStage",
    "HttpNotify",
    "Identity",
    "InvalidActionError",
    "Keyless",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LocalObjectReference",
    "LogicBundle",
    "LogicBundleMetricTemplate",
    "LogicBundleSpec",
    "LogicBundleStatus",
    "Metric",
    "MetricResult",
    "MetricTemplateArgument",
    "MetricTemplateReference",
    "MetricTemplateSpec",
    "Notify",
    "ObjectMeta",
    "Phase",
    "PodCounts",
    "Prometheus",
    "PublicKey",
    "RequestedAction",
    "Rollout",
    "SecretKeyReference",
    "SignalNotify",
    "Source",
    "SpecModel",
    "Stage",
    "StatusSummary",
    "Target",
    "TrustedRootReference",
    "Verdict",
    "VerifiedIdentity",
    "Verify",
    "actions",
    "conditions",
    "find_condition",
    "format_action",
    "format_duration",
    "format_timestamp",
    "formats",
    "names",
    "parse_action",
    "parse_duration",
    "short_digest",
    "with_condition",
]
