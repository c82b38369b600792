"""The first activation of a new pod, and restarts of the application or the agent mid-split.

The agent is the application's startup gate (its startup probe), so on the
first activation the application cannot answer yet, whatever the notify
mode; and an application that restarts must come back with the same
versions (primary and split) the agent made current.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.sample_app.bundles import INTERFACE
from logicbundle.agent import Agent, BundleStore
from logicbundle.sdk import SPLIT_FILE, AgentListener, LogicHost, serve
from tests.agent.conftest import (
    App,
    FakeDistributor,
    Hooks,
    MakeAgent,
    Packed,
    unused_port,
    wait_for,
)


def _current(root: Path) -> str | None:
    link = root / "pricing" / "current"
    return link.readlink().name if link.is_symlink() else None


def _http_bundle(port: int, *, health: bool = True) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "source": "registry.invalid/shop/pricing",
        "notify": {"mode": "http", "http": {"url": f"http://127.0.0.1:{port}/reload"}},
    }
    if health:
        bundle["healthCheck"] = {
            "mode": "http",
            "url": f"http://127.0.0.1:{port}/healthz",
            "timeout": "2s",
        }
    return bundle


@pytest.fixture
def dist(distributor: FakeDistributor, bundles: dict[str, Packed]) -> FakeDistributor:
    for packed in bundles.values():
        distributor.add(packed)
    return distributor


# --- item: http mode must not deadlock a new pod ------------------------------------------


@pytest.mark.parametrize("health", [True, False], ids=["with-http-health", "notify-only"])
def test_the_first_http_activation_does_not_wait_for_an_application_that_has_not_started(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    make_agent: MakeAgent,
    root: Path,
    health: bool,
) -> None:
    # A regression: the hook and health endpoint of an application that the agent's own
    # startup probe holds back cannot answer, so the first activation used to flip back,
    # /readyz stayed 503 and the pod never started.
    v1 = bundles["pricing-v1"]
    port = unused_port()  # the application's port, nothing listening yet
    dist.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=dist.url, bundle=_http_bundle(port, health=health))

    wait_for(lambda: agent.ready()[0], "the agent ready with the hook down")
    # Readiness follows the activation; the worker's record of it may land a moment later.
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_swap is not None and s,
        "the first swap recorded",
    )
    assert (status.active, status.healthy, status.last_error) == (v1.digest, True, None)
    assert status.last_swap is not None
    assert status.last_swap.outcome == "activated"
    assert _current(root) == v1.digest  # what the application reads when it starts


def test_after_the_first_activation_an_http_swap_needs_the_hook_and_its_health_check(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    port = unused_port()
    dist.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=dist.url, bundle=_http_bundle(port), backoff_base=60.0)
    wait_for(lambda: agent.ready()[0], "the first activation, hook down")

    # The application is up now: a swap is told and checked.
    hooks = Hooks(health=200, port=port)
    try:
        dist.set_targets({"pricing": {"digest": v2.digest}})
        wait_for(lambda: agent.statuses()["pricing"].active == v2.digest, "v2 active")
        told = [n["digest"] for n in hooks.notified]
        # v2 was told last; before it, at most the deferred first notification of v1
        # (the agent tells a first activation once the app shows up, which can be first).
        assert told[-1] == v2.digest, told
        assert set(told[:-1]) <= {v1.digest}, told
    finally:
        hooks.close()

    # The application is gone again: a swap is no first activation, so it flips back.
    dist.set_targets({"pricing": {"digest": v1.digest}})
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_error and s, "the refused swap"
    )
    assert status.last_error is not None
    assert status.last_error.reason == "HookUnavailable"
    assert status.active == v2.digest
    assert _current(root) == v2.digest
    assert not agent.ready()[0]


def test_a_first_activation_with_only_an_http_health_check_does_not_wait_for_the_app(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    make_agent: MakeAgent,
    root: Path,
) -> None:
    # notify none (or sdk/signal with no application yet) and an http health check: the
    # same deadlock as http notify, through the health check alone.
    v1 = bundles["pricing-v1"]
    port = unused_port()
    bundle = {
        "source": "registry.invalid/shop/pricing",
        "notify": {"mode": "none"},
        "healthCheck": {"mode": "http", "url": f"http://127.0.0.1:{port}/h", "timeout": "2s"},
    }
    dist.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=dist.url, bundle=bundle)
    wait_for(lambda: agent.ready()[0], "ready with nothing listening")
    assert _current(root) == v1.digest


def test_a_first_activation_an_application_already_running_refuses_is_still_refused(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    make_agent: MakeAgent,
    root: Path,
) -> None:
    # An application that is there (it started while nothing was assigned) gets no
    # exemption: its answer counts.
    v1 = bundles["pricing-v1"]
    hooks = Hooks(health=200, notify=500)
    try:
        port = int(hooks.url.rpartition(":")[2])
        dist.set_targets({"pricing": {"digest": v1.digest}})
        agent = make_agent(distributor=dist.url, bundle=_http_bundle(port), backoff_base=60.0)
        status = wait_for(
            lambda: (s := agent.statuses()["pricing"]).last_error and s, "the refusal"
        )
    finally:
        hooks.close()
    assert status.last_error is not None
    assert status.last_error.reason == "NotifyFailed"
    assert status.active is None
    assert _current(root) is None


# --- item: a request split survives a restart of the application ------------------------


class _Restarted:
    """The application started again on the same root, the way the sample app starts."""

    def __init__(self, root: Path) -> None:
        self.host = LogicHost(name="pricing", interface=INTERFACE, root=root)
        self.activation = self.host.load_current()
        self.listener: AgentListener = serve(self.host, path=root / "sdk.sock")

    def close(self) -> None:
        self.listener.close()
        self.host.close(timeout=10)


@pytest.fixture
def restart(app: App, root: Path) -> Iterator[Any]:
    started: list[_Restarted] = []

    def again() -> _Restarted:
        for previous in started:
            previous.close()
        app.listener.close()  # the first process of the application goes away
        app.host.close(timeout=10)
        started.append(_Restarted(root))
        return started[-1]

    yield again
    for restarted in started:
        restarted.close()


def _split_target(primary: Packed, candidate: Packed, weight: int) -> dict[str, Any]:
    return {"digest": primary.digest, "split": {"candidate": candidate.digest, "weight": weight}}


def test_an_application_restarted_during_a_split_comes_back_with_the_split(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    restart: Any,
) -> None:
    # A regression: load_current() used to load the primary only, and the agent, already
    # in sync, never sent the split again -- the candidate's share of traffic was lost.
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    dist.set_targets({"pricing": _split_target(v1, v2, 30)})
    agent = make_agent(distributor=dist.url)
    wait_for(lambda: app.host.candidate_digest == v2.digest, "the split in the first app")
    wait_for(lambda: agent.ready()[0], "the agent ready")

    restarted = restart()

    host = restarted.host
    assert (host.active_digest, host.candidate_digest, host.weight) == (v1.digest, v2.digest, 30)
    routes = {host.route_for(f"user-{i}") for i in range(200)}
    assert routes == {v1.digest, v2.digest}
    assert agent.ready()[0]


def test_after_the_split_ends_a_restarted_application_serves_the_promoted_digest_alone(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
    restart: Any,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    dist.set_targets({"pricing": _split_target(v1, v2, 30)})
    make_agent(distributor=dist.url)
    wait_for(lambda: app.host.candidate_digest == v2.digest, "the split")
    assert json.loads((root / "pricing" / SPLIT_FILE).read_text()) == {
        "digest": v1.digest,
        "candidate": v2.digest,
        "weight": 30,
    }
    dist.set_targets({"pricing": {"digest": v2.digest}})  # promoted
    wait_for(
        lambda: (app.host.active_digest, app.host.candidate_digest) == (v2.digest, None),
        "the promotion",
    )
    assert not (root / "pricing" / SPLIT_FILE).exists()

    restarted = restart()
    assert (restarted.host.active_digest, restarted.host.candidate_digest) == (v2.digest, None)


def test_a_refused_swap_away_from_a_split_puts_the_split_back_for_the_next_start(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
    restart: Any,
) -> None:
    v1, v2, bad = bundles["pricing-v1"], bundles["pricing-v2"], bundles["pricing-bad-selftest"]
    dist.set_targets({"pricing": _split_target(v1, v2, 30)})
    agent = make_agent(distributor=dist.url, backoff_base=60.0)
    wait_for(lambda: app.host.candidate_digest == v2.digest, "the split")
    dist.set_targets({"pricing": {"digest": bad.digest}})
    wait_for(lambda: agent.statuses()["pricing"].last_error, "the refusal")
    assert _current(root) == v1.digest

    restarted = restart()
    assert (restarted.host.active_digest, restarted.host.candidate_digest) == (
        v1.digest,
        v2.digest,
    )


def test_a_restarted_agent_knows_the_split_it_left_on_disk(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    dist.set_targets({"pricing": _split_target(v1, v2, 30)})
    first = make_agent(distributor=dist.url)
    wait_for(lambda: app.host.candidate_digest == v2.digest, "the split")
    first.stop()

    second: Agent = make_agent(distributor=dist.url, start=False)
    status = second.statuses()["pricing"]
    assert (status.active, status.candidate, status.weight) == (v1.digest, v2.digest, 30)
    assert status.previous is None  # the candidate is not a version to roll back to


def test_a_split_descriptor_left_for_another_primary_is_removed_at_start(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    # What a kill between the descriptor's rename and current's rename leaves behind.
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    dist.set_targets({"pricing": {"digest": v1.digest}})
    first = make_agent(distributor=dist.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1")
    first.stop()
    descriptor = {"digest": v2.digest, "candidate": v1.digest, "weight": 5}
    (root / "pricing" / SPLIT_FILE).write_text(json.dumps(descriptor))

    second: Agent = make_agent(distributor=dist.url, start=False)
    assert second.statuses()["pricing"].candidate is None
    assert not (root / "pricing" / SPLIT_FILE).exists()


def test_the_agent_and_the_sdk_name_the_split_descriptor_alike(tmp_path: Path) -> None:
    assert BundleStore(tmp_path, "pricing").split.name == SPLIT_FILE
