"""An agent SIGKILLed between the swap and the application's answer (issue 11's fault matrix).

The agent runs as a real process (``python -m logicbundle.agent``) beside an
in-process fake distributor and application, stopped at a test seam
(:mod:`logicbundle.agent._seams`) and killed there with SIGKILL; then started
again without the seam.  Whatever the notify mode, the application must end
up told about the version ``current`` names -- or, when it refuses that
version, the pod must go back to the version before it, never stay on the
refused one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import App, FakeDistributor, Hooks, Packed, unused_port, wait_for

REPO = Path(__file__).resolve().parents[2]


class AgentProcess:
    """``python -m logicbundle.agent`` on ``root``, optionally stopped at a seam."""

    def __init__(
        self, root: Path, *, distributor: str, bundle: dict[str, Any], pause: str | None = None
    ) -> None:
        self.port = unused_port()
        (root / "token").write_text("token-of-the-pod\n")
        config = {
            "root": str(root),
            "distributor": distributor,
            "tokenFile": str(root / "token"),
            "annotationsFile": str(root / "annotations"),
            "labelsFile": str(root / "labels"),
            "stateDir": str(root / "state"),
            "socket": str(root / "sdk.sock"),
            "listen": f"127.0.0.1:{self.port}",
            "reportInterval": "1s",
            "bundles": {"pricing": bundle},
        }
        (root / "agent.json").write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}:{REPO}"}
        self.pause_dir = root / "pause"
        if pause is not None:
            self.pause_dir.mkdir(exist_ok=True)
            env["LOGICBUNDLE_AGENT_TEST_PAUSE"] = pause
            env["LOGICBUNDLE_AGENT_TEST_PAUSE_DIR"] = str(self.pause_dir)
        self.log = (root / f"agent-{len(list(root.glob('agent-*.log')))}.log").open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "logicbundle.agent", "--config", str(root / "agent.json")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def paused_at(self, step: str) -> bool:
        assert self.popen.poll() is None, "the agent exited before its seam"
        marker = self.pause_dir / step
        return marker.exists() and marker.read_text() == str(self.popen.pid)

    def status(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as r:
                return dict(json.loads(r.read())["bundles"]["pricing"])
        except OSError:
            return None

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)
        self.log.close()


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def _current(root: Path) -> str | None:
    link = root / "pricing" / "current"
    return link.readlink().name if link.is_symlink() else None


def _kill_at(
    step: str,
    *,
    root: Path,
    dist: FakeDistributor,
    bundle: dict[str, Any],
    agents: list[AgentProcess],
    first: Packed,
    then: Packed,
    told: Any,
) -> AgentProcess:
    """``first`` active and told; then, agent down, ``then`` assigned; killed at ``step``.

    Returns the agent started again afterwards, without a seam.
    """
    dist.set_targets({"pricing": {"digest": first.digest}})
    agents.append(AgentProcess(root, distributor=dist.url, bundle=bundle))
    wait_for(lambda: told() == first.digest, f"{first.digest[:19]} told to the application")
    agents[-1].kill()
    dist.set_targets({"pricing": {"digest": then.digest}})
    agents.append(AgentProcess(root, distributor=dist.url, bundle=bundle, pause=step))
    wait_for(lambda: agents[-1].paused_at(step), f"the agent stopped at {step}")
    agents[-1].kill()
    assert _current(root) == then.digest, "the swap was made before the seam"
    agents.append(AgentProcess(root, distributor=dist.url, bundle=bundle))
    return agents[-1]


@pytest.fixture
def dist(distributor: FakeDistributor, bundles: dict[str, Packed]) -> FakeDistributor:
    for packed in bundles.values():
        distributor.add(packed)
    return distributor


def test_sdk_killed_mid_notify_of_a_refused_version_goes_back_to_the_previous_one(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    root: Path,
    agents: list[AgentProcess],
) -> None:
    # The application got `activate` for a version whose self-test fails and refused it;
    # the agent was killed before it read the refusal.  Started again it must not take
    # the refused version for the one to fall back to (it used to keep `current` on it,
    # reporting it active and healthy, so a restarted application would load it).
    v1, bad = bundles["pricing-v1"], bundles["pricing-bad-selftest"]
    bundle = {"source": "registry.invalid/shop/pricing"}
    again = _kill_at(
        "notifying",
        root=root,
        dist=dist,
        bundle=bundle,
        agents=agents,
        first=v1,
        then=bad,
        told=lambda: app.host.active_digest,
    )
    assert app.host.active_digest == v1.digest  # it refused `bad`
    status = wait_for(
        lambda: (s := again.status()) and s.get("lastError") and s, "the refusal reported"
    )
    assert status["lastError"]["reason"] == "SelfTestFailed", status
    assert (status["active"], _current(root)) == (v1.digest, v1.digest), status
    assert app.host.active_digest == v1.digest


@pytest.mark.parametrize("step", ["swapped", "notifying"])
def test_http_killed_before_the_hook_answered_tells_it_after_the_restart(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    root: Path,
    agents: list[AgentProcess],
    step: str,
) -> None:
    # Killed after the swap, before (swapped) or while (notifying) the hook is told: the
    # application must be told after the restart (the agent used to re-tell only SDK
    # applications, so a hook never heard of the version `current` named).
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    hooks = Hooks(health=200)
    try:
        bundle = {
            "source": "registry.invalid/shop/pricing",
            "notify": {"mode": "http", "http": {"url": f"{hooks.url}/reload"}},
            "healthCheck": {"mode": "http", "url": f"{hooks.url}/healthz", "timeout": "2s"},
        }

        def told() -> str | None:
            return hooks.notified[-1]["digest"] if hooks.notified else None

        again = _kill_at(
            step, root=root, dist=dist, bundle=bundle, agents=agents, first=v1, then=v2, told=told
        )
        before = len(hooks.notified)
        wait_for(
            lambda: (s := again.status()) and s["active"] == v2.digest and s["healthy"],
            "v2 active after the restart",
        )
        wait_for(lambda: len(hooks.notified) > before and told() == v2.digest, "v2 told again")
    finally:
        hooks.close()
    assert _current(root) == v2.digest


def test_http_killed_mid_notify_of_a_refused_version_goes_back_to_the_previous_one(
    dist: FakeDistributor,
    bundles: dict[str, Packed],
    root: Path,
    agents: list[AgentProcess],
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    hooks = Hooks(health=200)
    try:
        bundle = {
            "source": "registry.invalid/shop/pricing",
            "notify": {"mode": "http", "http": {"url": f"{hooks.url}/reload"}},
        }

        def told() -> str | None:
            if hooks.notify == 200 and hooks.notified:
                digest = hooks.notified[-1]["digest"]
                hooks.notify = 500  # the hook refuses whatever comes next
                return str(digest)
            return None

        again = _kill_at(
            "notifying",
            root=root,
            dist=dist,
            bundle=bundle,
            agents=agents,
            first=v1,
            then=v2,
            told=told,
        )
        status = wait_for(
            lambda: (s := again.status()) and s.get("lastError") and s, "the refusal reported"
        )
    finally:
        hooks.close()
    assert status["lastError"]["reason"] == "NotifyFailed", status
    assert (status["active"], _current(root)) == (v1.digest, v1.digest), status
    assert hooks.notified[-1]["digest"] == v1.digest  # told to go back
