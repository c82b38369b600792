"""The operator process: kopf, configured for logicbundle.

For now it starts kopf against the configured cluster and stops cleanly on
SIGTERM or SIGINT; the LogicBundle handlers arrive with the rollout issue.
"""

from logicbundle.controller._run import OperatorSettings, run_operator

__all__ = ["OperatorSettings", "run_operator"]
