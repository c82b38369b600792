"""Request-level split by a sticky key, and the per-version counters."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from logicbundle.sdk import LogicHost, Split, prometheus_text, register_prometheus
from tests.sdk.conftest import SIMPLE, WriteBundle, simple

FAILING = SIMPLE.format(name="flaky").replace(
    "return a + b", "if a < 0:\n            raise ValueError('negative')\n        return a + b"
)


def test_keyed_calls_stick_to_one_version_and_the_share_is_close_to_the_weight(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    activation = host.activate(
        stable.digest, stable.path, split=Split(candidate=candidate.digest, weight=5)
    )
    assert (activation.digest, activation.candidate, activation.weight) == (
        stable.digest,
        candidate.digest,
        5.0,
    )
    ident = host.function("ident")
    users = [f"user-{i}" for i in range(20_000)]
    first = [ident.by_key(user) for user in users]
    assert [ident.by_key(user) for user in users] == first
    share = first.count("candidate") / len(users)
    assert 0.04 <= share <= 0.06
    assert all(
        host.route_for(u) == (candidate if r == "candidate" else stable).digest
        for u, r in zip(users[:100], first[:100], strict=True)
    )
    assert {ident() for _ in range(100)} == {"stable"}


def test_raising_the_weight_keeps_every_earlier_candidate_user_on_the_candidate(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    host.activate(stable.digest, stable.path, split=Split(candidate=candidate.digest, weight=5))
    ident = host.function("ident")
    users = [f"u{i}" for i in range(5000)]
    at_five = {u for u in users if ident.by_key(u) == "candidate"}
    loaded = {d: v.obj for d, _, _, v in host.versions()}
    change = host.activate(
        stable.digest, stable.path, split=Split(candidate=candidate.digest, weight=50)
    )
    assert change.changed
    assert {d: v.obj for d, _, _, v in host.versions()} == loaded, "nothing was reloaded"
    at_fifty = {u for u in users if ident.by_key(u) == "candidate"}
    assert at_five <= at_fifty
    assert 0.45 <= len(at_fifty) / len(users) <= 0.55


def test_promoting_the_candidate_keeps_its_instance_and_releases_the_stable(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    stable, candidate = write_bundle(simple("stable")), write_bundle(simple("candidate"))
    host.activate(stable.digest, stable.path, split=Split(candidate=candidate.digest, weight=5))
    candidate_obj = {d: v.obj for d, _, _, v in host.versions()}[candidate.digest]
    host.activate(candidate.digest, candidate.path)
    assert host.candidate_digest is None
    assert {d: v.obj for d, r, _, v in host.versions() if r == "primary"} == {
        candidate.digest: candidate_obj
    }
    assert host.wait_released(stable.digest, timeout=10)
    assert host.function("ident").by_key("anyone") == "candidate"


def test_a_failing_candidate_refuses_the_split_and_nothing_changes(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    stable = write_bundle(simple("stable"))
    host.activate(stable.digest, stable.path)
    bad_source = SIMPLE.format(name="bad").replace(
        "logic = Logic()", "    def selftest(self):\n        return False\nlogic = Logic()"
    )
    bad = write_bundle({"logic.py": bad_source})
    with pytest.raises(Exception, match="returned False"):
        host.activate(stable.digest, stable.path, split=Split(candidate=bad.digest, weight=5))
    assert (host.active_digest, host.candidate_digest) == (stable.digest, None)


def test_counters_count_calls_errors_and_latency_per_version(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    flaky = write_bundle({"logic.py": FAILING})
    host.activate(flaky.digest, flaky.path)
    add = host.function("add")
    for i in range(100):
        if i % 4 == 0:
            with pytest.raises(ValueError, match="negative"):
                add(-1, 0)
        else:
            assert add(i, 1) == i + 1
    (entry,) = host.stats()["versions"]
    assert (entry["digest"], entry["role"]) == (flaky.digest, "primary")
    assert (entry["calls"], entry["errors"], entry["inflight"]) == (100, 25, 0)
    assert entry["latency"]["sumNs"] > 0
    assert entry["latency"]["buckets"][-1][1] == 100
    counts = [n for _, n in entry["latency"]["buckets"]]
    assert counts == sorted(counts)
    assert 0 < entry["latency"]["p50Ns"] <= entry["latency"]["p99Ns"]


def test_counters_of_many_short_lived_threads_are_kept(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    one = write_bundle(simple("one"))
    host.activate(one.digest, one.path)
    add = host.function("add")
    for _ in range(150):  # more than the fold threshold: dead threads get folded
        thread = threading.Thread(target=lambda: [add(1, 2) for _ in range(3)])
        thread.start()
        thread.join()
    assert host.stats()["versions"][0]["calls"] == 450
    version = host.versions()[0][3]
    assert len(version.stats._threads) < 100


def test_the_prometheus_text_carries_per_digest_series(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    flaky = write_bundle({"logic.py": FAILING})
    host.activate(flaky.digest, flaky.path)
    add = host.function("add")
    add(1, 1)
    with pytest.raises(ValueError, match="negative"):
        add(-1, 1)
    text = prometheus_text(host)
    labels = f'bundle="calc",digest="{flaky.digest}",role="primary"'
    assert f"logicbundle_sdk_calls_total{{{labels}}} 2" in text
    assert f"logicbundle_sdk_call_errors_total{{{labels}}} 1" in text
    assert f'logicbundle_sdk_call_duration_seconds_bucket{{{labels},le="+Inf"}} 2' in text
    assert 'logicbundle_sdk_activations_total{bundle="calc",result="ok"} 1' in text


def test_the_prometheus_client_collector_aggregates_on_scrape(
    host: LogicHost, write_bundle: WriteBundle
) -> None:
    one = write_bundle(simple("one"))
    host.activate(one.digest, one.path)
    registry = CollectorRegistry()
    register_prometheus(host, registry=registry)
    host.function("add")(1, 2)
    scraped = generate_latest(registry).decode()
    labels = f'bundle="calc",digest="{one.digest}",role="primary"'
    assert f"logicbundle_sdk_calls_total{{{labels}}} 1.0" in scraped
    assert f"logicbundle_sdk_call_duration_seconds_count{{{labels}}} 1.0" in scraped
    host.function("add")(1, 2)
    assert f"logicbundle_sdk_calls_total{{{labels}}} 2.0" in generate_latest(registry).decode()
