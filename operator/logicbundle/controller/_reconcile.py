"""One reconcile of one LogicBundle, as an ordered list of small steps.

1. parse the spec and status;
2. source: resolve the reference and verify it, every ``interval`` or when
   the spec changed (``_source``), caching the verified bytes for the
   distributor;
3. pods: what each selected pod is assigned (its annotation), runs (the
   agents' reports, else the ``active.<bundle>`` annotation the operator wrote
   earlier, so a restarted operator knows too) and whether it failed;
4. analysis, when due: the agents' counters (``builtin``) or Prometheus;
5. the pure :func:`logicbundle.rollout.step`;
6. status, written in one place;
7. apply: the distributor's target store (agents learn in milliseconds),
   then the pods' target annotations (the durable record), in parallel;
8. an event for every transition.

The status is written before any pod is told anything, so that what pods are
told is always what the stored status implies.  Were it the other way round,
an operator killed between the two (or a status write refused) would resume
from the older status: a rollback decided but not recorded would put the
failed candidate back on its pods, and an advance not recorded would move
pods back and forth.  Written first, the worst a crash leaves is a status
ahead of the pods, which the next reconcile brings the pods up to.

All state lives in the resource's status and the pods' annotations; the
in-memory caches here only save work, so the operator may be killed at any
instant and resume.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from logicbundle import rollout
from logicbundle.api import conditions as cond
from logicbundle.api import names
from logicbundle.api.actions import InvalidActionError, RequestedAction, parse_action
from logicbundle.api.conditions import Condition, with_condition
from logicbundle.api.formats import parse_duration
from logicbundle.api.v1alpha1 import LogicBundleSpec, LogicBundleStatus
from logicbundle.bundle import AuditRejectedError
from logicbundle.controller._kube import Kube
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._restarts import RestartLedger
from logicbundle.controller._source import (
    BundleCache,
    ObjectReader,
    RegistryClients,
    SourceOutcome,
    resolve_and_verify,
)
from logicbundle.distributor import BundleTarget, ReportStore, Split, TargetStore
from logicbundle.errors import LogicBundleError
from logicbundle.trust import TrustVerifier

logger = logging.getLogger("logicbundle.controller")

IN_FLIGHT_REQUEUE = 2.0
"""Seconds between reconciles while a rollout runs (reports also wake it at once)."""
RETRY_REQUEUE = 15.0
"""Seconds before retrying after a temporary failure (registry down, missing Secret)."""


@dataclass(frozen=True)
class PodSnapshot:
    """What the controller needs to know of one opted-in pod (from the pod index)."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    has_agent: bool
    restarts: int = 0
    deleting: bool = False


def snapshot_pod(body: Mapping[str, Any]) -> PodSnapshot:
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    status = body.get("status", {})
    containers = [c.get("name") for c in spec.get("initContainers", []) or []]
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses", []) or [])
    return PodSnapshot(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        has_agent=names.AGENT_CONTAINER in containers,
        restarts=restarts,
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass
class _SourceState:
    generation: int
    checked_at: float  # monotonic
    outcome: SourceOutcome | None
    error: str | None = None


@dataclass
class Runtime:
    """What the operator shares across reconciles: stores, caches, clients."""

    kube: Kube
    reader: ObjectReader
    targets: TargetStore
    reports: ReportStore
    cache: BundleCache
    metrics: OperatorMetrics
    post_event: Callable[[Mapping[str, Any], str, str, str], None]
    clients: RegistryClients = field(default_factory=RegistryClients)
    verifiers: dict[bytes | None, TrustVerifier] = field(default_factory=dict)
    sources: dict[tuple[str, str], _SourceState] = field(default_factory=dict)
    pod_targets: dict[tuple[str, str], dict[str, BundleTarget]] = field(default_factory=dict)
    last_warnings: dict[tuple[str, str], str] = field(default_factory=dict)
    written: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """Per LogicBundle, the object as our last status patch left it (see :func:`_freshest`)."""
    restarts: RestartLedger = field(default_factory=RestartLedger)
    clock: Callable[[], float] = time.monotonic


# -- step 2: the source ---------------------------------------------------------------------


async def _source_step(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    namespace: str,
    name: str,
    generation: int,
    spec: LogicBundleSpec,
) -> tuple[rollout.VerifiedDigest | None, float | None]:
    """The verification outcome when the source was checked now, and when to check again."""
    key = (namespace, name)
    interval = parse_duration(spec.source.interval).total_seconds()
    state = rt.sources.get(key)
    now = rt.clock()
    if state is not None and state.generation == generation:
        wait = state.checked_at + (RETRY_REQUEUE if state.error else interval) - now
        if wait > 0:
            return None, wait
    started = time.perf_counter()
    try:
        outcome = await asyncio.to_thread(
            resolve_and_verify,
            spec,
            namespace=namespace,
            reader=rt.reader,
            clients=rt.clients,
            verifiers=rt.verifiers,
            cache=rt.cache,
        )
    except LogicBundleError as exc:
        # Registry unreachable, missing Secret...: keep what we have, say so, retry.
        rt.sources[key] = _SourceState(
            generation, now, state.outcome if state else None, exc.message
        )
        if _warn_once(rt, key, f"{exc.reason}: {exc.message}"):
            rt.post_event(body, "Warning", exc.reason, exc.diagnostics())
        return None, RETRY_REQUEUE
    finally:
        rt.metrics.verify_seconds.observe(time.perf_counter() - started)
    rt.sources[key] = _SourceState(generation, now, outcome)
    rt.last_warnings.pop(key, None)
    if outcome.error is not None:
        rt.metrics.verification_failures.labels(namespace=namespace, bundle=name).inc()
        audit = isinstance(outcome.error, AuditRejectedError)
        return (
            rollout.VerifiedDigest(
                digest=outcome.digest,
                ok=False,
                ref=spec.source.ref,
                reason="AuditRejected" if audit else "VerificationFailed",
                message=outcome.error.message,
            ),
            interval,
        )
    if outcome.verified is None:  # no error means verified; never assume it
        return None, RETRY_REQUEUE
    who = outcome.verified.identity
    return (
        rollout.VerifiedDigest(
            digest=outcome.digest,
            ok=True,
            ref=spec.source.ref,
            reason="VerificationSucceeded",
            message=f"signed by {who} ({outcome.verified.method})",
        ),
        interval,
    )


def _source_error(rt: Runtime, key: tuple[str, str], generation: int) -> str | None:
    """Why the last check of the current generation's source failed (None: it did not)."""
    state = rt.sources.get(key)
    if state is None or state.generation != generation or not state.error:
        return None
    return state.error


def _warn_once(rt: Runtime, key: tuple[str, str], message: str) -> bool:
    """Log a warning unless it is the same as the last one; True when it was new."""
    if rt.last_warnings.get(key) == message:
        return False
    rt.last_warnings[key] = message
    logger.warning("%s/%s: %s", key[0], key[1], message)
    return True


# -- step 3: the pods -----------------------------------------------------------------------


def _pod_report(rt: Runtime, pod: PodSnapshot, *, bundle: str) -> rollout.PodReport:
    assigned_text = pod.annotations.get(names.target_annotation(bundle))
    assigned = _parse_target(assigned_text)
    active: rollout.PodTarget | None = None
    healthy = False
    failure: rollout.PodFailure | None = None
    stored = rt.reports.latest(pod.namespace, pod.name)
    report = stored.report.bundles.get(bundle) if stored else None
    if report is not None:
        if report.active:
            if assigned is not None and assigned.digest == report.active:
                active = assigned  # the split rides along with its primary
            else:
                active = rollout.PodTarget(digest=report.active)
        healthy = bool(report.healthy) and report.active is not None
        error = report.last_error
        if error is not None and error.digest:
            at = error.at or datetime.now(UTC)
            failure = rollout.PodFailure(digest=error.digest, at=at, message=error.message)
    else:
        # No report yet (a restarted operator): what the operator last recorded on the pod.
        recorded = pod.annotations.get(names.active_annotation(bundle))
        if recorded:
            active = assigned if assigned and assigned.digest == recorded else None
            active = active or rollout.PodTarget(digest=recorded)
            healthy = True
    return rollout.PodReport(
        pod=rollout.PodIdentity(
            namespace=pod.namespace,
            name=pod.name,
            cohort_key=pod.annotations.get(names.ANNOTATION_COHORT_KEY),
        ),
        labels=pod.labels,
        has_agent=pod.has_agent,
        assigned=assigned,
        active=active,
        healthy=healthy,
        failure=failure,
    )


def _parse_target(text: str | None) -> rollout.PodTarget | None:
    if not text:
        return None
    try:
        return rollout.parse_target(text)
    except ValueError:
        return None


# -- step 4: analysis -----------------------------------------------------------------------


def _builtin_sample(
    rt: Runtime,
    *,
    namespace: str,
    bundle: str,
    digest: str,
    since: float,
    pods: Collection[str] | None = None,
) -> rollout.BuiltinSample:
    """One digest's figures from the reports of ``pods`` (the bundle's selected pods)."""
    window = rt.reports.version_window(bundle, digest, since=since, namespace=namespace, pods=pods)
    cumulative, buckets = 0, []
    for k, count in enumerate(window.latency_buckets):
        cumulative += count
        buckets.append(((2**k) / 1e9, cumulative))
    return rollout.BuiltinSample(
        calls=window.calls,
        errors=window.errors,
        latency_buckets=tuple(buckets),
        restarts=rt.restarts.restarts(
            bundle=bundle, namespace=namespace, digest=digest, since=since
        ),
        pods=window.pods,
    )


def _observe_restarts(
    rt: Runtime,
    *,
    namespace: str,
    bundle: str,
    pods: Sequence[PodSnapshot],
    reports: Sequence[rollout.PodReport],
) -> None:
    """Charge new container restarts to the digest each pod runs (see :mod:`._restarts`)."""
    running = {r.pod.name: (r.active or r.assigned) for r in reports}
    for pod in pods:
        target = running.get(pod.name)
        rt.restarts.observe(
            bundle=bundle,
            namespace=namespace,
            pod=pod.name,
            uid=pod.uid,
            restarts=pod.restarts,
            digest=target.digest if target is not None else None,
        )
    rt.restarts.forget_pods(bundle=bundle, namespace=namespace, keep=running)


def _prometheus_value(address: str, query: str, timeout: float) -> float | None:
    url = address.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - from the spec
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise LogicBundleError(f"Prometheus refused the query: {body.get('error', '?')}")
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        return float(result[1])
    if not result:
        return None
    return float(result[0]["value"][1])


async def _analysis_step(
    rt: Runtime,
    *,
    namespace: str,
    name: str,
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    now: datetime,
    selected: Collection[str],
) -> rollout.AnalysisVerdict | None:
    """The verdict on the candidate, when one is due; builtin figures from ``selected`` only."""
    if status is None or not status.candidate_digest or not status.stable_digest:
        return None
    if not rollout.analysis_due(spec=spec, status=status, now=now):
        return None
    analysis = spec.rollout.analysis
    start = (
        status.analysis.last_measured_at if status.analysis else None
    ) or status.stage_started_at
    age = (now - start).total_seconds() if start else analysis_window_default(spec)
    since = rt.clock() - max(age, 0.0)
    candidate, stable = status.candidate_digest, status.stable_digest
    # Builtin metrics always come from the agents' reports, whatever the provider;
    # with `prometheus`, the metrics with a query are asked of Prometheus as well.
    candidate_sample = _builtin_sample(
        rt, namespace=namespace, bundle=name, digest=candidate, since=since, pods=selected
    )
    stable_sample = _builtin_sample(
        rt, namespace=namespace, bundle=name, digest=stable, since=since, pods=selected
    )
    values: dict[str, rollout.MetricValues] = {
        metric.name: rollout.MetricValues(
            candidate=rollout.builtin_value(metric, candidate_sample),
            stable=rollout.builtin_value(metric, stable_sample),
        )
        for metric in analysis.effective_metrics()
        if metric.builtin is not None
    }
    if analysis.provider == "prometheus" and analysis.prometheus is not None:
        address = str(analysis.prometheus.address)
        timeout = parse_duration(analysis.prometheus.timeout).total_seconds()
        for metric in analysis.effective_metrics():
            if metric.query is None:
                continue
            figures = []
            for digest in (candidate, stable):
                query = rollout.render_query(
                    metric.query,
                    namespace=namespace,
                    bundle=name,
                    digest=digest,
                    stable_digest=stable,
                )
                try:
                    value = await asyncio.to_thread(_prometheus_value, address, query, timeout)
                except (OSError, ValueError, KeyError, LogicBundleError) as exc:
                    _warn_once(rt, (namespace, name), f"PrometheusUnavailable: {exc}")
                    error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    figures.append(rollout.MetricValue(value=None, error=error))
                    continue
                figures.append(rollout.MetricValue(value=value))
            values[metric.name] = rollout.MetricValues(candidate=figures[0], stable=figures[1])
    verdict = rollout.judge(analysis=analysis, values=values)
    rt.metrics.analysis_verdicts.labels(
        namespace=namespace, bundle=name, verdict=verdict.verdict
    ).inc()
    return verdict


def analysis_window_default(spec: LogicBundleSpec) -> float:
    return parse_duration(spec.rollout.analysis.interval).total_seconds()


# -- the whole reconcile --------------------------------------------------------------------


def _requested_action(
    rt: Runtime, body: Mapping[str, Any], key: tuple[str, str]
) -> RequestedAction | None:
    value = (body.get("metadata", {}).get("annotations") or {}).get(
        names.ANNOTATION_REQUESTED_ACTION
    )
    if not value:
        return None
    try:
        return parse_action(value)
    except InvalidActionError as exc:
        if rt.last_warnings.get(key) != f"action:{value}":
            rt.last_warnings[key] = f"action:{value}"
            rt.post_event(body, "Warning", "InvalidAction", f"ignored {value!r}: {exc}")
        return None


def _bundle_target(spec: LogicBundleSpec, name: str, target: rollout.PodTarget) -> BundleTarget:
    split = (
        Split(candidate=target.candidate, weight=target.weight)
        if target.candidate is not None
        else None
    )
    # No mount path: volumes are fixed when the pod is created, so the layout the webhook
    # wrote into the agent's configuration is the one the application sees.
    return BundleTarget(
        digest=target.digest,
        split=split,
        notify=spec.target.notify,
        health_check=spec.target.health_check,
        source=spec.source.ref.split("@", 1)[0],
    )


async def _apply(
    rt: Runtime,
    *,
    name: str,
    spec: LogicBundleSpec,
    pods: Mapping[tuple[str, str], PodSnapshot],
    assignments: Mapping[rollout.PodIdentity, rollout.PodTarget],
) -> int:
    """Push assignments: target store first, then pod annotations in parallel. Returns patches."""
    annotation = names.target_annotation(name)
    patches = []
    for identity, target in assignments.items():
        key = (identity.namespace, identity.name)
        pod = pods.get(key)
        if pod is None:
            continue
        per_pod = rt.pod_targets.setdefault(key, {})
        per_pod[name] = _bundle_target(spec, name, target)
        rt.targets.set_targets(identity.namespace, identity.name, per_pod, uid=pod.uid or None)
        value = rollout.format_target(target)
        if pod.annotations.get(annotation) != value:
            patches.append(
                rt.kube.run(
                    rt.kube.patch_pod_annotations,
                    identity.namespace,
                    identity.name,
                    {annotation: value},
                )
            )
    await asyncio.gather(*patches)
    return len(patches)


async def reconcile(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    pods: Sequence[PodSnapshot],
    now: datetime | None = None,
) -> float:
    """Reconcile one LogicBundle once; return the seconds until it should run again."""
    started = time.perf_counter()
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    body = _freshest(body, rt.written.get(key))
    meta = body["metadata"]
    namespace, name = key
    generation = int(meta.get("generation") or 0)
    now = now or datetime.now(UTC)
    raw_status = body.get("status") or {}
    try:
        spec = LogicBundleSpec.model_validate(body.get("spec") or {})
        status = LogicBundleStatus.model_validate(raw_status) if raw_status else None
    except ValidationError as exc:
        await _invalid_spec(rt, body=body, raw_status=raw_status, error=exc, now=now)
        return 300.0

    verified, source_wait = await _source_step(
        rt, body=body, namespace=namespace, name=name, generation=generation, spec=spec
    )
    selected = {
        (p.namespace, p.name): p
        for p in pods
        if p.namespace == namespace
        and not p.deleting
        and spec.target.pod_selector.matches(dict(p.labels))
    }
    reports = [_pod_report(rt, p, bundle=name) for p in selected.values()]
    _observe_restarts(
        rt, namespace=namespace, bundle=name, pods=list(selected.values()), reports=reports
    )
    _forget_gone_pods(rt, namespace=namespace, bundle=name, pods=pods)
    verdict = await _analysis_step(
        rt,
        namespace=namespace,
        name=name,
        spec=spec,
        status=status,
        now=now,
        selected={pod_name for _, pod_name in selected},
    )
    decision = rollout.step(
        bundle_name=name,
        generation=generation,
        spec=spec,
        status=status,
        pods=reports,
        verdict=verdict,
        action=_requested_action(rt, body, key),
        verified=verified,
        now=now,
        source_error=_source_error(rt, key, generation),
    )
    new_status = decision.status.with_summary()
    dumped = new_status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if dumped != raw_status:
        # Before any pod is told: see the module docstring. A refused write raises,
        # and no pod learns of a decision that was not recorded.
        stored = await rt.kube.run(
            rt.kube.patch_status, namespace, name, _with_nulls(raw_status, dumped)
        )
        if stored is None:
            return 60.0  # the LogicBundle is gone; its deletion releases the pods
        rt.written[key] = stored
    await _apply(rt, name=name, spec=spec, pods=selected, assignments=decision.assignments)
    for event in decision.events:
        rt.post_event(body, event.type, event.reason, event.message)
    _report_pods_without_agent(rt, body, status, new_status, selected)
    rt.metrics.observe_status(namespace=namespace, name=name, status=new_status)
    rt.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    waits = [w for w in (source_wait,) if w is not None]
    if decision.requeue_after is not None:
        waits.append(decision.requeue_after.total_seconds())
    if new_status.candidate_digest and not _stalled(new_status):
        waits.append(IN_FLIGHT_REQUEUE)
    return max(0.05, min(waits)) if waits else 60.0


async def _invalid_spec(
    rt: Runtime,
    *,
    body: Mapping[str, Any],
    raw_status: Mapping[str, Any],
    error: ValidationError,
    now: datetime,
) -> None:
    """A spec the CRD schema admitted but the models refuse: say so in the conditions.

    ``Stalled=True`` and ``Ready=False`` (reason ``InvalidSpec``) for this
    generation, so ``kubectl wait``, Flux and Argo CD fail fast instead of
    waiting; the rest of the status (stable digest, history) is kept, and no
    pod is touched.  The message names the fields and the problems, never the
    values (which came from the user and may be long).
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 0)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'spec'}: {e['msg']}"
        for e in error.errors(include_url=False, include_input=False)
    )
    message = f"spec cannot be acted on: {problems}"[:1024]
    try:
        old = [Condition.model_validate(c) for c in raw_status.get("conditions") or []]
    except ValidationError:
        old = []
    conditions_ = tuple(old)
    for type_, value in (
        (cond.READY, cond.FALSE),
        (cond.STALLED, cond.TRUE),
        (cond.RECONCILING, cond.FALSE),
    ):
        conditions_ = with_condition(
            conditions_,
            Condition(
                type=type_,
                status=value,
                observed_generation=generation,
                last_transition_time=now,
                reason=cond.INVALID_SPEC,
                message=message,
            ),
        )
    patch = {
        "observedGeneration": generation,
        "conditions": [
            c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions_
        ],
    }
    unchanged = (
        raw_status.get("observedGeneration") == generation
        and raw_status.get("conditions") == patch["conditions"]
    )
    if _warn_once(rt, (namespace, name), f"InvalidSpec: {message}"):
        rt.post_event(body, "Warning", cond.INVALID_SPEC, message)
    if not unchanged:
        stored = await rt.kube.run(rt.kube.patch_status, namespace, name, patch)
        if stored is not None:
            rt.written[(namespace, name)] = stored


def _forget_gone_pods(
    rt: Runtime, *, namespace: str, bundle: str, pods: Sequence[PodSnapshot]
) -> None:
    """Drop this bundle's targets for pods of ``namespace`` that no longer exist.

    The pod index loses a pod when it is deleted; without this, the target
    store and the per-pod targets would grow with every pod ever created.
    """
    present = {p.name for p in pods if p.namespace == namespace and not p.deleting}
    for key in [k for k in rt.pod_targets if k[0] == namespace and k[1] not in present]:
        per_pod = rt.pod_targets[key]
        if per_pod.pop(bundle, None) is None:
            continue
        if per_pod:
            rt.targets.set_targets(key[0], key[1], per_pod)
        else:
            del rt.pod_targets[key]
            rt.targets.forget(key[0], key[1])
            rt.reports.forget(key[0], key[1])


def _report_pods_without_agent(
    rt: Runtime,
    body: Mapping[str, Any],
    old: LogicBundleStatus | None,
    new: LogicBundleStatus,
    selected: Mapping[tuple[str, str], PodSnapshot],
) -> None:
    """Warn when opted-in pods without the agent appear (made while the webhook was down)."""
    before = old.pods.without_agent if old is not None and old.pods is not None else 0
    now = new.pods.without_agent if new.pods is not None else 0
    if now > before:
        missing = sorted(name for (_, name), pod in selected.items() if not pod.has_agent)
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        rt.post_event(
            body,
            "Warning",
            "PodsWithoutAgent",
            f"{now} opted-in pods have no reload agent ({shown}); they were created while the "
            "injection webhook was unavailable: restart them to inject the agent",
        )


def _stalled(status: LogicBundleStatus) -> bool:
    return any(c.type == "Stalled" and c.status == "True" for c in status.conditions)


def _resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _freshest(body: Mapping[str, Any], written: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``body``, or the object our last status patch returned when ``body`` is older.

    The daemon's body is refreshed by the watch, which delivers our own status
    patch a moment after we made it; a report waking the daemon in between
    would otherwise step the rollout from the status before that patch (and
    could send pods back to the old stable) and compute its merge patch
    against the wrong base, which can leave fields that should have been
    nulled.  resourceVersions are opaque to clients, but the API server
    backed by etcd hands out increasing integers; anything else compares as 0
    and ``body`` wins.
    """
    if written is None or _resource_version(written) <= _resource_version(body):
        return body
    return written


def _with_nulls(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch from ``old`` to ``new``: fields that disappeared become null."""
    patch: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
