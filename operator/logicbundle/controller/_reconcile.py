"""One reconcile of one LogicBundle, as an ordered list of small steps.

1. parse the spec and status;
2. source: resolve the reference and verify it, every ``interval`` or when
   the spec changed (``_source``), caching the verified bytes for the
   distributor;
3. pods: each selected pod's facts (cohort key, labels, admission time) and
   what its agent reports it runs, and whether it failed;
4. analysis, when due: the agents' counters (``builtin``) or Prometheus;
5. the pure :func:`logicbundle.rollout.step`, which decides the next status
   and the one rollout state to publish;
6. status, written in one place (``status.targetState`` is the published
   state);
7. publish: the state's ConfigMap (the agents' slow path) and the
   distributor's targets (agents learn in milliseconds);
8. an event for every transition.

A rollout step therefore costs a constant number of writes (the status, the
ConfigMap, the events), whatever the number of pods: every pod's target is a
rule over the published state (:func:`logicbundle.contract.target_of`).

The status is written before the state is published anywhere else, so that
what pods are told is always what the stored status implies.  Were it the
other way round, an operator killed between the two (or a status write
refused) would resume from the older status: a rollback decided but not
recorded would put the failed candidate back on its pods, and an advance not
recorded would move pods back and forth.  Written first, the worst a crash
leaves is a ConfigMap behind the status, which the next reconcile brings up
to it.

All state lives in the resource's status; what the process remembers of each
bundle (:mod:`._memory`) only saves work, so the operator may be killed at
any instant and resume.  A restarted operator waits up to
:data:`REPORT_GRACE` for the agents' re-reports before it judges what pods
run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from logicbundle import contract, rollout
from logicbundle.api import conditions as cond
from logicbundle.api import names
from logicbundle.api.actions import InvalidActionError, RequestedAction, parse_action
from logicbundle.api.conditions import Condition
from logicbundle.api.formats import parse_duration
from logicbundle.api.v1alpha1 import Analysis, LogicBundleSpec, LogicBundleStatus, Metric
from logicbundle.bundle import AuditRejectedError
from logicbundle.controller._kube import Kube
from logicbundle.controller._leaks import report_leaks
from logicbundle.controller._memory import BundleKey, BundleMemories, BundleMemory, SourceCheck
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._prometheus import PrometheusError, redact
from logicbundle.controller._prometheus import query as prometheus_query
from logicbundle.controller._restarts import RestartLedger
from logicbundle.controller._seams import reached
from logicbundle.controller._source import SourceTools, failure_of, resolve_and_verify
from logicbundle.controller._summaries import AgentsView, observed
from logicbundle.controller._templates import MetricTemplateError
from logicbundle.controller._templates import resolve as resolve_metric
from logicbundle.controller._tracing import RolloutTraces, source_span
from logicbundle.distributor import BundleSummary, Counters, bundle_rule
from logicbundle.errors import LogicBundleError

logger = logging.getLogger("logicbundle.controller")

IN_FLIGHT_REQUEUE = 2.0
"""Seconds between reconciles while a rollout runs (reports also wake it at once)."""
RETRY_REQUEUE = 15.0
"""Seconds before retrying after a temporary failure (registry down, missing Secret).

The first retry of a source check; each failure in a row doubles it, up to
the source interval and at most :data:`RETRY_LIMIT`.
"""
RETRY_LIMIT = 300.0
"""Seconds: the longest wait between retries of a failing source check."""
_ROLLBACK_EVENTS = frozenset(
    {rollout.EVENT_ROLLED_BACK, rollout.EVENT_HEALTH_CHECK_FAILED, rollout.EVENT_ABORTED}
)
"""The events of a decision that sends every pod back to stable (a test seam's trigger)."""
REPORT_GRACE = 15.0
"""Seconds a started operator waits for every agent's first report before judging pods.

Agents report when they reconnect to the distributor (about a second after
it comes up) and every 10 s; a pod without a report is not known to run
anything, so judging earlier would mark a converged bundle not Ready.
"""
CACHE_SPARE = 32
"""Cached bundles kept beyond those a published state or a remembered LogicBundle
references (stable, candidate, resolved, its history): recent digests a bundle may
return to.  One dropped and asked for again is pulled again by the source step."""


@dataclass(frozen=True)
class PodSnapshot:
    """What the controller needs to know of one opted-in pod (from the pod view, :mod:`._pods`)."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    has_agent: bool
    restarts: int = 0
    deleting: bool = False
    bundles_ready: bool | None = None
    """The pod's ``logicbundle.io/bundles-ready`` condition (None: not set yet)."""


def snapshot_pod(body: Mapping[str, Any]) -> PodSnapshot:
    meta = body.get("metadata", {})
    spec = body.get("spec", {})
    status = body.get("status", {})
    containers = [c.get("name") for c in spec.get("initContainers", []) or []]
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses", []) or [])
    ready = next(
        (
            c.get("status") == "True"
            for c in status.get("conditions", []) or []
            if c.get("type") == names.POD_CONDITION_READY
        ),
        None,
    )
    return PodSnapshot(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        has_agent=names.AGENT_CONTAINER in containers,
        restarts=restarts,
        deleting=bool(meta.get("deletionTimestamp")),
        bundles_ready=ready,
    )


@dataclass(kw_only=True)
class Runtime:
    """What the operator shares across reconciles: a few owners, each with its own lifecycle.

    Process-wide: the API (``kube``), the source side (``source``), the
    distributor side (``agents``), the metrics and the event poster.  Per
    LogicBundle, from its first reconcile until :meth:`forget` at its
    deletion: its memory (``memories``) and its restarts (``restarts``).
    """

    kube: Kube
    source: SourceTools
    agents: AgentsView
    metrics: OperatorMetrics
    post_event: Callable[[Mapping[str, Any], str, str, str], None]
    memories: BundleMemories = field(default_factory=BundleMemories)
    restarts: RestartLedger = field(default_factory=RestartLedger)
    clock: Callable[[], float] = time.monotonic
    traces: RolloutTraces = field(default_factory=RolloutTraces)
    """The rollouts' traces (tracing off unless the operator was started with it on)."""
    started: float = field(default_factory=time.monotonic)
    """When the operator started, on ``clock`` (see :data:`REPORT_GRACE`)."""

    def forget(self, key: BundleKey) -> None:
        """The LogicBundle is gone: drop all this process remembers of it, in every owner."""
        namespace, name = key
        self.memories.forget(key)
        self.restarts.forget_bundle(bundle=name, namespace=namespace)
        self.metrics.forget(namespace=namespace, name=name)
        self.metrics.observe_leaks(namespace=namespace, name=name, alive=None)
        self.traces.forget(key)


# -- step 2: the source ---------------------------------------------------------------------


async def _source_step(
    rt: Runtime,
    *,
    memory: BundleMemory,
    body: Mapping[str, Any],
    namespace: str,
    name: str,
    generation: int,
    spec: LogicBundleSpec,
) -> tuple[rollout.VerifiedDigest | None, float | None]:
    """The verification outcome when the source was checked now, and when to check again."""
    interval = parse_duration(spec.source.interval).total_seconds()
    state = memory.source
    now = rt.clock()
    if state is not None and state.generation == generation:
        wait = state.checked_at + _next_check(state, interval) - now
        if wait > 0:
            return None, wait
    started = time.perf_counter()
    started_ns = time.time_ns()
    try:
        outcome = await asyncio.to_thread(
            resolve_and_verify,
            spec,
            namespace=namespace,
            reader=rt.source.reader,
            clients=rt.source.clients,
            verifiers=rt.source.verifiers,
            cache=rt.source.cache,
        )
    except LogicBundleError as exc:
        # Registry unreachable, missing Secret, a malformed reference...: keep what we
        # have, say so (failure_of decides how), retry with backoff or stall.
        again = state is not None and state.generation == generation and state.failure
        memory.source = SourceCheck(
            generation=generation,
            checked_at=now,
            outcome=state.outcome if state else None,
            failure=failure_of(exc),
            failures=(state.failures if again and state is not None else 0) + 1,
        )
        if _warn_once(memory, (namespace, name), f"{exc.reason}: {exc.message}"):
            rt.post_event(body, "Warning", exc.reason, exc.diagnostics())
        return None, _next_check(memory.source, interval)
    finally:
        rt.metrics.verify_seconds.observe(time.perf_counter() - started)
    memory.source = SourceCheck(generation=generation, checked_at=now, outcome=outcome)
    if state is None or state.outcome is None or state.outcome.digest != outcome.digest:
        # Kept: what any bundle's published state names (loaded for every bundle at
        # start), what remembered bundles reference, and the newest others.
        keep = rt.agents.rules.published_digests() | rt.memories.referenced_digests()
        await asyncio.to_thread(rt.source.cache.trim, keep, spare=CACHE_SPARE)
    if rt.traces.enabled:
        rt.traces.source_checked((namespace, name), source_span(spec, outcome, started_ns))
    memory.warning = None
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
            signer=who,
            issuer=outcome.verified.issuer,
        ),
        interval,
    )


def _next_check(check: SourceCheck, interval: float) -> float:
    """Seconds from ``check`` to the next check of the same generation.

    After an answer, the source interval.  After a retryable failure,
    :data:`RETRY_REQUEUE` doubled per failure in a row, up to the interval and
    at most :data:`RETRY_LIMIT` (never below :data:`RETRY_REQUEUE`).  After an
    unrecoverable one, no backoff: the interval (a spec change checks again at
    once; Secrets and ConfigMaps are not watched, so that is when a fixed one
    is seen).
    """
    if check.failure is None:
        return interval
    if check.failure.stalled:
        return max(interval, RETRY_REQUEUE)
    ceiling = max(RETRY_REQUEUE, min(interval, RETRY_LIMIT))
    return min(RETRY_REQUEUE * 2.0 ** min(max(check.failures - 1, 0), 16), ceiling)


def _source_error(memory: BundleMemory, generation: int) -> rollout.SourceFailure | None:
    """Why the last check of the current generation's source failed (None: it did not)."""
    state = memory.source
    if state is None or state.generation != generation:
        return None
    return state.failure


def _warn_once(memory: BundleMemory, key: BundleKey, message: str) -> bool:
    """Log a warning unless it is the same as the last one; True when it was new."""
    if not memory.note_warning(message):
        return False
    logger.warning("%s/%s: %s", key[0], key[1], message)
    return True


# -- step 3: the pods -----------------------------------------------------------------------


def pod_facts(pod: PodSnapshot) -> contract.PodFacts:
    """What the target rule knows of ``pod``."""
    return contract.pod_facts(
        namespace=pod.namespace, name=pod.name, labels=pod.labels, annotations=pod.annotations
    )


def _pod_report(pod: PodSnapshot) -> rollout.PodReport:
    """The pod's facts as the core reads them (what its agent reports comes summed)."""
    return rollout.PodReport(
        pod=rollout.PodIdentity(
            namespace=pod.namespace,
            name=pod.name,
            cohort_key=pod.annotations.get(names.ANNOTATION_COHORT_KEY),
        ),
        labels=pod.labels,
        has_agent=pod.has_agent,
        admitted=contract.admitted_at(dict(pod.annotations)),
    )


def _pod_reports(memory: BundleMemory, pods: Iterable[PodSnapshot]) -> list[rollout.PodReport]:
    """Each pod's :func:`_pod_report`, built again only for a pod whose snapshot changed.

    The pod view replaces a snapshot when the pod changes, so the same object is the
    same facts; the memory keeps this reconcile's pods only.
    """
    known = memory.pod_reports
    kept: dict[str, tuple[PodSnapshot, rollout.PodReport]] = {}
    reports = []
    for pod in pods:
        hit = known.get(pod.name)
        report = hit[1] if hit is not None and hit[0] is pod else _pod_report(pod)
        kept[pod.name] = (pod, report)
        reports.append(report)
    memory.pod_reports = kept
    return reports


def _reports_pending(
    rt: Runtime,
    pods: Collection[PodSnapshot],
    summary: BundleSummary | None,
    published: contract.RolloutState | None,
) -> bool:
    """A started operator still waits for the first reports of the bundle's pods.

    Only when the pods were told something before (a published stable digest):
    a new bundle's pods have nothing of it to report.
    """
    if rt.clock() - rt.started >= REPORT_GRACE:
        return False
    if published is None or published.stable is None:
        return False
    agents = sum(1 for p in pods if p.has_agent)
    return summary is None or summary.reporting < agents


# -- step 4: analysis -----------------------------------------------------------------------


def _builtin_sample(
    rt: Runtime,
    *,
    namespace: str,
    bundle: str,
    digest: str,
    since: float,
    summary: BundleSummary,
) -> rollout.BuiltinSample:
    """One digest's figures: its counters summed by the distributors, its restarts here."""
    counters = summary.versions.get(digest, Counters())
    cumulative, buckets = 0, []
    for k, count in enumerate(counters.latency_buckets):
        cumulative += count
        buckets.append((contract.bucket_upper_seconds(k), cumulative))
    return rollout.BuiltinSample(
        calls=counters.calls,
        errors=counters.errors,
        latency_buckets=tuple(buckets),
        restarts=rt.restarts.restarts(
            bundle=bundle, namespace=namespace, digest=digest, since=since
        ),
        pods=counters.pods,
        process_pods=counters.process_pods,
        rss_bytes=counters.rss_bytes,
        threads=counters.threads,
        gc_pause_ns=counters.gc_pause_ns,
        wall_ns=counters.wall_ns,
    )


def _observe_restarts(
    rt: Runtime,
    *,
    namespace: str,
    bundle: str,
    pods: Sequence[PodSnapshot],
    reports: Sequence[rollout.PodReport],
    published: contract.RolloutState | None,
) -> None:
    """Charge new container restarts to the digest each pod is told (see :mod:`._restarts`).

    A pod's target is worked out only when its count went up (the rule's hash, per pod,
    was a tenth of the operator's CPU in a 2,000-pod rollback).
    """
    by_name = {r.pod.name: r for r in reports}
    for pod in pods:
        digest = None
        report = by_name.get(pod.name)
        if (
            published is not None
            and report is not None
            and rt.restarts.would_charge(
                bundle=bundle,
                namespace=namespace,
                pod=pod.name,
                uid=pod.uid,
                restarts=pod.restarts,
            )
        ):
            target = rollout.pod_target(published, report)
            digest = target.digest if target is not None else None
        rt.restarts.observe(
            bundle=bundle,
            namespace=namespace,
            pod=pod.name,
            uid=pod.uid,
            restarts=pod.restarts,
            digest=digest,
        )
    rt.restarts.forget_pods(bundle=bundle, namespace=namespace, keep=by_name)


async def _query_metric(
    rt: Runtime,
    *,
    metric: Metric,
    analysis: Analysis,
    namespace: str,
    name: str,
    candidate: str,
    stable: str,
    body: Mapping[str, Any] | None,
) -> rollout.MetricValues:
    """The candidate's and stable's values of a ``query`` or ``templateRef`` metric.

    Anything in the way (a template missing or refused, a Secret missing,
    Prometheus down or refusing the query) is missing data for both digests,
    with the reason; never a pass.  A new reason is logged and posted once as
    a Warning event.
    """
    key = (namespace, name)

    def missing(reason: str, message: str) -> rollout.MetricValues:
        if _warn_once(rt.memories.get(key), key, f"{reason}: {message}") and body is not None:
            rt.post_event(body, "Warning", reason, message)
        error = rollout.MetricValue(value=None, error=message[:300])
        return rollout.MetricValues(candidate=error, stable=error)

    if analysis.prometheus is None and metric.template_ref is None:
        return missing("PrometheusUnavailable", f"metric {metric.name}: no analysis.prometheus")
    try:
        resolved = await asyncio.to_thread(
            resolve_metric,
            metric=metric,
            analysis=analysis,
            namespace=namespace,
            bundle=name,
            stable_digest=stable,
            reader=rt.source.reader,
            templates=rt.kube,
        )
    except MetricTemplateError as exc:
        return missing(exc.reason, str(exc))
    except LogicBundleError as exc:  # a Secret of analysis.prometheus missing
        return missing("PrometheusUnavailable", f"metric {metric.name}: {exc}")
    figures: list[rollout.MetricValue] = []
    for digest in (candidate, stable):
        try:
            promql = resolved.render(digest)
            value = await asyncio.to_thread(prometheus_query, resolved.endpoint, promql)
        except MetricTemplateError as exc:
            return missing(exc.reason, str(exc))
        except (PrometheusError, ValueError) as exc:
            message = redact(str(exc), resolved.endpoint.secrets)
            new = _warn_once(rt.memories.get(key), key, f"PrometheusUnavailable: {message}")
            if new and body is not None:
                rt.post_event(body, "Warning", "PrometheusUnavailable", message[:1024])
            error = f"{type(exc).__name__}: {message[:300]}"
            figures.append(rollout.MetricValue(value=None, error=error))
            continue
        figures.append(rollout.MetricValue(value=value))
    return rollout.MetricValues(candidate=figures[0], stable=figures[1])


async def _analysis_step(
    rt: Runtime,
    *,
    namespace: str,
    name: str,
    spec: LogicBundleSpec,
    status: LogicBundleStatus | None,
    now: datetime,
    summary: BundleSummary | None,
    body: Mapping[str, Any] | None = None,
) -> rollout.AnalysisVerdict | None:
    """The verdict on the candidate, when one is due; builtin figures from ``summary``.

    Metrics with a ``query`` or a ``templateRef`` are asked of Prometheus
    (:func:`_query_metric`); ``body`` is the object its warnings are posted on.

    ``summary`` counts only the pods the bundle's rule assigns (the
    distributors select them); None (a replica did not answer) is missing
    data for every builtin metric: the stage does not pass on it.
    """
    if status is None or not status.candidate_digest or not status.stable_digest:
        return None
    if not rollout.analysis_due(spec=spec, status=status, now=now):
        return None
    analysis = spec.rollout.analysis
    start = _window_start(spec, status, now)
    since = rt.clock() - max((now - start).total_seconds(), 0.0)
    candidate, stable = status.candidate_digest, status.stable_digest
    # Builtin metrics always come from the agents' reports, whatever the provider;
    # with `prometheus`, the metrics with a query are asked of Prometheus as well.
    values: dict[str, rollout.MetricValues] = {}
    for metric in analysis.effective_metrics():
        if metric.builtin is None:
            continue
        if summary is None:
            missing = rollout.MetricValue(
                value=None, error="a distributor replica did not answer for its agents"
            )
            values[metric.name] = rollout.MetricValues(candidate=missing, stable=missing)
            continue
        values[metric.name] = rollout.MetricValues(
            candidate=rollout.builtin_value(
                metric,
                _builtin_sample(
                    rt,
                    namespace=namespace,
                    bundle=name,
                    digest=candidate,
                    since=since,
                    summary=summary,
                ),
            ),
            stable=rollout.builtin_value(
                metric,
                _builtin_sample(
                    rt,
                    namespace=namespace,
                    bundle=name,
                    digest=stable,
                    since=since,
                    summary=summary,
                ),
            ),
        )
    for metric in analysis.effective_metrics():
        if metric.builtin is not None:
            continue
        values[metric.name] = await _query_metric(
            rt, metric=metric, analysis=analysis, namespace=namespace, name=name,
            candidate=candidate, stable=stable, body=body,
        )  # fmt: skip
    verdict = rollout.judge(analysis=analysis, values=values)
    rt.metrics.analysis_verdicts.labels(
        namespace=namespace, bundle=name, verdict=verdict.verdict
    ).inc()
    return verdict


def analysis_window_default(spec: LogicBundleSpec) -> float:
    return parse_duration(spec.rollout.analysis.interval).total_seconds()


def _window_start(spec: LogicBundleSpec, status: LogicBundleStatus, now: datetime) -> datetime:
    """Where the analysis window starts: the last measurement, else the stage's start."""
    start = (
        status.analysis.last_measured_at if status.analysis else None
    ) or status.stage_started_at
    return start or now - timedelta(seconds=analysis_window_default(spec))


# -- the whole reconcile --------------------------------------------------------------------


def _requested_action(
    rt: Runtime, body: Mapping[str, Any], memory: BundleMemory
) -> RequestedAction | None:
    value = (body.get("metadata", {}).get("annotations") or {}).get(
        names.ANNOTATION_REQUESTED_ACTION
    )
    if not value:
        return None
    try:
        return parse_action(value)
    except InvalidActionError as exc:
        if memory.note_warning(f"action:{value}"):
            rt.post_event(body, "Warning", "InvalidAction", f"ignored {value!r}: {exc}")
        return None


def state_text(state: contract.RolloutState) -> str:
    """The published state as the ConfigMap holds it."""
    return json.dumps(contract.state_to_json(state), sort_keys=True, separators=(",", ":"))


async def publish_state(
    rt: Runtime,
    *,
    namespace: str,
    name: str,
    owner_uid: str | None,
    spec: LogicBundleSpec,
    state: contract.RolloutState | None,
) -> None:
    """Publish ``state``: its ConfigMap when it changed (one write), then the distributor.

    The distributor's targets live in memory (no API write).  ``state`` None
    (nothing published yet): no pod is told anything for this bundle.
    """
    if state is not None:
        text = state_text(state)
        memory = rt.memories.get((namespace, name))
        if memory.published != text:
            await rt.kube.run(
                rt.kube.publish_state, namespace, name, owner_uid=owner_uid, state=text
            )
            memory.published = text
    rt.agents.rules.set_bundle(namespace, name, bundle_rule(spec, state))


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
    memory = rt.memories.get(key)
    body = _freshest(body, memory.written)
    meta = body["metadata"]
    namespace, name = key
    generation = int(meta.get("generation") or 0)
    now = now or datetime.now(UTC)
    raw_status = body.get("status") or {}
    try:
        spec = LogicBundleSpec.model_validate(body.get("spec") or {})
        status = LogicBundleStatus.model_validate(raw_status) if raw_status else None
    except ValidationError as exc:
        await _invalid_spec(rt, memory=memory, body=body, raw_status=raw_status, error=exc, now=now)
        return INVALID_SPEC_REQUEUE

    verified, source_wait = await _source_step(
        rt,
        memory=memory,
        body=body,
        namespace=namespace,
        name=name,
        generation=generation,
        spec=spec,
    )
    selected = {
        (p.namespace, p.name): p
        for p in pods
        if p.namespace == namespace
        and not p.deleting
        and spec.target.pod_selector.matches(dict(p.labels))
    }
    window = (
        _window_start(spec, status, now)
        if status is not None and status.candidate_digest and status.stage_index is not None
        else None
    )
    summary = await rt.agents.summaries.summary(
        namespace, name, since=window.timestamp() if window is not None else None
    )
    published = rollout.published_state(status)
    if _reports_pending(rt, selected.values(), summary, published):
        return 1.0
    reports = _pod_reports(memory, selected.values())
    _observe_restarts(
        rt,
        namespace=namespace,
        bundle=name,
        pods=list(selected.values()),
        reports=reports,
        published=published,
    )
    verdict = await _analysis_step(
        rt,
        namespace=namespace,
        name=name,
        spec=spec,
        status=status,
        now=now,
        summary=summary,
        body=body,
    )
    if verdict is not None:
        await reached("analysis", namespace=namespace, name=name)
    decision = rollout.step(
        bundle_name=name,
        generation=generation,
        spec=spec,
        status=status,
        pods=reports,
        verdict=verdict,
        action=_requested_action(rt, body, memory),
        verified=verified,
        now=now,
        source_error=_source_error(memory, generation),
        observed=observed(summary),
    )
    if any(e.reason in _ROLLBACK_EVENTS for e in decision.events):
        await reached("rollback", namespace=namespace, name=name)
    traced_state, traced_status = rt.traces.stamp(
        uid=str(meta.get("uid") or ""),
        before=published,
        after=decision.state,
        status=decision.status,
    )
    decision = replace(decision, state=traced_state, status=traced_status)
    new_status = decision.status.with_summary()
    # Before any pod is told: see the module docstring. A refused write raises,
    # and no pod learns of a decision that was not recorded.
    written = await _write_status(
        rt, memory=memory, key=key, raw_status=raw_status, status=new_status
    )
    if written is None:
        return 60.0  # the LogicBundle is gone; its deletion releases the pods
    if written and decision.state != published:
        await reached("status-written", namespace=namespace, name=name)
    await publish_state(
        rt,
        namespace=namespace,
        name=name,
        owner_uid=meta.get("uid"),
        spec=spec,
        state=decision.state,
    )
    report_leaks(
        body=body, memory=memory, summary=summary, metrics=rt.metrics, post_event=rt.post_event
    )
    rt.traces.observe(
        key,
        before=published,
        after=decision.state,
        status=new_status,
        spec_ref=spec.source.ref,
        judged=decision.judged,
    )
    for event in decision.events:
        rt.post_event(body, event.type, event.reason, event.message)
    _report_pods_without_agent(rt, body, status, new_status, selected)
    rt.metrics.observe_status(namespace=namespace, name=name, status=new_status)
    told = decision.state
    rt.metrics.observe_versions(
        namespace=namespace,
        name=name,
        stable=told.stable if told is not None else None,
        candidate=told.candidate if told is not None and told.stage is not None else None,
        versions=summary.versions if summary is not None else None,
    )
    rt.metrics.reconcile_seconds.observe(time.perf_counter() - started)

    waits = [w for w in (source_wait,) if w is not None]
    if decision.requeue_after is not None:
        waits.append(decision.requeue_after.total_seconds())
    if new_status.candidate_digest and not _stalled(new_status):
        waits.append(IN_FLIGHT_REQUEUE)
    return max(0.05, min(waits)) if waits else 60.0


INVALID_SPEC_REQUEUE = 300.0
"""Seconds before a spec the models refuse is read again (any edit wakes it at once)."""


async def _write_status(
    rt: Runtime,
    *,
    memory: BundleMemory,
    key: BundleKey,
    raw_status: Mapping[str, Any],
    status: LogicBundleStatus,
    fields: Collection[str] | None = None,
) -> bool | None:
    """Write a decision's ``status`` where it differs from the stored one.

    The one place a reconcile writes the status, whether the rollout core
    stepped (:func:`logicbundle.rollout.step`) or refused the spec
    (:func:`logicbundle.rollout.refused`): a merge patch from ``raw_status``,
    limited to ``fields`` (status keys) when given, so that what the models
    cannot read is left as it is.  True: written; False: nothing to write;
    None: the LogicBundle is gone.
    """
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    base = dict(raw_status)
    if fields is not None:
        dumped = {k: v for k, v in dumped.items() if k in fields}
        base = {k: v for k, v in base.items() if k in fields}
    if dumped == base:
        return False
    stored = await rt.kube.run(rt.kube.patch_status, key[0], key[1], _with_nulls(base, dumped))
    if stored is None:
        return None
    memory.written = stored
    return True


async def _invalid_spec(
    rt: Runtime,
    *,
    memory: BundleMemory,
    body: Mapping[str, Any],
    raw_status: Mapping[str, Any],
    error: ValidationError,
    now: datetime,
) -> None:
    """A spec the CRD schema admitted but the models refuse: say so in the conditions.

    ``Stalled=True`` and ``Ready=False`` (reason ``InvalidSpec``) for this
    generation, decided by the rollout core (:func:`logicbundle.rollout.refused`,
    the mapping a source failure goes through too), so ``kubectl wait``, Flux
    and Argo CD fail fast instead of waiting; the rest of the status (stable
    digest, history, the published state) is kept, and no pod is touched.  The
    message names the fields and the problems, never the values (which came
    from the user and may be long).
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = int(meta.get("generation") or 0)
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'spec'}: {e['msg']}"
        for e in error.errors(include_url=False, include_input=False)
    )
    message = f"spec cannot be acted on: {problems}"[:1024]
    decision = rollout.refused(
        generation=generation,
        status=_readable_status(raw_status),
        failure=rollout.SourceFailure(reason=cond.INVALID_SPEC, message=message, stalled=True),
        now=now,
    )
    if _warn_once(memory, (namespace, name), f"InvalidSpec: {message}"):
        rt.post_event(body, "Warning", cond.INVALID_SPEC, message)
    await _write_status(
        rt,
        memory=memory,
        key=(namespace, name),
        raw_status=raw_status,
        status=decision.status,
        fields=("observedGeneration", "conditions", "phase"),
    )


def _readable_status(raw_status: Mapping[str, Any]) -> LogicBundleStatus:
    """The stored status as the models read it; when they cannot, its conditions only."""
    try:
        return LogicBundleStatus.model_validate(raw_status)
    except ValidationError:
        pass
    try:
        kept = tuple(Condition.model_validate(c) for c in raw_status.get("conditions") or [])
    except ValidationError:
        kept = ()
    return LogicBundleStatus(conditions=kept)


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
    """A merge patch (RFC 7386) from ``old`` to ``new``: fields that disappeared become null.

    Recursive: a merge patch merges objects, so a field gone from a nested
    object (``targetState.stage`` after a rollback) must be nulled there too.
    Lists are replaced whole.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = _with_nulls(before, value)
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch
