"""One reconcile against fake Kubernetes I/O: what is written, in which order, and when not.

The rollout core decides; these tests check the shell around it: the status
is recorded before any pod is told (the state ConfigMap and the distributor
follow it), a step writes nothing per pod, a refused status write tells no
pod, a spec the models refuse becomes a condition, container restarts reach
the analysis, and only the reports of pods the bundle's rule assigns count.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from logicbundle import contract, rollout
from logicbundle.api import conditions, names
from logicbundle.api.v1alpha1 import LogicBundleSpec, LogicBundleStatus
from logicbundle.controller._kube import KubeError
from logicbundle.controller._memory import SourceCheck
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._reconcile import (
    REPORT_GRACE,
    PodSnapshot,
    Runtime,
    _analysis_step,
    _builtin_sample,
    pod_facts,
    reconcile,
)
from logicbundle.controller._restarts import RestartLedger
from logicbundle.controller._source import BundleCache, SourceTools
from logicbundle.controller._summaries import AgentsView
from logicbundle.distributor import (
    BlobCache,
    BundleSummary,
    ReportStore,
    RuleTargets,
    TargetStore,
    bundle_rule,
)
from tests.rollout._fixtures import BUNDLE, D1, D2, INTERNAL, NS, T0, converge, installed, make_spec
from tests.rollout._fixtures import ok as verified_ok
from tests.rollout._fixtures import pods as pod_reports
from tests.rollout._fixtures import run as step


class FakeKube:
    """Records every write; ``refuse_status`` makes the status write fail like the API server."""

    def __init__(self, rt_targets: Callable[[], set[tuple[str, str]]]) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse_status = False
        self._targets = rt_targets
        self.version = 100
        self.spec: dict[str, Any] = {}
        """What the stored object's spec is, echoed back like the API server does."""

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        # What the distributor's target store held when the status was written.
        self.calls.append(("status", (dict(status), set(self._targets()))))
        if self.refuse_status:
            raise KubeError(f"cannot write the status of {namespace}/{name}: HTTP 409 Conflict")
        self.version += 1
        return {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "generation": 1,
                "resourceVersion": str(self.version),
            },
            "spec": self.spec,
            "status": {k: v for k, v in status.items() if v is not None},
        }

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        self.calls.append(("pod", (name, dict(annotations))))

    def publish_state(
        self, namespace: str, bundle: str, *, owner_uid: str | None, state: str
    ) -> None:
        self.calls.append(("state", (bundle, json.loads(state), set(self._targets()))))

    def delete_state(self, namespace: str, bundle: str) -> None:
        self.calls.append(("delete-state", bundle))


@pytest.fixture
def runtime(tmp_path: Path) -> tuple[Runtime, FakeKube, list[tuple[str, str, str]]]:
    targets = TargetStore()
    kube = FakeKube(targets.pods)
    events: list[tuple[str, str, str]] = []
    rt = Runtime(
        kube=kube,  # type: ignore[arg-type]
        source=SourceTools(
            reader=None,  # type: ignore[arg-type]
            cache=BundleCache(BlobCache(tmp_path)),
        ),
        agents=AgentsView(rules=RuleTargets(targets), reports=ReportStore()),
        metrics=OperatorMetrics(),
        post_event=lambda _body, type_, reason, message: events.append((type_, reason, message)),
    )
    rt.started -= REPORT_GRACE  # a running operator; the start-up grace has its own test
    return rt, kube, events


SPEC = make_spec(stages=[{**INTERNAL}, {"name": "everyone", "all": True}], skip_analysis=True)


def _in_flight_at_internal() -> tuple[LogicBundleStatus, list[rollout.PodReport]]:
    """D1 stable on two pods, D2 started: the internal pod (p000) assigned and running it."""
    reports = pod_reports(2, internal=[0])
    status, reports = installed(SPEC, reports)
    started = step(
        spec=SPEC,
        status=status,
        reports=reports,
        now=T0 + timedelta(seconds=2),
        verified=verified_ok(D2),
    )
    return started.status, converge(started, reports)


def _snapshots(reports: list[rollout.PodReport]) -> list[PodSnapshot]:
    """The pods as the operator's cache holds them: facts only, nothing about what they run."""
    return [
        PodSnapshot(
            namespace=NS,
            name=report.pod.name,
            uid=f"uid-{report.pod.name}",
            labels=dict(report.labels),
            annotations={contract.ANNOTATION_ADMITTED_AT: str(report.admitted)},
            has_agent=True,
        )
        for report in reports
    ]


def _agents_report(
    rt: Runtime, reports: list[rollout.PodReport], status: LogicBundleStatus
) -> None:
    """The distributor knows the pods and the published state; each agent reports what it runs.

    As in the operator: the bundle's watch event sets its rule from the stored status
    before its daemon reconciles, and the pod watch sets each pod's facts.
    """
    rt.agents.rules.set_bundle(NS, BUNDLE, bundle_rule(SPEC, rollout.published_state(status)))
    for snapshot, report in zip(_snapshots(reports), reports, strict=True):
        rt.agents.rules.set_pod(NS, snapshot.name, uid=snapshot.uid, facts=pod_facts(snapshot))
        if report.active is not None:
            _report(rt, snapshot.name, digest=report.active.digest, calls=0, errors=0)


def _body(spec: LogicBundleSpec | dict[str, Any], status: LogicBundleStatus) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"namespace": NS, "name": BUNDLE, "generation": 1, "resourceVersion": "7"},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(spec, LogicBundleSpec)
        else spec,
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def _source_checked_just_now(rt: Runtime) -> None:
    # The source step is covered by test_source_step.py; here it has nothing to do.
    rt.memories.get((NS, BUNDLE)).source = SourceCheck(
        generation=1, checked_at=rt.clock(), outcome=None
    )


def test_the_status_is_written_before_any_pod_or_agent_is_told_of_an_advance(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, _ = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)

    asyncio.run(
        reconcile(
            rt,
            body=_body(SPEC, status),
            pods=_snapshots(reports),
            now=T0 + timedelta(seconds=3),
        )
    )

    kinds = [kind for kind, _ in kube.calls]
    assert kinds == ["status", "state"], kube.calls
    written, _ = kube.calls[0][1]
    assert written["stage"] == "everyone"
    bundle, state, _ = kube.calls[1][1]
    stored = _merge(status.model_dump(mode="json", by_alias=True, exclude_none=True), written)
    assert bundle == BUNDLE and state == stored["targetState"], "the ConfigMap follows the status"
    assert state["stage"] == {"all": True} and state["candidate"] == D2
    # The distributor follows the published state: every pod is told D2, no pod is written.
    for pod in ("p000", "p001"):
        snapshot = rt.agents.targets.get(NS, pod, uid=f"uid-{pod}")
        assert snapshot.known and snapshot.targets[BUNDLE].digest == D2, pod


def test_the_status_written_seam_sits_between_the_status_write_and_the_publication(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where an e2e test kills the operator (``status-written``): the status stored, no state."""
    rt, kube, _ = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    seen: list[tuple[str, list[str]]] = []

    async def reached(point: str, *, namespace: str, name: str) -> None:
        seen.append((point, [kind for kind, _ in kube.calls]))

    monkeypatch.setattr("logicbundle.controller._reconcile.reached", reached)
    asyncio.run(
        reconcile(
            rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0 + timedelta(seconds=3)
        )
    )

    assert seen == [("status-written", ["status"])]
    assert [kind for kind, _ in kube.calls] == ["status", "state"]


def test_a_step_that_changes_nothing_writes_nothing_and_the_state_once(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, _ = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    body = _body(SPEC, status)
    asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0 + timedelta(seconds=3)))
    stored = copy.deepcopy(body)
    stored["status"] = kube.calls[0][1][0]
    kube.calls.clear()

    asyncio.run(reconcile(rt, body=stored, pods=_snapshots(reports), now=T0 + timedelta(seconds=4)))

    assert [kind for kind, _ in kube.calls if kind != "status"] == [], (
        "an unchanged state is not published again, and no pod is ever written"
    )


def test_the_writes_of_a_step_do_not_grow_with_the_pods(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """Issue 10's headline, at the shell: one status write and one state write per step."""
    rt, kube, _ = runtime
    many = pod_reports(500, internal=[0])
    status, many = installed(SPEC, many)
    started = step(
        spec=SPEC,
        status=status,
        reports=many,
        now=T0 + timedelta(seconds=2),
        verified=verified_ok(D2),
    )
    many = converge(started, many)
    _source_checked_just_now(rt)
    _agents_report(rt, many, started.status)

    asyncio.run(
        reconcile(
            rt,
            body=_body(SPEC, started.status),
            pods=_snapshots(many),
            now=T0 + timedelta(seconds=3),
        )
    )

    assert [kind for kind, _ in kube.calls] == ["status", "state"]
    targets = rt.agents.targets
    told = sum(
        1
        for p in many
        if targets.get(NS, p.pod.name, uid=f"uid-{p.pod.name}").targets[BUNDLE].digest == D2
    )
    assert told == 500


def test_a_refused_status_write_tells_no_pod_and_no_agent(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, events = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    kube.refuse_status = True

    with pytest.raises(KubeError, match="409"):
        asyncio.run(
            reconcile(
                rt,
                body=_body(SPEC, status),
                pods=_snapshots(reports),
                now=T0 + timedelta(seconds=3),
            )
        )

    assert [kind for kind, _ in kube.calls] == ["status"]
    told = rt.agents.targets.get(NS, "p001", uid="uid-p001").targets[BUNDLE].digest
    assert told == D1, "no agent learned of the advance that was not recorded"
    assert events == []


def test_a_spec_the_models_refuse_is_reported_as_stalled_invalid_spec_and_no_pod_is_touched(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, events = runtime
    status, reports = _in_flight_at_internal()
    spec = SPEC.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["verify"] = {
        "keyless": {"identities": [{"issuer": "https://issuer.example", "subjectRegex": "(["}]}
    }

    wait = asyncio.run(reconcile(rt, body=_body(spec, status), pods=_snapshots(reports), now=T0))

    assert wait > 0
    [(kind, (written, _))] = kube.calls
    assert kind == "status"
    assert written["observedGeneration"] == 1
    by_type = {c["type"]: c for c in written["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert (by_type["Stalled"]["status"], by_type["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert by_type["Reconciling"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in by_type.values())
    assert "subjectRegex is not a valid regular expression" in by_type["Stalled"]["message"]
    assert "([" not in by_type["Stalled"]["message"], "the user's value is not echoed"
    assert by_type[conditions.VERIFIED] == next(
        c
        for c in status.model_dump(mode="json", by_alias=True)["conditions"]
        if c["type"] == conditions.VERIFIED
    ), "the other conditions are kept"
    assert [(t, r) for t, r, _ in events] == [("Warning", "InvalidSpec")]
    assert rt.agents.targets.pods() == set(), "nothing is published for an invalid spec"


def test_an_invalid_spec_seen_again_writes_and_warns_only_once(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, events = runtime
    status, reports = _in_flight_at_internal()
    spec = SPEC.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec["verify"] = {"keyless": {"identities": [{"issuer": "https://i", "subjectRegex": "(["}]}}
    body = _body(spec, status)
    kube.spec = spec

    asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))
    body = copy.deepcopy(body)
    body["status"] = kube.calls[0][1][0] | {
        k: v for k, v in body["status"].items() if k not in {"conditions", "observedGeneration"}
    }
    asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0 + timedelta(1)))

    assert [kind for kind, _ in kube.calls] == ["status"]
    assert len(events) == 1


def test_a_pod_that_is_gone_or_loses_its_labels_is_no_longer_told_anything(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, _, _ = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    _agents_report(rt, reports, status)
    rt.agents.rules.set_pod(
        NS, "stranger", uid="uid-stranger", facts=contract.PodFacts(key=f"{NS}/stranger")
    )
    asyncio.run(
        reconcile(
            rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0 + timedelta(seconds=3)
        )
    )
    assert BUNDLE not in rt.agents.targets.get(NS, "stranger", uid="uid-stranger").targets, (
        "a pod the selector does not match is not the bundle's"
    )
    rt.agents.rules.forget_pod(NS, "p001")
    assert not rt.agents.targets.get(NS, "p001", uid="uid-p001").known


def test_a_restarted_operator_waits_for_the_agents_re_reports_before_judging_its_pods(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, kube, _ = runtime
    status, reports = _in_flight_at_internal()
    _source_checked_just_now(rt)
    rt.started = rt.clock()  # just started: no report yet from pods that were told D1/D2
    rt.agents.rules.set_bundle(NS, BUNDLE, bundle_rule(SPEC, rollout.published_state(status)))

    wait = asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))

    assert wait == 1.0 and kube.calls == [], "nothing judged (or written) without the reports"
    _agents_report(rt, reports, status)
    asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))
    assert [kind for kind, _ in kube.calls][:1] == ["status"], "the reports are in: it acts"


# -- restarts ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restarts_are_charged_to_the_digest_the_pod_ran_when_they_happened() -> None:
    clock = Clock()
    ledger = RestartLedger(clock=clock)
    seen = {"bundle": BUNDLE, "namespace": NS, "pod": "p0", "uid": "u0"}
    ledger.observe(**seen, restarts=4, digest=D1)  # baseline: earlier restarts charge nobody
    clock.now += 1
    ledger.observe(**seen, restarts=6, digest=D2)
    clock.now += 1
    ledger.observe(**seen, restarts=7, digest=D1)

    assert ledger.restarts(bundle=BUNDLE, namespace=NS, digest=D2, since=0) == 2
    assert ledger.restarts(bundle=BUNDLE, namespace=NS, digest=D1, since=0) == 1
    assert ledger.restarts(bundle=BUNDLE, namespace=NS, digest=D2, since=clock.now) == 0
    assert ledger.restarts(bundle=BUNDLE, namespace="other", digest=D2, since=0) == 0


def test_a_new_pod_under_an_old_name_or_a_count_that_went_down_charges_nothing() -> None:
    ledger = RestartLedger(clock=Clock())
    ledger.observe(bundle=BUNDLE, namespace=NS, pod="p0", uid="u0", restarts=3, digest=D2)
    ledger.observe(bundle=BUNDLE, namespace=NS, pod="p0", uid="u1", restarts=5, digest=D2)
    ledger.observe(bundle=BUNDLE, namespace=NS, pod="p0", uid="u1", restarts=1, digest=D2)

    assert ledger.restarts(bundle=BUNDLE, namespace=NS, digest=D2, since=0) == 0


def test_charges_older_than_the_window_are_dropped() -> None:
    clock = Clock()
    ledger = RestartLedger(window_seconds=60, clock=clock)
    ledger.observe(bundle=BUNDLE, namespace=NS, pod="p0", uid="u", restarts=0, digest=D2)
    ledger.observe(bundle=BUNDLE, namespace=NS, pod="p0", uid="u", restarts=1, digest=D2)
    clock.now += 61

    assert ledger.restarts(bundle=BUNDLE, namespace=NS, digest=D2, since=0) == 0


def test_the_builtin_sample_carries_the_restarts_so_the_restarts_gate_can_fail(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, _, _ = runtime
    for restarts in (0, 3):
        rt.restarts.observe(
            bundle=BUNDLE, namespace=NS, pod="p0", uid="u", restarts=restarts, digest=D2
        )

    sample = _builtin_sample(
        rt, namespace=NS, bundle=BUNDLE, digest=D2, since=0, summary=BundleSummary()
    )

    assert sample.restarts == 3
    spec = make_spec(
        analysis={
            "metrics": [{"name": "crashes", "builtin": "restarts", "max": 0.5, "minSamples": 1}]
        }
    )
    verdict = rollout.judge_builtin(
        analysis=spec.rollout.analysis,
        candidate=rollout.BuiltinSample(restarts=3, pods=1, calls=100),
        stable=rollout.BuiltinSample(restarts=0, pods=1, calls=100),
    )
    assert verdict.verdict == "Failed", verdict


# -- analysis ---------------------------------------------------------------------------------


def _report(
    rt: Runtime, pod: str, *, digest: str, calls: int, errors: int, namespace: str = NS
) -> None:
    from logicbundle.distributor._models import BundleReport, PodIdentity, Report, VersionCounters

    rt.agents.reports.record(
        PodIdentity(namespace=namespace, name=pod, uid=f"uid-{pod}", service_account="default"),
        Report(
            bundles={
                BUNDLE: BundleReport(
                    active=digest,
                    healthy=True,
                    versions={digest: VersionCounters(calls=calls, errors=errors)},
                )
            }
        ),
        targets=None,
    )


def test_builtin_metrics_are_judged_from_the_reports_under_the_prometheus_provider_too(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """A prometheus analysis with a builtin metric must not wait for data forever."""
    rt, _, _ = runtime
    spec = make_spec(
        analysis={
            "provider": "prometheus",
            # Nothing listens there: only the builtin metric can have data.
            "prometheus": {"address": "http://127.0.0.1:9"},
            "interval": "1s",
            "minSamples": 10,
            "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
        }
    )
    status, reports = _in_flight_at_internal()
    _agents_report(rt, reports, status)
    for pod, digest in (("p000", D2), ("p001", D1)):
        _report(rt, pod, digest=digest, calls=0, errors=0)
    _report(rt, "p000", digest=D2, calls=100, errors=30)
    _report(rt, "p001", digest=D1, calls=100, errors=0)
    summary = asyncio.run(rt.agents.summaries.summary(NS, BUNDLE, since=None))

    verdict = asyncio.run(
        _analysis_step(
            rt,
            namespace=NS,
            name=BUNDLE,
            spec=spec,
            status=status,
            now=T0 + timedelta(minutes=5),
            summary=summary,
        )
    )

    assert verdict is not None
    assert verdict.verdict == "Failed", verdict


def test_a_replica_that_does_not_answer_is_missing_data_never_a_pass(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    rt, _, _ = runtime
    spec = make_spec(
        analysis={
            "interval": "1s",
            "minSamples": 1,
            "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
        }
    )
    status, _ = _in_flight_at_internal()

    verdict = asyncio.run(
        _analysis_step(
            rt,
            namespace=NS,
            name=BUNDLE,
            spec=spec,
            status=status,
            now=T0 + timedelta(minutes=5),
            summary=None,
        )
    )

    assert verdict is not None and verdict.verdict == "NoData", verdict
    assert "did not answer" in verdict.reason, verdict


def test_counters_from_pods_the_bundle_does_not_assign_or_from_another_namespace_are_ignored(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """Guards against skewing a verdict: any pod can get a token for the distributor."""
    rt, _, _ = runtime
    status, reports = _in_flight_at_internal()
    _agents_report(rt, reports, status)
    for pod, namespace in (("p000", NS), ("intruder", NS), ("p000", "other")):
        _report(rt, pod, digest=D2, calls=0, errors=0, namespace=namespace)
        _report(rt, pod, digest=D2, calls=100, errors=90, namespace=namespace)
    _report(rt, "p000", digest=D2, calls=200, errors=0)

    summary = asyncio.run(rt.agents.summaries.summary(NS, BUNDLE, since=None))
    assert summary is not None
    sample = _builtin_sample(rt, namespace=NS, bundle=BUNDLE, digest=D2, since=0, summary=summary)

    assert (sample.calls, sample.errors, sample.pods) == (200, 90, 1)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 applied, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # A rollback: the published state loses its candidate and stage.
        (
            {"targetState": {"bundle": "b", "stable": D1, "candidate": D2, "stage": {"all": True}}},
            {"targetState": {"bundle": "b", "stable": D1}},
        ),
        ({"a": {"b": {"c": 1, "d": 2}}, "e": [1, 2]}, {"a": {"b": {"c": 1}}, "e": [1]}),
        ({"a": 1, "b": {"c": 1}}, {"b": 2}),
        ({"a": {"x": 1}}, {"a": {"y": 2}}),
    ],
)
def test_the_status_merge_patch_reaches_what_was_decided_even_inside_objects(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    from logicbundle.controller._reconcile import _with_nulls

    assert _merge(old, _with_nulls(old, new)) == new
