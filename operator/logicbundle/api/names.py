"""Names every part of logicbundle shares: the API group, labels, annotations.

The operator, the webhook, the agent, the CLI and the Argo CD actions all read
and write the same keys on pods and on ``LogicBundle`` objects.  A typo in one
of them is a silent bug (the key is simply never seen), so each name is
spelled exactly once, here, and everyone imports it.

This module imports nothing from pydantic or Kubernetes so that the pod-side
packages (``agent``, ``sdk``) may use it too.
"""

from __future__ import annotations

from typing import Final

from logicbundle import contract

GROUP: Final = "logicbundle.io"
"""The API group of every logicbundle resource."""

VERSION: Final = "v1alpha1"
"""The served and stored version of the ``LogicBundle`` API."""

API_VERSION: Final = f"{GROUP}/{VERSION}"
"""``apiVersion`` of a ``LogicBundle`` object."""

KIND: Final = "LogicBundle"
LIST_KIND: Final = "LogicBundleList"
PLURAL: Final = "logicbundles"
SINGULAR: Final = "logicbundle"
SHORT_NAMES: Final = ("lb",)
CATEGORIES: Final = ("logicbundle",)
"""``kubectl get logicbundle`` lists every resource of the project.

``all`` is deliberately absent. sig-cli's rules for extending ``all``
(kubernetes/community, contributors/devel/sig-cli/kubectl-conventions.md)
exclude resources that are potentially unrecoverable and namespace-admin
policy. A LogicBundle's status is rollout state that its manifest cannot
recreate (the last good digest, the history, the stage in flight), and
``kubectl delete all --all`` would delete it; its ``verify`` section is the
policy that decides which signed code runs in the namespace's pods.
``kubectl get logicbundle`` (this category) or ``kubectl get lb`` lists them.
"""

CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# --- Metric templates (reusable analysis) -------------------------------------------

TEMPLATE_KIND: Final = "LogicBundleMetricTemplate"
"""Kind of a namespaced metric template: a PromQL query with arguments, and its Prometheus.

``LogicBundle`` metrics reference it by name (``templateRef``) with arguments
(``templateArgs``), like Flagger's ``MetricTemplate`` and Argo Rollouts'
``AnalysisTemplate``.  Prefixed so that ``kubectl get`` never confuses it with
Flagger's ``metrictemplates`` in a cluster that runs both.
"""
TEMPLATE_LIST_KIND: Final = f"{TEMPLATE_KIND}List"
TEMPLATE_PLURAL: Final = "logicbundlemetrictemplates"
TEMPLATE_SINGULAR: Final = "logicbundlemetrictemplate"
TEMPLATE_SHORT_NAMES: Final = ("lbmt",)
TEMPLATE_CRD_NAME: Final = f"{TEMPLATE_PLURAL}.{GROUP}"

CLUSTER_TEMPLATE_KIND: Final = "ClusterLogicBundleMetricTemplate"
"""Kind of the cluster-scoped metric template: one definition for every namespace.

Its Secrets and ConfigMaps (Prometheus credentials, CA) are read in the
namespace of the ``LogicBundle`` that uses it, like Argo Rollouts'
``ClusterAnalysisTemplate``: a template never lends one namespace's
credentials to another.
"""
CLUSTER_TEMPLATE_LIST_KIND: Final = f"{CLUSTER_TEMPLATE_KIND}List"
CLUSTER_TEMPLATE_PLURAL: Final = "clusterlogicbundlemetrictemplates"
CLUSTER_TEMPLATE_SINGULAR: Final = "clusterlogicbundlemetrictemplate"
CLUSTER_TEMPLATE_SHORT_NAMES: Final = ("clbmt",)
CLUSTER_TEMPLATE_CRD_NAME: Final = f"{CLUSTER_TEMPLATE_PLURAL}.{GROUP}"

PREFIX: Final = f"{GROUP}/"
"""Every label and annotation key of the project starts with this prefix."""

# --- Labels -----------------------------------------------------------------

LABEL_INJECT: Final = f"{PREFIX}inject"
"""Pod label; ``"true"`` opts the pod in to the webhook's agent injection.

A label, not an annotation, so the webhook's ``objectSelector`` filters pods
before the API server ever calls it.
"""

LABEL_INJECT_ENABLED: Final = "true"
"""The only value of :data:`LABEL_INJECT` that opts a pod in."""

LABEL_COHORT: Final = f"{PREFIX}cohort"
"""Pod label naming a rollout cohort, matched by stage selectors.

The default ``internal`` stage selects pods labelled
``logicbundle.io/cohort: internal``.
"""

COHORT_INTERNAL: Final = "internal"
"""Value of :data:`LABEL_COHORT` selected by the default ``internal`` stage."""

LABEL_LEADER: Final = f"{PREFIX}leader"
"""Label on the operator's own pod; ``"true"`` while this replica is the acting one.

Written by each replica on its own pod only (set on winning the kopf peering,
removed on losing it and on shutdown).  The chart's distributor Service selects
it, because the targets and the agents' reports live in the acting replica's
memory.
"""

LABEL_LEADER_VALUE: Final = "true"
"""The value of :data:`LABEL_LEADER` on the acting replica's pod (absent elsewhere)."""

# --- Pod annotations ----------------------------------------------------------

MAX_BUNDLE_NAME_LENGTH: Final = 56
"""The longest ``LogicBundle`` name accepted.

It was what fit in a pod annotation key after ``target.`` (the name part of
an annotation key is at most 63 characters) when each pod carried its target;
kept, so that names valid before stay valid and nothing longer appears, and
the state ConfigMap's name (``lb-state-<name>``) stays short.
"""

ANNOTATION_COHORT_KEY: Final = contract.ANNOTATION_COHORT_KEY
"""Pod annotation holding the key a pod is hashed by for percentage stages.

Written once by the webhook at admission and never changed.  Pods of a
Deployment are named by ``generateName`` *after* mutating admission, so the
webhook cannot hash the name; it writes ``<namespace>/<name>`` when the name
is already known (bare pods, StatefulSets: the cohort then survives the pod's
re-creation) and the admission request's uid otherwise.  A pod without the
annotation is hashed by ``<namespace>/<name>``.  See
:func:`logicbundle.rollout.cohort_key`.
"""

POD_CONDITION_READY: Final = f"{PREFIX}bundles-ready"
"""Pod condition type (and readiness gate) set once the pod's assigned bundles are active."""

ANNOTATION_INJECTED: Final = f"{PREFIX}injected"
"""Pod annotation recording what the webhook injected, written once at admission.

Its value is JSON: ``{"version": "1", "agentImage": ..., "bundles": [...]}``.
``bundles`` empty (and no ``agentImage``) means the pod opted in but no
``LogicBundle`` selected it at admission, so it received no agent.  A pod
carrying the annotation is never mutated again (the webhook is idempotent).
"""

ANNOTATION_DISTRIBUTOR_CA: Final = f"{PREFIX}distributor-ca"
"""Pod annotation holding the distributor's CA bundle (PEM), when the operator has one.

ConfigMaps are namespaced and the agent runs in every tenant namespace, so
the webhook writes the CA into the pod itself and projects this annotation
into a file through the downward API.
"""

AGENT_CONTAINER: Final = "logicbundle-agent"
"""Name of the injected reload-agent container (a native sidecar in ``initContainers``)."""

VOLUME_BUNDLES: Final = "logicbundle-bundles"
"""Name of the injected emptyDir shared by the agent and the application containers."""

VOLUME_SOCKET: Final = "logicbundle-socket"
"""Name of the injected memory emptyDir holding the SDK's socket (read-write in the app)."""

VOLUME_TOKEN: Final = "logicbundle-token"  # noqa: S105 - a volume name, not a secret
"""Name of the injected projected service-account token volume (for the distributor)."""

VOLUME_PODINFO: Final = "logicbundle-podinfo"
"""Name of the injected downward-API volume of the pod's annotations (the slow path)."""

VOLUME_STATE: Final = "logicbundle-state"
"""Name of the injected projected volume of the published rollout states (the slow path).

One optional ``configMap`` source per injected bundle, mounted read-only in the
agent only, at :data:`logicbundle.contract.STATE_DIR`.
"""

# --- The distributor -------------------------------------------------------------

DISTRIBUTOR_AUDIENCE: Final = contract.DISTRIBUTOR_AUDIENCE
"""Audience of the projected service-account token the agent presents to the distributor.

The webhook projects a token with this audience into the agent, and the
distributor's TokenReview asks the API server to accept only tokens issued for
it; a token meant for the API server (or anything else) is refused, and this
token is refused by the API server, so neither can be replayed against the other.
"""

# --- LogicBundle annotations ----------------------------------------------------

ANNOTATION_REQUESTED_ACTION: Final = f"{PREFIX}requested-action"
"""Annotation on a ``LogicBundle`` requesting a manual action.

Its value is ``<action>[=<argument>]@<token>`` (see
:mod:`logicbundle.api.actions`); the operator acts once per distinct value and
records it in ``status.lastHandledAction``, like Flux's ``requestedAt``.  An
annotation, not a spec field, so GitOps tools see no drift in ``spec``.
"""

FINALIZER: Final = f"{PREFIX}finalizer"
"""Finalizer the operator puts on every ``LogicBundle`` it manages."""
