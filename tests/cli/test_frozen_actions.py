"""The command line refuses what the operator ignores on a frozen rollout (onFailure: freeze)."""

from __future__ import annotations

from typing import Any

import pytest

from logicbundle.cli import _actions
from tests.cli.test_actions import FakeCluster
from tests.gitops import scenarios


def _frozen() -> dict[str, Any]:
    obj: dict[str, Any] = scenarios.waiting_for_promotion()
    obj["status"]["phase"] = "Frozen"
    obj["status"]["conditions"] = [
        c for c in obj["status"]["conditions"] if c["type"] not in ("Stalled", "Reconciling")
    ] + [
        {
            "type": "Stalled",
            "status": "True",
            "reason": "Frozen",
            "message": "analysis failed; frozen at stage canary",
            "lastTransitionTime": "2025-05-01T12:00:00Z",
        },
        {
            "type": "Reconciling",
            "status": "False",
            "reason": "Frozen",
            "message": "stalled",
            "lastTransitionTime": "2025-05-01T12:00:00Z",
        },
    ]
    return obj


def test_promote_is_refused_on_a_frozen_rollout_unless_forced() -> None:
    cluster = FakeCluster(_frozen())
    with pytest.raises(_actions.RefusedError, match="frozen after a failure"):
        _actions.request_action(cluster, "rules", action="promote")
    assert cluster.patches == []
    assert _actions.request_action(cluster, "rules", action="promote", force=True) == 0


@pytest.mark.parametrize("action", ["abort", "retry"])
def test_abort_and_retry_are_sent_for_a_frozen_rollout(action: str) -> None:
    cluster = FakeCluster(_frozen())
    assert _actions.request_action(cluster, "rules", action=action) == 0
    assert len(cluster.patches) == 1
