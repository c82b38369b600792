"""A version the application keeps alive after its retirement is told on the LogicBundle.

Issue 12, part 2, end to end: the operator runs as a process with its
distributor; every kwok pod has a real agent and a real sample app
(:mod:`e2e.harness.fleet`) whose SDK checks retired versions after a grace
period of 1 s (``--leak-grace``).  The rollout goes v1 -> leaky -> v2.  v1 is
well behaved: once retired it is collected and nothing is said.  ``leaky`` is
v1 plus a refresher thread it starts and never stops, the way applications leak
a version: once retired, the thread still runs its code, the SDK reports it
leaked (referrer kind ``thread``), the agents report it, the distributor sums
it, and the operator posts one ``VersionLeak`` Warning event naming the digest,
the kind of referrer and the pods, and sets ``logicbundle_retired_versions_alive``.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    get_bundle,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import wait_for
from e2e.harness.services import Registry
from logicbundle.api import names

BUNDLES = EXAMPLES / "bundles"
PODS = 3
LEAK = '''

def _refresh_forever(stop=threading.Event()):
    """Reads the quotes every half second and is never stopped: it keeps this version alive."""
    while not stop.wait(0.5):
        logic.quotes.get("apple")


threading.Thread(target=_refresh_forever, name="pricing-refresher", daemon=True).start()
'''
ROLLOUT = {"stages": [{"name": "everyone", "all": True}]}


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair.generate()


@pytest.fixture(scope="module")
def digests(
    registry: Registry, key: KeyPair, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    leaky = tmp_path_factory.mktemp("bundles") / "pricing-leaky"
    shutil.copytree(BUNDLES / "pricing-v1", leaky)
    with (leaky / "pricing.py").open("a") as source:
        source.write(LEAK)
    sources = {"v1": BUNDLES / "pricing-v1", "leaky": leaky, "v2": BUNDLES / "pricing-v2"}
    versions = {"v1": "1.0.0", "leaky": "1.0.1-leaky", "v2": "2.0.0"}
    return {
        name: push_bundle(
            registry.host,
            source,
            repository="leaks/pricing",
            tag=name,
            version=versions[name],
            key=key,
        )
        for name, source in sources.items()
    }


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, logicbundle_crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = Operator.start(cluster, tmp_path_factory.mktemp("operator"))
    yield running
    running.stop()


@pytest.fixture
def fleet(
    cluster: Cluster, namespace: str, registry: Registry, operator: Operator, tmp_path: Path
) -> Iterator[Fleet]:
    made = Fleet(
        cluster=cluster,
        namespace=namespace,
        work=tmp_path,
        distributor_url=operator.distributor_url,
        bundles={"pricing": {"source": f"{registry.host}/leaks/pricing", "insecure": True}},
        labels={"app": "web"},
        app_args=("--leak-grace", "1"),
    )
    yield made
    made.stop()


def _leak_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [
        e
        for e in items
        if e["involvedObject"].get("kind") == names.KIND and e.get("reason") == "VersionLeak"
    ]


def _retired_alive(operator: Operator, namespace: str) -> float | None:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "logicbundle_retired_versions_alive"
                and sample.labels.get("namespace") == namespace
            ):
                return sample.value
    return None


def _app_stats(fleet: Fleet) -> list[dict[str, Any]]:
    """Each app's SDK report (``GET /stats``), as its agent reads it."""
    found = []
    for pod in fleet.pods:
        url = f"http://127.0.0.1:{pod.app_port}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            found.append(json.loads(response.read()))
    return found


def _all_leaking(fleet: Fleet) -> list[dict[str, Any]] | None:
    found = _app_stats(fleet)
    return found if all(app["retiredAlive"] for app in found) else None


def _roll_to(cluster: Cluster, namespace: str, manifest: dict[str, Any], ref: str) -> None:
    manifest["spec"]["source"]["ref"] = ref
    apply(cluster, namespace, manifest)


def test_a_leaking_version_is_told_once_by_digest_and_referrer_and_a_collected_one_is_not(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,
    digests: dict[str, str],
    fleet: Fleet,
    operator: Operator,
) -> None:
    v1, leaky, v2 = digests["v1"], digests["leaky"], digests["v2"]
    namespace = fleet.namespace
    fleet.add(PODS)
    manifest = logicbundle(
        "pricing",
        ref=f"{registry.host}/leaks/pricing:v1",
        key=key,
        selector={"app": "web"},
        rollout=ROLLOUT,
        interval="1h",
    )
    apply(cluster, namespace, manifest)
    wait_condition(cluster, namespace, "pricing", "Ready", "True", timeout=90)
    fleet.start_apps()
    fleet.wait_serving(v1)

    # v1 retired: well behaved, collected after its grace; the SDK of every app says so.
    _roll_to(cluster, namespace, manifest, f"{registry.host}/leaks/pricing:leaky")
    fleet.wait_serving(leaky, timeout=120)
    wait_for(
        lambda: all(
            not any(v["digest"] == v1 and v["role"] == "draining" for v in s["versions"])
            for s in _app_stats(fleet)
        ),
        what="v1 released in every app",
        timeout=60,
        interval=0.2,
    )

    # leaky retired: its refresher thread keeps it alive in every app.
    _roll_to(cluster, namespace, manifest, f"{registry.host}/leaks/pricing:v2")
    fleet.wait_serving(v2, timeout=120)
    stats = wait_for(
        lambda: _all_leaking(fleet),
        what="every app's SDK reporting the retired leaky version alive",
        timeout=90,  # the SDK collects at most every 30 s per process
        interval=0.5,
    )
    for app in stats:
        assert [leak["digest"] for leak in app["leaks"]] == [leaky], app["leaks"]
        kinds = {r["kind"] for r in app["leaks"][0]["referrers"]}
        assert "thread" in kinds, app["leaks"]

    # Out of a rollout the operator reconciles once a minute: the event comes with one.
    events = wait_for(
        lambda: _leak_events(cluster, namespace) or None,
        what="the VersionLeak event on the LogicBundle",
        timeout=150,
        interval=0.5,
    )
    wait_for(
        lambda: _retired_alive(operator, namespace) == PODS,
        what=f"logicbundle_retired_versions_alive == {PODS}",
        timeout=150,
        interval=0.5,
    )
    # Once per digest: a later reconcile reads the same lasting leak and posts nothing new.
    # A spec change makes one; observedGeneration says it ran.
    manifest["spec"]["source"]["interval"] = "2h"
    apply(cluster, namespace, manifest)
    generation = get_bundle(cluster, namespace, "pricing")["metadata"]["generation"]
    wait_for(
        lambda: (
            get_bundle(cluster, namespace, "pricing").get("status", {}).get("observedGeneration", 0)
            >= generation
        ),
        what=f"a reconcile of generation {generation}",
        timeout=90,
        interval=0.5,
    )
    assert _retired_alive(operator, namespace) == PODS
    events = _leak_events(cluster, namespace)
    assert len(events) == 1, [e["message"] for e in events]
    event = events[0]
    assert event["type"] == "Warning"
    assert event.get("count", 1) == 1, event
    message = event["message"]
    assert leaky in message and "thread" in message, message
    assert f"in {PODS} pod(s)" in message, message
    assert v1 not in message and v2 not in message, message
