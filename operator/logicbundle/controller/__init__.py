"""The operator process: kopf, configured for logicbundle.

A kopf daemon per LogicBundle drives the pure rollout core against the
cluster (``_reconcile``), with the distributor and the injection webhook
served from the same process; it stops cleanly on SIGTERM or SIGINT.
"""

from logicbundle.controller._run import ApiServerUnreachableError, OperatorSettings, run_operator
from logicbundle.controller._summaries import ReplicaSettings
from logicbundle.controller._webhook import WebhookSettings

__all__ = [
    "ApiServerUnreachableError",
    "OperatorSettings",
    "ReplicaSettings",
    "WebhookSettings",
    "run_operator",
]
