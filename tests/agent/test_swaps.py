"""The agent end to end in one process: fake distributor, real SDK host, real files."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logicbundle.agent import _seams
from logicbundle.distributor import Report
from tests.agent.conftest import (
    App,
    FakeDistributor,
    Hooks,
    MakeAgent,
    Packed,
    hostile_bundle,
    publish,
    stable_state,
    wait_for,
    write_pod,
)


def _current(root: Path) -> str | None:
    link = root / "pricing" / "current"
    return link.readlink().name if link.is_symlink() else None


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_fast_path_swap_reaches_the_application_and_reports_valid_json(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    distributor.add(v1)
    distributor.add(v2)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1 in the app")
    distributor.set_targets({"pricing": {"digest": v2.digest}})
    wait_for(lambda: app.host.active_digest == v2.digest, "v2 in the app")
    assert _current(root) == v2.digest
    assert app.host.function("price")("apple", 2) > 0
    report = distributor.wait_report(lambda r: r["bundles"]["pricing"]["active"] == v2.digest)
    Report.model_validate(report)  # the distributor's own schema accepts it
    entry = report["bundles"]["pricing"]
    assert entry["previous"] == v1.digest
    assert entry["lastSwap"]["outcome"] == "activated"
    Report.model_validate(agent.report())
    assert v2.digest in agent.report()["bundles"]["pricing"]["versions"]


def test_slow_path_swap_follows_the_published_state(
    bundles: dict[str, Packed], app: App, make_agent: MakeAgent, root: Path
) -> None:
    v1 = bundles["pricing-v1"]
    # No distributor: the bytes must already be on disk or come from the registry; put
    # them there the way a previous fetch would have.
    from examples.sample_app.bundles import EXAMPLES_DIR, install

    installed = install(EXAMPLES_DIR / "pricing-v1", root=root)
    make_agent()
    write_pod(root)
    publish(root, stable_state(installed.digest))
    wait_for(lambda: app.host.active_digest == installed.digest, "the state's target active")
    assert v1.layer_digest == installed.digest  # install() names versions by layer digest


def test_distributor_down_falls_back_to_the_slow_path(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    from examples.sample_app.bundles import EXAMPLES_DIR, install

    installed = install(EXAMPLES_DIR / "pricing-v2", root=root)
    distributor.set_targets({}, known=False)  # known: false also means "use the file"
    agent = make_agent(distributor="http://127.0.0.1:9")  # nothing listens on port 9
    write_pod(root)
    publish(root, stable_state(installed.digest))
    wait_for(lambda: app.host.active_digest == installed.digest, "slow path active")
    assert agent.metrics.fast_path_up == 0


def test_a_digest_mismatch_from_the_distributor_is_refused_and_nothing_is_swapped(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    distributor.add(v1)
    distributor.add(v2)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1")
    distributor.corrupt.add(v2.layer_digest)
    distributor.set_targets({"pricing": {"digest": v2.digest}})
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_error and s, "the failure recorded"
    )
    # The registry fallback (registry.invalid) fails too: nothing is swapped.
    assert status.active == v1.digest
    assert _current(root) == v1.digest
    assert app.host.active_digest == v1.digest
    assert sorted(p.name for p in (root / "pricing" / ".versions").iterdir()) == [
        v1.digest,
        f"{v1.digest}.manifest.json",
    ]


def test_a_hostile_tarball_is_refused_and_leaves_nothing_behind(
    distributor: FakeDistributor, app: App, make_agent: MakeAgent, root: Path
) -> None:
    evil = hostile_bundle()
    distributor.add(evil)
    distributor.set_targets({"pricing": {"digest": evil.digest}})
    agent = make_agent(
        distributor=distributor.url, bundle={"source": "registry.invalid/shop/pricing"}
    )
    status = wait_for(
        lambda: (s := agent.statuses()["pricing"]).last_error and s, "the refusal recorded"
    )
    assert status.last_error is not None
    assert status.last_error.reason == "PathTraversal"
    assert status.active is None
    assert list((root / "pricing" / ".versions").iterdir()) == []
    assert not (root / "evil.py").exists()
    assert not (root / "pricing" / "evil.py").exists()


def test_a_failing_self_test_keeps_the_old_version_and_reports_why(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, bad = bundles["pricing-v1"], bundles["pricing-bad-selftest"]
    distributor.add(v1)
    distributor.add(bad)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    agent = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1")
    distributor.set_targets({"pricing": {"digest": bad.digest}})
    report = distributor.wait_report(
        lambda r: (r["bundles"]["pricing"].get("lastError") or {}).get("digest") == bad.digest
    )
    Report.model_validate(report)
    entry = report["bundles"]["pricing"]
    assert entry["lastError"]["reason"] == "SelfTestFailed"
    assert entry["lastSwap"]["outcome"] == "rolledBack"
    assert entry["active"] == v1.digest
    assert _current(root) == v1.digest
    assert app.host.active_digest == v1.digest
    ready, why = agent.ready()
    assert not ready
    assert "SelfTestFailed" in why


def test_a_failed_digest_is_not_retried_in_a_tight_loop_but_a_new_assignment_is(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
) -> None:
    v1, v2, bad = bundles["pricing-v1"], bundles["pricing-v2"], bundles["pricing-bad-selftest"]
    for packed in (v1, v2, bad):
        distributor.add(packed)
    distributor.set_targets({"pricing": {"digest": bad.digest}})
    agent = make_agent(distributor=distributor.url, backoff_base=60.0)
    wait_for(lambda: agent.statuses()["pricing"].last_error, "the first failure")
    swaps = agent.statuses()["pricing"].swaps
    for _ in range(3):
        distributor.set_targets({"pricing": {"digest": bad.digest}})
    distributor.set_targets({"pricing": {"digest": v2.digest}})
    wait_for(lambda: app.host.active_digest == v2.digest, "the new assignment applied")
    # The app activates before the agent has its ack and counts the swap: wait for that too.
    wait_for(lambda: agent.statuses()["pricing"].active == v2.digest, "the agent's record of it")
    assert agent.statuses()["pricing"].swaps == swaps + 1


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks(health=200)
    yield server
    server.close()


def test_http_notify_with_a_failing_health_check_flips_back(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    make_agent: MakeAgent,
    root: Path,
    hooks: Hooks,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    distributor.add(v1)
    distributor.add(v2)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    bundle = {
        "source": "registry.invalid/shop/pricing",
        "notify": {"mode": "http", "http": {"url": f"{hooks.url}/reload", "timeout": "2s"}},
        "healthCheck": {"mode": "http", "url": f"{hooks.url}/healthz", "timeout": "300ms"},
    }
    agent = make_agent(distributor=distributor.url, bundle=bundle)
    wait_for(lambda: agent.statuses()["pricing"].active == v1.digest, "v1")
    hooks.health = 500
    distributor.set_targets({"pricing": {"digest": v2.digest}})
    status = wait_for(lambda: (s := agent.statuses()["pricing"]).last_error and s, "the flip back")
    assert status.last_error is not None
    assert status.last_error.reason == "HealthCheckFailed"
    assert status.active == v1.digest
    assert _current(root) == v1.digest
    digests = [n["digest"] for n in hooks.notified]
    assert digests == [v1.digest, v2.digest, v1.digest]  # told again after the flip
    assert hooks.notified[1]["path"].endswith(f"/pricing/.versions/{v2.digest}")


def test_target_changes_during_a_swap_are_coalesced_into_the_latest(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
) -> None:
    v1, v2, bad = bundles["pricing-v1"], bundles["pricing-v2"], bundles["pricing-bad-selftest"]
    for packed in (v1, v2, bad):
        distributor.add(packed)
    entered, release = threading.Event(), threading.Event()
    activated: list[str] = []

    def hook(step: str) -> None:
        if step == "unpacked" and not entered.is_set():
            entered.set()
            assert release.wait(20)
        if step == "acked":
            activated.append(str(app.host.active_digest))

    _seams.hook = hook
    try:
        distributor.set_targets({"pricing": {"digest": v1.digest}})
        agent = make_agent(distributor=distributor.url)
        assert entered.wait(20)
        worker = agent.workers["pricing"]
        for packed in (bad, v1, v2):  # three changes while the first swap is held
            worker.assign(_target(packed))
        release.set()
        wait_for(lambda: app.host.active_digest == v2.digest, "the latest target")
        assert worker.wait_idle(20)
    finally:
        _seams.hook = None
    assert activated == [v1.digest, v2.digest]


def _target(packed: Packed) -> Any:
    from logicbundle.agent import Target

    return Target(digest=packed.digest)


def test_a_restart_after_a_kill_mid_swap_cleans_debris_and_keeps_current(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1 = bundles["pricing-v1"]
    distributor.add(v1)
    distributor.set_targets({"pricing": {"digest": v1.digest}})
    first = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.active_digest == v1.digest, "v1")
    first.stop()
    # What a kill -9 at each step leaves: a half-unpacked version, a manifest whose
    # version never landed, a temporary symlink, a version being deleted.
    versions = root / "pricing" / ".versions"
    partial = versions / f".sha256:{'e' * 64}.abc.partial"
    partial.mkdir()
    (partial / "pricing.py").write_text("half")
    (versions / f"sha256:{'e' * 64}.manifest.json").write_text("{}")
    (versions / f".sha256:{'f' * 64}.manifest.json.9.tmp").write_text("{")
    (root / "pricing" / ".current.77.tmp").symlink_to(f".versions/sha256:{'e' * 64}")
    (versions / ".deleting-0123-9").mkdir()
    second = make_agent(distributor=distributor.url)
    assert second.statuses()["pricing"].active == v1.digest
    assert sorted(p.name for p in versions.iterdir()) == [v1.digest, f"{v1.digest}.manifest.json"]
    assert sorted(p.name for p in (root / "pricing").iterdir()) == [".versions", "current"]
    assert _current(root) == v1.digest
    wait_for(lambda: second.ready()[0], "ready again")


def test_readiness_is_503_until_every_assigned_bundle_is_active(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
) -> None:
    v1 = bundles["pricing-v1"]
    distributor.set_targets({"pricing": {"digest": v1.digest}})  # not cached yet
    agent = make_agent(distributor=distributor.url, backoff_base=0.05)
    base = f"http://127.0.0.1:{agent.http_port}"
    assert _get(f"{base}/healthz") == (200, "ok\n")
    code, why = _get(f"{base}/readyz")
    assert code == 503
    assert "pricing" in why or "no target" in why
    distributor.add(v1)
    wait_for(lambda: _get(f"{base}/readyz")[0] == 200, "ready")
    code, metrics = _get(f"{base}/metrics")
    assert code == 200
    assert f'logicbundle_agent_active_info{{bundle="pricing",digest="{v1.digest}"}} 1' in metrics
    assert 'logicbundle_agent_swaps_total{bundle="pricing",outcome="activated"} 1' in metrics
    assert "logicbundle_agent_swap_duration_seconds_bucket" in metrics


def test_a_split_activates_the_primary_with_the_candidate_in_the_sdk(
    distributor: FakeDistributor,
    bundles: dict[str, Packed],
    app: App,
    make_agent: MakeAgent,
    root: Path,
) -> None:
    v1, v2 = bundles["pricing-v1"], bundles["pricing-v2"]
    distributor.add(v1)
    distributor.add(v2)
    distributor.set_targets(
        {"pricing": {"digest": v1.digest, "split": {"candidate": v2.digest, "weight": 30}}}
    )
    agent = make_agent(distributor=distributor.url)
    wait_for(lambda: app.host.candidate_digest == v2.digest, "the candidate loaded")
    assert app.host.active_digest == v1.digest
    assert _current(root) == v1.digest
    assert (root / "pricing" / ".versions" / v2.digest).is_dir()
    wait_for(lambda: agent.ready()[0], "ready with the split")
