"""What a deleted LogicBundle publishes before it lets its pods go.

Deleting a LogicBundle mid-rollout withdraws the candidate: every pod goes
back to the stable digest, then the pods keep it, unmanaged.  The state that
says so is an ordinary published state, stamped newer than the one in
flight, so every path an agent follows (the distributor's answer, or the
mounted copy when no distributor answers) prefers it.
"""

from __future__ import annotations

from datetime import datetime

from logicbundle.api import LogicBundleStatus
from logicbundle.contract import RolloutState
from logicbundle.rollout._cohort import published_state
from logicbundle.rollout._machine import _stamped


def released(
    status: LogicBundleStatus | None, *, bundle: str, now: datetime
) -> RolloutState | None:
    """The state a deleted LogicBundle publishes: every pod on its stable digest.

    Its revision is above the one ``status`` published (the same one when
    ``status`` already publishes it: a retried deletion writes nothing new).
    None: no stable digest to go back to.
    """
    if status is None or status.stable_digest is None:
        return None
    state = RolloutState(bundle=bundle, stable=status.stable_digest)
    return _stamped(state, published_state(status), now)
