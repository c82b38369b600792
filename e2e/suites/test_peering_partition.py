"""A leader alive but cut off from the API server stands down before the standby takes over.

Issue 11's fault matrix: two operator replicas peer through kopf; the leader's
every connection to the kube-apiserver (kopf's and the controller's) goes through
a TCP relay (:mod:`e2e.harness.relay`) that the test cuts silently: a
partition, requests hang instead of failing, and what was sent into it is
delivered when it heals.  kopf's peering is advisory: the standby resumes when
the leader's record lapses (one lifetime after its last renewal), while the
leader, hearing nothing, would go on acting, its distributor serving the targets
it holds in memory, and would act again the moment the partition heals.

What must hold, from each replica's own timestamped log: the leader stands down
(:mod:`logicbundle.controller._leader`, the fence) *before* the standby resumes,
so that no two replicas act at once; the standby takes over within a bound and
acts; when the partition heals the old leader acts no more, and restarted in its
pod (what the kubelet does with a container that exits) it stands by.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.cluster import Cluster
from e2e.harness.operator import (
    EXAMPLES,
    KeyPair,
    Operator,
    apply,
    logicbundle,
    push_bundle,
    wait_condition,
)
from e2e.harness.proc import wait_for
from e2e.harness.relay import Relay
from e2e.harness.services import Registry
from logicbundle.api import names
from logicbundle.controller._leader import (
    EXIT_LEASE_LOST,
    FENCE_MARGIN,
    FENCE_READ_TIMEOUT,
    POLL_INTERVAL,
    RENEW_AHEAD,
)

PEERING_CRD = (
    Path(__file__).resolve().parents[2]
    / "charts"
    / "logicbundle-operator"
    / "crds"
    / "kopf.dev_clusterkopfpeerings.yaml"
)
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"
STANDING_BY = re.compile(r"not the leader \(.*higher priority")
STOOD_DOWN = "lease lost: standing down"
LIFETIME = 60
"""kopf's peering lifetime (its default, which the operator keeps)."""
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _pod(name: str) -> dict[str, Any]:
    """A kwok Pod for one replica to label (nothing runs in it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "logicbundle-operator"}},
        "spec": {"containers": [{"name": "operator", "image": "registry.invalid/logicbundle:e2e"}]},
    }


def _labelled(cluster: Cluster, namespace: str, pods: tuple[str, ...]) -> set[str]:
    found = set()
    for pod in pods:
        obj = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if (obj["metadata"].get("labels") or {}).get(names.LABEL_LEADER) == "true":
            found.add(pod)
    return found


def _stamps(log: Path, needle: str) -> list[datetime.datetime]:
    """When each log line containing ``needle`` was written (the operator's asctime)."""
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        match = _STAMP.match(line)
        if match and needle in line:
            stamps.append(datetime.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f"))
    return stamps


def _relayed_kubeconfig(cluster: Cluster, relay: Relay, path: Path) -> Path:
    """The cluster's kubeconfig with the server behind ``relay`` (same certificate: same IP)."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://{relay.address}"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_leader_cut_off_from_the_api_server_stands_down_before_the_standby_takes_over(
    cluster: Cluster, logicbundle_crd: str, registry: Registry, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(PEERING_CRD))
    cluster.wait_established("clusterkopfpeerings.kopf.dev")
    name = f"partition-{namespace}"[:60]
    peering_path = f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=f"apiVersion: kopf.dev/v1\nkind: ClusterKopfPeering\nmetadata:\n  name: {name}\n",
    )
    pods = ("operator-a", "operator-b")
    for pod in pods:
        cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", _pod(pod))
    host, _, port = cluster.server.removeprefix("https://").rpartition(":")
    relay = Relay((host, int(port)))
    # The same cluster, reached through the relay (Operator.start takes KUBECONFIG from it).
    relayed = dataclasses.replace(
        cluster, kubeconfig=_relayed_kubeconfig(cluster, relay, tmp_path / "relayed")
    )

    key = KeyPair.generate()
    push_bundle(
        registry.host,
        EXAMPLES / "bundles" / "pricing-v1",
        repository=f"{namespace}/pricing",
        tag="v1",
        version="1.0.0",
        key=key,
    )
    ref = f"{registry.host}/{namespace}/pricing:v1"
    bundle_path = f"/apis/logicbundle.io/v1alpha1/namespaces/{namespace}/logicbundles/pricing"

    def extra(pod: str) -> tuple[str, ...]:
        return (
            *("--peering", name, "--namespace", namespace),
            *("--pod-name", pod, "--pod-namespace", namespace),
        )

    def observed() -> Any:
        return (cluster.request("GET", bundle_path).get("status") or {}).get("observedGeneration")

    # The leader (the oldest replica) reaches the API server through the relay only.
    first = Operator.start(relayed, tmp_path / "a", name="replica-a", extra=extra("operator-a"))
    started = [first]
    try:
        wait_for(
            lambda: (
                f"{namespace}/operator-a"
                in (cluster.request("GET", peering_path).get("status") or {})
            ),
            what="the first replica's heartbeat",
            timeout=60,
            watch=[first.process],
        )
        second = Operator.start(
            cluster, tmp_path / "b", name="replica-b", extra=extra("operator-b")
        )
        started.append(second)
        wait_for(
            lambda: RESUMED in first.process.log_path.read_text(),
            what="the first replica acting",
            timeout=60,
            watch=[first.process],
        )
        wait_for(
            lambda: STANDING_BY.search(second.process.log_path.read_text()),
            what="the second replica standing by",
            timeout=60,
            watch=[second.process],
        )
        wait_for(
            lambda: _labelled(cluster, namespace, pods) == {"operator-a"},
            what="the first replica's pod labelled the leader",
            timeout=30,
        )
        apply(
            cluster,
            namespace,
            logicbundle("pricing", ref=ref, key=key, selector={"app": "web"}, interval="1h"),
        )
        wait_condition(cluster, namespace, "pricing", "Verified", "True", timeout=60)
        assert observed() == 1
        # A healthy leader keeps its lease: it renews its record itself, RENEW_AHEAD
        # before it lapses (kopf's keepalive would come 5 to 10 s before), and goes on.
        identity = f"{namespace}/operator-a"

        def lastseen() -> datetime.datetime:
            status = cluster.request("GET", peering_path).get("status") or {}
            return datetime.datetime.fromisoformat(status[identity]["lastseen"])

        before = lastseen()

        def renewal() -> datetime.datetime | None:
            seen = lastseen()
            return seen if seen > before else None

        renewed = wait_for(
            renewal,
            what="the leader's record renewed",
            timeout=LIFETIME,
            watch=[first.process],
        )
        assert (renewed - before).total_seconds() <= LIFETIME - RENEW_AHEAD + 2 * POLL_INTERVAL
        assert first.process.alive()

        # The partition: the leader stays alive, every request of its hangs.
        relay.cut()
        cut_at = datetime.datetime.now()
        resumed = wait_for(
            lambda: _stamps(second.process.log_path, RESUMED),
            what="the standby taking over",
            timeout=LIFETIME + 60,
            watch=[second.process],
        )
        takeover = resumed[0]
        stood_down = _stamps(first.process.log_path, STOOD_DOWN)
        first_alive = first.process.alive()
        # Evidence for the report either way.
        print(
            f"cut at {cut_at}; standby resumed at {takeover} "
            f"({(takeover - cut_at).total_seconds():.1f} s); leader stood down at "
            f"{stood_down[0] if stood_down else None}"
            + (f" ({(stood_down[0] - cut_at).total_seconds():.1f} s)" if stood_down else "")
            + f"; leader process alive at takeover: {first_alive}"
        )
        assert stood_down, (
            "the leader cut off from the API server went on acting when the standby took over"
        )
        assert stood_down[0] < takeover, f"stood down at {stood_down[0]}, taken over at {takeover}"
        # The fence's promise is FENCE_MARGIN less one read (4.5 s); a loaded machine's
        # late wake-ups may eat into it, never to the point of overlapping.
        assert (takeover - stood_down[0]).total_seconds() >= FENCE_MARGIN - FENCE_READ_TIMEOUT - 2
        # Standing down is leaving: the distributor and the handlers went with the process.
        wait_for(
            lambda: not first.process.alive(),
            what="the old leader's process exiting",
            timeout=10,
        )
        assert first.process.popen.returncode == EXIT_LEASE_LOST
        # The new leader acts: labelled, and it reconciles a change of the spec.
        wait_for(
            lambda: "operator-b" in _labelled(cluster, namespace, pods),
            what="the new leader's label",
            timeout=30,
            watch=[second.process],
        )
        apply(
            cluster,
            namespace,
            logicbundle("pricing", ref=ref, key=key, selector={"app": "other"}, interval="1h"),
        )
        wait_for(lambda: observed() == 2, what="generation 2 reconciled", timeout=60)

        # The partition heals: whatever the old leader had sent into it is delivered.
        relay.restore()
        # Restarted in its pod (the kubelet's doing), it is the youngest now: it stands by,
        # and clears the label its predecessor could not.
        restarted = Operator.start(
            relayed, tmp_path / "a", name="replica-a-restarted", extra=extra("operator-a")
        )
        started.append(restarted)
        wait_for(
            lambda: STANDING_BY.search(restarted.process.log_path.read_text()),
            what="the restarted first replica standing by",
            timeout=60,
            watch=[restarted.process],
        )
        wait_for(
            lambda: _labelled(cluster, namespace, pods) == {"operator-b"},
            what="the leader label on the new leader's pod only",
            timeout=30,
            watch=[restarted.process],
        )
        # The new leader still acts (a pause, if the old leader's last heartbeat was
        # delivered late, ends once the restarted replica rewrites that record).
        apply(
            cluster,
            namespace,
            logicbundle("pricing", ref=ref, key=key, selector={"app": "web"}, interval="1h"),
        )
        wait_for(lambda: observed() == 3, what="generation 3 reconciled", timeout=120)
        assert RESUMED not in restarted.process.log_path.read_text()
        # Never two at once: every pause of the new leader came before a resume of its.
        b_resumes = _stamps(second.process.log_path, RESUMED)
        b_pauses = _stamps(second.process.log_path, PAUSED)
        print(f"new leader resumed at {b_resumes}, paused at {b_pauses}")
    finally:
        for replica in started:
            replica.stop()
        relay.close()
        cluster.kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found")
