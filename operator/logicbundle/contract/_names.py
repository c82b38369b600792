"""Names that cross the pod boundary: annotations, the published state's object and files.

The webhook writes the annotations, the controller publishes the state
object, and the agent reads both from its mounted volumes; each name is
defined here once and imported by all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from logicbundle.contract._rule import PodFacts

ANNOTATION_COHORT_KEY: Final = "logicbundle.io/cohort-key"
"""The key a pod is hashed by for percent stages (:func:`logicbundle.contract.position`).

Written once by the webhook at admission and never changed: ``<namespace>/<name>``
when the name is known, else ``uid/<admission request uid>`` (pods of a
Deployment are named after mutating admission).  A pod without it is hashed
by ``<namespace>/<name>``.
"""

ANNOTATION_ADMITTED_AT: Final = "logicbundle.io/admitted-at"
"""When the webhook admitted the pod, in milliseconds since the epoch (decimal).

Percent stages seal their cohort by this instant (:class:`logicbundle.contract.Percent`);
a pod without it counts as admitted earliest (0).
"""

STATE_CONFIGMAP_PREFIX: Final = "lb-state-"
STATE_KEY: Final = "state.json"
"""The ConfigMap ``<prefix><bundle>`` in the bundle's namespace holds the published state
under this key (``state_to_json``), for the agents' slow path."""

STATE_DIR: Final = "/etc/logicbundle/state"
"""Where the agent sees the published states of its pod's bundles: ``<bundle>.json``."""

LABELS_FILE_NAME: Final = "labels"
"""The downward-API file of the pod's labels, beside the annotations file."""


def state_configmap_name(bundle: str) -> str:
    """The name of the ConfigMap that carries ``bundle``'s published state."""
    return f"{STATE_CONFIGMAP_PREFIX}{bundle}"


def state_file_name(bundle: str) -> str:
    """The file, under :data:`STATE_DIR`, that holds ``bundle``'s published state."""
    return f"{bundle}.json"


DISTRIBUTOR_AUDIENCE: Final = "logicbundle-distributor"
"""The audience of every token the distributor accepts (agents', the operator's, readers')."""

TOKEN_HEADER: Final = "X-Logicbundle-Token"  # noqa: S105 - a header name
"""Where a token may travel instead of ``Authorization`` (through the API server's proxy)."""


def admitted_at(annotations: dict[str, str] | None) -> int:
    """The pod's admission instant from its annotations (0 when absent or unreadable)."""
    raw = (annotations or {}).get(ANNOTATION_ADMITTED_AT, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return 0
    return int(raw)


def pod_facts(
    *, namespace: str, name: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> PodFacts:
    """What the target rule knows of a pod: its cohort key (else ``namespace/name``), its
    labels and its admission instant."""
    return PodFacts(
        key=annotations.get(ANNOTATION_COHORT_KEY) or f"{namespace}/{name}",
        labels=labels,
        admitted=admitted_at(dict(annotations)),
    )
