"""The rollout core: which digest each pod runs, and when a rollout moves on.

Pure: no I/O, no Kubernetes client, no clock (``now`` is always passed in).
The controller is a thin shell around these calls, and the state they need
lives in the ``LogicBundle`` status and on the pods themselves, so the
decisions are fast to test and survive an operator restart.

What a pod should run is not recorded per pod: it is a rule over one
published :class:`~logicbundle.contract.RolloutState` and the pod's own facts
(:func:`logicbundle.contract.target_of`).  The webhook only records, once, the
facts the rule needs and cannot learn later: the ``logicbundle.io/cohort-key``
annotation (:func:`cohort_key`; pod names are unknown at admission for
``generateName`` pods) and ``logicbundle.io/admitted-at``.

The controller, at every reconcile::

    if rollout.analysis_due(spec=spec, status=status, now=now):
        verdict = rollout.judge_builtin(analysis=spec.rollout.analysis,
                                        candidate=cand_sample, stable=stable_sample)
        # or: rollout.render_query(...) per metric, then rollout.judge(...)
    decision = rollout.step(bundle_name=name, generation=generation, spec=spec,
                            status=status, pods=reports, verdict=verdict,
                            action=parsed_action, verified=verification, now=now)
    # write decision.status (its targetState is decision.state, from which the next
    # step continues), then publish decision.state: the ConfigMap
    # contract.state_configmap_name(name) and the distributor's targets; post
    # decision.events, requeue after decision.requeue_after.
    # decision.assignments is every pod's target under decision.state, for counting.

(``reports`` are :class:`PodReport` values: the pod's cohort key, labels and
``admitted`` instant, and what its agent reports it runs.)  Each distributor
replica, for a long-poll, and each agent, from the mounted ConfigMap on its
slow path, evaluate the same rule::

    target = contract.target_of(state, contract.PodFacts(key=key, labels=labels,
                                                         admitted=admitted_ms))

so a rollout step is one write of the state whatever the number of pods, and
a pod admitted after the step learns its target before the controller has
seen it.

How percent stages pick their pods (and keep them) is explained in
:mod:`logicbundle.contract` and :mod:`logicbundle.rollout._cohort`; the state
diagram in :mod:`logicbundle.rollout._machine`; the verdicts in
:mod:`logicbundle.rollout._analysis`.
"""

from logicbundle.rollout._analysis import (
    AnalysisVerdict,
    BuiltinSample,
    MetricValue,
    MetricValues,
    builtin_value,
    escape_label_value,
    histogram_quantile,
    judge,
    judge_builtin,
    judge_metric,
    render_query,
)
from logicbundle.rollout._cohort import (
    ADMISSION_LAG_MS,
    assignments,
    candidate_cohort,
    cohort_key,
    current_stage,
    facts,
    pod_target,
    publish,
    published_state,
    selector,
    share,
)
from logicbundle.rollout._machine import (
    EVENT_ABORTED,
    EVENT_ACTION_IGNORED,
    EVENT_ANALYSIS_FAILED,
    EVENT_DIGEST_VERIFIED,
    EVENT_FROZEN,
    EVENT_HEALTH_CHECK_FAILED,
    EVENT_INSTALLED,
    EVENT_REASONS,
    EVENT_RESUMED,
    EVENT_RETRIED,
    EVENT_ROLLBACK_REQUESTED,
    EVENT_ROLLED_BACK,
    EVENT_ROLLOUT_STARTED,
    EVENT_ROLLOUT_SUCCEEDED,
    EVENT_STAGE_ADVANCED,
    EVENT_SUPERSEDED,
    EVENT_SUSPENDED,
    EVENT_VERIFICATION_FAILED,
    analysis_due,
    frozen,
    refused,
    step,
)
from logicbundle.rollout._model import (
    Decision,
    Event,
    EventType,
    Observed,
    PodFailure,
    PodIdentity,
    PodReport,
    PodTarget,
    SourceFailure,
    VerifiedDigest,
    format_target,
    observe,
    parse_target,
)
from logicbundle.rollout._release import released
from logicbundle.rollout._templates import (
    TemplateError,
    render_template_query,
    template_args,
)

__all__ = [
    "ADMISSION_LAG_MS",
    "EVENT_ABORTED",
    "EVENT_ACTION_IGNORED",
    "EVENT_ANALYSIS_FAILED",
    "EVENT_DIGEST_VERIFIED",
    "EVENT_FROZEN",
    "EVENT_HEALTH_CHECK_FAILED",
    "EVENT_INSTALLED",
    "EVENT_REASONS",
    "EVENT_RESUMED",
    "EVENT_RETRIED",
    "EVENT_ROLLBACK_REQUESTED",
    "EVENT_ROLLED_BACK",
    "EVENT_ROLLOUT_STARTED",
    "EVENT_ROLLOUT_SUCCEEDED",
    "EVENT_STAGE_ADVANCED",
    "EVENT_SUPERSEDED",
    "EVENT_SUSPENDED",
    "EVENT_VERIFICATION_FAILED",
    "AnalysisVerdict",
    "BuiltinSample",
    "Decision",
    "Event",
    "EventType",
    "MetricValue",
    "MetricValues",
    "Observed",
    "PodFailure",
    "PodIdentity",
    "PodReport",
    "PodTarget",
    "SourceFailure",
    "TemplateError",
    "VerifiedDigest",
    "analysis_due",
    "assignments",
    "builtin_value",
    "candidate_cohort",
    "cohort_key",
    "current_stage",
    "escape_label_value",
    "facts",
    "format_target",
    "frozen",
    "histogram_quantile",
    "judge",
    "judge_builtin",
    "judge_metric",
    "observe",
    "parse_target",
    "pod_target",
    "publish",
    "published_state",
    "refused",
    "released",
    "render_query",
    "render_template_query",
    "selector",
    "share",
    "step",
    "template_args",
]
