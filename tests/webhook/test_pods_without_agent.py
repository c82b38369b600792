"""Reporting selected pods that have no agent (created while the webhook was down, or before)."""

from __future__ import annotations

from logicbundle.api import names
from logicbundle.webhook import (
    EVENT_PODS_WITHOUT_AGENT,
    PodWithoutAgent,
    pods_without_agent,
    without_agent_event,
)
from tests.webhook._fixtures import OPTED_IN, logic_bundle, mutate, pod


def test_pods_with_the_agent_are_not_reported() -> None:
    _, injected = mutate(pod("web-0", labels=OPTED_IN), [logic_bundle()])
    assert pods_without_agent([injected]).count == 0
    assert without_agent_event("pricing", pods_without_agent([injected])) is None


def test_each_missing_agent_is_reported_with_its_reason() -> None:
    _, not_selected = mutate(pod("c-nothing", labels=OPTED_IN), [])
    missed = pod("a-missed", labels=OPTED_IN)
    plain = pod("b-plain", labels={"app": "shop"})
    done = pod("d-done", labels=OPTED_IN)
    done["status"] = {"phase": "Succeeded"}

    without = pods_without_agent([not_selected, missed, plain, done])

    assert without.count == 3
    assert without.pods == (
        PodWithoutAgent(namespace="shop", name="a-missed", reason="WebhookDidNotRun"),
        PodWithoutAgent(namespace="shop", name="b-plain", reason="NotOptedIn"),
        PodWithoutAgent(namespace="shop", name="c-nothing", reason="NotSelectedAtAdmission"),
    )
    assert [p.name for p in without.opted_in] == ["a-missed", "c-nothing"]


def test_the_event_says_what_happens_and_what_to_do() -> None:
    pods = [pod(f"web-{i}", labels=OPTED_IN) for i in range(7)]
    pods.append(pod("plain", labels={"app": "shop"}))
    event = without_agent_event("pricing", pods_without_agent(pods))
    assert event is not None
    reason, message = event
    assert reason == EVENT_PODS_WITHOUT_AGENT
    assert message == (
        "8 selected pod(s) have no reload agent and will not receive pricing; "
        "7 opted in but were created without the agent (webhook unavailable, or no "
        "LogicBundle selected them yet): web-0, web-1, web-2, web-3, web-4 and 2 more; "
        "re-create them, e.g. `kubectl rollout restart`; "
        f'1 lack the label {names.LABEL_INJECT}: "true"; add it to their pod template'
    )
