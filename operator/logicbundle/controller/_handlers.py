"""The kopf handlers: a daemon per LogicBundle, the pod view, the embedded distributor.

Why a daemon per LogicBundle rather than timers: a rollout must react to an
agent's report within milliseconds (a failed verdict rolls every pod back in
under a second), so each bundle has a loop that reconciles, then sleeps until
its requeue time or until something wakes it: a change of the bundle, of one
of the opted-in pods it selects, or a report from an agent.

Pods are not watched through kopf: its per-object workers do not scale to the
pods of a big cluster (see :mod:`._pods`).  :class:`PodView` keeps the few
fields a reconcile reads and wakes only the bundles whose selector matches a
pod whose snapshot changed.

Start-up is retried: a transient failure (the API server slow or restarting,
a Service not routed yet) undoes what the attempt started (listeners, threads,
the pod label) and kopf calls :func:`start` again after :data:`STARTUP_BACKOFF`,
up to :data:`STARTUP_RETRIES` times; then the operator exits non-zero, saying
why.  Without the undo, a retry would find its own ports taken and fail until
the kubelet killed the container.

Deletion: a finalizer holds the LogicBundle until its pods are released. Each
pod keeps the last stable version, unmanaged: in-flight candidates go back to
stable, the distributor forgets the bundle and its state ConfigMap is deleted
(agents keep what is active; nothing is deleted inside the pods).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kopf
import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from logicbundle import contract, rollout
from logicbundle.api import names
from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.api.v1alpha1 import LogicBundleSpec, LogicBundleStatus
from logicbundle.controller import _seams
from logicbundle.controller._health import HEALTH_REFRESH, refresh_health
from logicbundle.controller._kube import Kube, KubeError, api_client
from logicbundle.controller._leader import LeaderLabeler, LeaderSettings
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._pods import PodView
from logicbundle.controller._reconcile import (
    RETRY_REQUEUE,
    PodSnapshot,
    Runtime,
    _freshest,
    _with_nulls,
    pod_facts,
    publish_state,
    reconcile,
)
from logicbundle.controller._source import BundleCache, SourceTools
from logicbundle.controller._summaries import AgentsView, ReplicaSettings
from logicbundle.controller._tls import ReloadingCertificate
from logicbundle.controller._tracing import RolloutTraces
from logicbundle.controller._webhook import RunningWebhook, WebhookSettings, start_webhook
from logicbundle.distributor import (
    BlobCache,
    CachingAuthenticator,
    DistributorServer,
    KubeSource,
    PodActivity,
    PodStatusWriter,
    ReportStore,
    RuleTargets,
    SwapSpans,
    TargetStore,
    TokenReviewAuthenticator,
    create_app,
    rule_of,
)
from logicbundle.telemetry import tracing_from_env

logger = logging.getLogger("logicbundle.operator")

GROUP, VERSION, PLURAL = names.GROUP, names.VERSION, names.PLURAL

STARTUP_RETRIES = 5
"""How many times a failed start-up is tried again before the operator gives up."""

STARTUP_BACKOFF = 3.0
"""Seconds between two start-up attempts (about 15 s of retries in all)."""


@dataclass(frozen=True, kw_only=True)
class ControllerSettings:
    """What the handlers need from the command line."""

    cache_dir: Path
    distributor_host: str | None = "127.0.0.1"
    distributor_port: int | None = None
    """None: no embedded distributor (agents use the slow path or a standalone one)."""
    distributor_tls: tuple[Path, Path] | None = None
    distributor_insecure_http: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    webhook: WebhookSettings | None = None
    """None: no webhook in this process."""
    namespaces: tuple[str, ...] = ()
    """The namespaces watched (empty: the whole cluster)."""
    served: ServedNamespaces = field(default_factory=ServedNamespaces)
    """The namespaces whose LogicBundles are served (default: every one)."""
    replicas: ReplicaSettings | None = None
    """Distributor replicas serve the agents (their reports are read from them)."""
    leader: LeaderSettings | None = None
    """None: the pod is not known (a local run), so no pod is labelled as the leader."""


@dataclass
class Memo:
    """kopf's per-operator memo: settings, the runtime and the wake-up events."""

    settings: ControllerSettings
    runtime: Runtime | None = None
    server: DistributorServer | None = None
    webhook: RunningWebhook | None = None
    leader: LeaderLabeler | None = None
    pods: PodView | None = None
    """The opted-in pods (None until started)."""
    certificate: asyncio.Task[None] | None = None
    """Follows renewals of the distributor's certificate (see :mod:`._tls`)."""
    metrics_server: Any = None
    """The metrics endpoint's HTTP server (prometheus-client's WSGI server), once started."""
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    readiness: dict[tuple[str, str], tuple[str, bool | None]] = field(default_factory=dict)
    """Per opted-in pod, its uid and readiness condition as the watch saw it last."""

    def current_readiness(self, namespace: str, name: str, uid: str) -> bool | None:
        seen = self.readiness.get((namespace, name))
        if seen is None or seen[0] != uid:
            return None
        return seen[1]

    settle_until: dict[tuple[str, str], float] = field(default_factory=dict)
    """Per bundle, until when a report's wake waits (loop time; see :meth:`wake_settled`)."""
    deferred: set[tuple[str, str]] = field(default_factory=set)
    """The bundles with a report's wake scheduled for the end of their settle time."""

    def wake_settled(self, namespace: str, name: str) -> None:
        """A report changed what a bundle's pods run, or our own status write came back:
        wake its reconcile, spaced out.

        A burst of reports (a rollback's 2,000) would run the bundle's reconcile
        back to back, each one's work growing with its pods, on the event loop
        that answers the same pods' long-polls and reports.  After a reconcile, a
        report's wake waits as long as that reconcile took (at most
        :data:`REPORT_SETTLE_LIMIT`; see :func:`run_bundle`), then wakes it once for
        every report meanwhile: during a burst the reconciles take about half the
        loop, not all of it.  Every other wake (a change of the bundle by anyone
        else, of its pods, an action) is immediate.
        """
        key = (namespace, name)
        loop = asyncio.get_running_loop()
        delay = self.settle_until.get(key, 0.0) - loop.time()
        if delay <= 0:
            self.wake(namespace, name)
            return
        if key in self.deferred:
            return
        self.deferred.add(key)

        def settled() -> None:
            self.deferred.discard(key)
            self.wake(namespace, name)

        loop.call_later(delay, settled)

    def wake(self, namespace: str, name: str | None = None) -> None:
        if name is not None:
            event = self.wakeups.get((namespace, name))
            if event is not None:
                event.set()
            return
        for (ns, _), event in self.wakeups.items():
            if ns == namespace:
                event.set()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register every handler on ``registry``; they share the :class:`Memo` passed to kopf."""
    kopf.on.startup(registry=registry, retries=STARTUP_RETRIES, backoff=STARTUP_BACKOFF)(start)
    kopf.on.cleanup(registry=registry)(stop)
    # LogicBundles of a namespace not served get no finalizer, no daemon, no status.
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, when=_served)(bundle_changed)
    kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, when=_served, cancellation_timeout=10.0)(
        run_bundle
    )
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, when=_served)(release)


def _served(memo: Memo, namespace: str | None, **_: Any) -> bool:
    """kopf's filter: whether the namespace is served (:mod:`logicbundle.api.namespaces`)."""
    return memo.settings.served.serves(namespace)


async def start(memo: Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start everything; on a failure, undo what started and let kopf try again."""
    try:
        await _start(memo, logger)
    except Exception as exc:
        await _undo_start(memo)
        if isinstance(exc, kopf.PermanentError):
            raise
        why = _startup_failure(exc)
        logger.warning("start-up failed (%s); undone, to be tried again", why)
        raise kopf.TemporaryError(f"start-up failed: {why}", delay=STARTUP_BACKOFF) from None


def _startup_failure(exc: BaseException) -> str:
    """One line on why start-up failed, without a response body (it may quote a token)."""
    if isinstance(exc, ApiException):
        return f"the API server answered {exc.status} {exc.reason}"
    if isinstance(exc, KubeError):
        return str(exc)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return f"the API server could not be reached ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return type(exc).__name__


async def _undo_start(memo: Memo) -> None:
    """Stop whatever a failed :func:`_start` started, so that the next attempt starts clean."""
    client = memo.runtime.kube.client if memo.runtime is not None else None
    try:
        await stop(memo)
    except Exception:
        logger.exception("undoing a failed start-up")
    if client is not None:
        client.close()  # type: ignore[no-untyped-call]  # every attempt opens its own pool
    memo.runtime = memo.server = memo.webhook = memo.leader = memo.pods = None
    memo.certificate = None


async def _start(memo: Memo, logger: kopf.Logger) -> None:
    settings = memo.settings
    if _seams.enabled():
        logger.warning(
            "TEST ONLY: this operator stops for good at the pause points %s (%s); "
            "never set it outside the end-to-end tests",
            ",".join(_seams.enabled()),
            _seams.PAUSE_ENV,
        )
    client = api_client()
    kube = Kube(client)
    metrics = OperatorMetrics()
    targets, reports = TargetStore(), ReportStore()
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobCache(settings.cache_dir)
    rules = RuleTargets(targets)
    memo.runtime = Runtime(
        kube=kube,
        source=SourceTools(reader=kube, cache=BundleCache(blobs)),
        agents=AgentsView(rules=rules, reports=reports),
        metrics=metrics,
        post_event=_post_event,
        traces=RolloutTraces(tracing_from_env("logicbundle-operator")),
    )
    if settings.metrics_port is not None:
        memo.metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
        )
    if settings.webhook is not None:
        memo.webhook = await start_webhook(settings.webhook, client)
        logger.info("webhook listening on port %d", memo.webhook.server.port)
    if settings.replicas is not None:
        memo.runtime.agents.summary_source = settings.replicas.source(kube)
        if memo.runtime.agents.summary_source is not None:
            logger.info("reading the agents' reports from the distributor replicas")
    # The published states first: a pod's targets are computed as soon as it is seen.
    loaded = await kube.run(_load_rules, kube, rules, settings.namespaces, settings.served)
    logger.info("loaded the published state of %d LogicBundles", loaded)
    memo.pods = PodView(
        # The namespaces not served are left out server-side, like the replicas' watch.
        source=KubeSource(client, field_selector=settings.served.field_selector),
        loop=asyncio.get_running_loop(),
        on_change=lambda before, after: pod_seen(memo, before, after),
        namespaces=settings.namespaces,
    )
    memo.pods.start()
    if settings.distributor_port is not None:
        await _start_distributor(
            memo,
            port=settings.distributor_port,
            client=client,
            targets=targets,
            reports=reports,
            blobs=blobs,
            log=logger,
        )
    # Labelled once the distributor listens: the label routes agents to it.
    if settings.leader is not None:
        memo.leader = LeaderLabeler(api=kube, settings=settings.leader)
        await memo.leader.start()


def _load_rules(
    kube: Kube, rules: RuleTargets, namespaces: tuple[str, ...], served: ServedNamespaces
) -> int:
    """Read every served LogicBundle's published state into ``rules`` (blocking)."""
    items: list[Mapping[str, Any]] = []
    try:
        if namespaces:
            for ns in namespaces:
                found: Any = kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
                items.extend(found.get("items") or [])
        else:
            everything: Any = kube.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
            items.extend(everything.get("items") or [])
    except ApiException as exc:
        if exc.status != 404:
            raise
        raise KubeError(
            f"the LogicBundle CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed "
            "(install the chart, or kubectl apply --server-side -f crds/)"
        ) from None
    loaded = 0
    for item in items:
        if served.serves((item.get("metadata") or {}).get("namespace")) and _set_rule(rules, item):
            loaded += 1
    return loaded


def _set_rule(rules: RuleTargets, body: Mapping[str, Any]) -> bool:
    """Feed one LogicBundle's published state to ``rules``; False when it cannot be read."""
    meta = body.get("metadata") or {}
    rule = rule_of(body)
    if rule is None:
        return False  # the reconcile reports the invalid spec
    rules.set_bundle(meta.get("namespace", ""), meta.get("name", ""), rule)
    return True


async def _start_distributor(
    memo: Memo,
    *,
    port: int,
    client: kubernetes.client.ApiClient,
    targets: TargetStore,
    reports: ReportStore,
    blobs: BlobCache,
    log: kopf.Logger,
) -> None:
    settings = memo.settings
    assert memo.runtime is not None  # noqa: S101 - started just before
    rules = memo.runtime.agents.rules
    # Its own threads: hundreds of reports after a swap must not queue behind the
    # reconcile's calls (the default pool has CPU count + 4 threads).
    writer = PodStatusWriter(
        api_client=client,
        executor=ThreadPoolExecutor(32, thread_name_prefix="pod-status"),
        current=memo.current_readiness,
    )

    async def on_activity(activity: PodActivity) -> None:
        # The controller reads what pods run from the report store, not from the pod:
        # wake the reported bundles before the (slower) durable write.
        for bundle in activity.active:
            memo.wake_settled(activity.namespace, bundle)
        await writer(activity)

    app = create_app(
        targets=targets,
        blobs=blobs,
        reports=reports,
        authenticator=CachingAuthenticator(
            TokenReviewAuthenticator(api_client=client), still_there=rules.knows
        ),
        audience=names.DISTRIBUTOR_AUDIENCE,
        on_activity=on_activity,
        assigns=rules.assigns,
        replicas=frozenset(settings.replicas.accounts) if settings.replicas else frozenset(),
        viewers=frozenset(settings.replicas.readers) if settings.replicas else frozenset(),
        published=rules.published_digests,
        swaps=SwapSpans(memo.runtime.traces.tracing if memo.runtime is not None else None),
    )
    context = None
    if settings.distributor_tls is not None:
        cert, key = settings.distributor_tls
        certificate = ReloadingCertificate(cert=cert, key=key)
        context = certificate.context
        memo.certificate = asyncio.create_task(certificate.follow(), name="distributor-tls")
    elif not settings.distributor_insecure_http:
        raise kopf.PermanentError("the distributor needs TLS or --distributor-insecure-http")
    memo.server = DistributorServer(
        app, host=settings.distributor_host, port=port, ssl_context=context
    )
    await memo.server.start()
    log.info("distributor listening on port %d", memo.server.port)


async def stop(memo: Memo, **_: Any) -> None:
    # Unlabelled first: the distributor Service stops routing here before it closes.
    if memo.leader is not None:
        await memo.leader.stop()
    if memo.webhook is not None:
        await memo.webhook.stop()
    if memo.server is not None:
        await memo.server.stop()
    if memo.certificate is not None:
        memo.certificate.cancel()
        await asyncio.gather(memo.certificate, return_exceptions=True)
    if memo.pods is not None:
        await asyncio.to_thread(memo.pods.stop)
    if memo.metrics_server is not None:
        server, memo.metrics_server = memo.metrics_server, None
        await asyncio.to_thread(server.shutdown)
        server.server_close()
    if memo.runtime is not None:
        memo.runtime.agents.targets.close()
        memo.runtime.kube.close()
        await asyncio.to_thread(memo.runtime.traces.tracing.shutdown)


def pod_seen(memo: Memo, before: PodSnapshot | None, after: PodSnapshot | None) -> None:
    """An opted-in pod appeared, changed what a reconcile reads of it, or went away.

    Wakes the bundles that select it (by its labels before and after), not
    every bundle of its namespace.
    """
    pod = after or before
    if pod is None:
        return
    ns, name = pod.namespace, pod.name
    key = (ns, name)
    runtime = memo.runtime
    if after is None or not after.has_agent or after.deleting:
        memo.readiness.pop(key, None)
        if runtime is not None:
            runtime.agents.rules.forget_pod(ns, name)
            if after is None:
                runtime.agents.reports.forget(ns, name)
    else:
        memo.readiness[key] = (after.uid, after.bundles_ready)
        if runtime is not None:
            runtime.agents.rules.set_pod(ns, name, uid=after.uid or None, facts=pod_facts(after))
    if runtime is None:
        memo.wake(ns)
        return
    selecting = set()
    for snapshot in (before, after):
        if snapshot is not None:
            selecting.update(runtime.agents.rules.selecting(ns, snapshot.labels))
    for bundle in selecting:
        memo.wake(ns, bundle)


def bundle_changed(
    memo: Memo, body: kopf.Body, namespace: str | None, name: str, type: str | None, **_: Any
) -> None:
    # The published state as stored: the distributor follows it even before the
    # bundle's daemon reconciles (an operator that just started, a status written
    # by another replica).
    own = False
    if memo.runtime is not None:
        if type == "DELETED":
            # Released already; but the last update before it (the finalizer's
            # removal) may have set the rule again after the release forgot it.
            memo.runtime.agents.rules.set_bundle(namespace or "", name, None)
        else:
            _set_rule(memo.runtime.agents.rules, _plain(body))
            own = _own_write(memo.runtime, namespace or "", name, body)
    if own:
        memo.wake_settled(namespace or "", name)
    else:
        memo.wake(namespace or "", name)


def _own_write(runtime: Runtime, namespace: str, name: str, body: kopf.Body) -> bool:
    """Whether the event is this process's last status patch coming back, and nothing newer.

    The reconcile that wrote it has acted on it already: waking it at once ran
    the bundle's reconcile again per status write, back to back while its pods
    reported (a rollback's counts change with every report); it is woken settled
    (:meth:`Memo.wake_settled`).  A change by anyone else has a later
    resourceVersion, and wakes it at once.
    """
    key = (namespace, name)
    if key not in runtime.memories:
        return False
    written = runtime.memories.get(key).written
    if written is None:
        return False
    mine = (written.get("metadata") or {}).get("resourceVersion")
    return bool(mine) and (body.get("metadata") or {}).get("resourceVersion") == mine


async def run_bundle(
    memo: Memo,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    ns = namespace or ""
    key = (ns, name)
    wake = memo.wakeups.setdefault(key, asyncio.Event())
    loop = asyncio.get_running_loop()
    try:
        while not stopped:
            wake.clear()
            wait = 1.0
            if memo.pods is not None and not memo.pods.synced:
                # A reconcile never judges a view of the pods not listed yet.
                await _sleep(wake, stopped, 0.5)
                continue
            if memo.runtime is not None:
                began = loop.time()
                try:
                    pods = memo.pods.in_namespace(ns) if memo.pods is not None else []
                    wait = await reconcile(memo.runtime, body=_plain(body), pods=pods)
                except Exception:
                    logger.exception("%s/%s: reconcile failed; retrying", ns, name)
                    wait = RETRY_REQUEUE
                ended = loop.time()
                memo.settle_until[key] = ended + min(ended - began, REPORT_SETTLE_LIMIT)
            await _rest(memo, key, wake, stopped, wait)
    finally:
        if memo.wakeups.get(key) is wake:
            del memo.wakeups[key]
            memo.settle_until.pop(key, None)


async def _rest(
    memo: Memo,
    key: tuple[str, str],
    wake: asyncio.Event,
    stopped: kopf.DaemonStopped,
    seconds: float,
) -> None:
    """Like :func:`_sleep`, refreshing the version health series every :data:`HEALTH_REFRESH`.

    A bundle at rest may sleep an hour; its stable version's health series
    must not be an hour old (see :mod:`._health`).
    """
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while True:
        await _sleep(wake, stopped, min(until - loop.time(), HEALTH_REFRESH))
        if wake.is_set() or stopped or loop.time() >= until or memo.runtime is None:
            return
        await refresh_health(memo.runtime, namespace=key[0], name=key[1])


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Until woken, stopped, or ``seconds`` pass, whichever comes first."""
    waiters = {
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(stopped.wait()),
    }
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


REPORT_SETTLE_LIMIT = 0.5
"""Seconds: the longest a report's wake waits after a reconcile (see :meth:`Memo.wake_settled`)."""

RELEASE_DEADLINE = 60.0
"""Seconds a deleted LogicBundle waits for its pods to leave a candidate before letting go."""


async def release(memo: Memo, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
    """Deletion: pods keep the last stable version, unmanaged (see the module docstring).

    A candidate in flight is withdrawn first: the state "every pod on stable"
    (:func:`logicbundle.rollout.released`, newer than the state in flight) is
    published where every agent looks: the status (the distributor replicas
    read it), the state ConfigMap (the slow path) and this process's
    distributor.  The finalizer then waits (up to :data:`RELEASE_DEADLINE`)
    until the agents' summed reports count no pod on the candidate; a count
    that is incomplete (a replica that does not answer) waits too.  Then the
    distributor forgets the bundle and its state ConfigMap is deleted, so
    agents keep what is active; last, this process forgets all it remembered
    of the bundle (:meth:`Runtime.forget`).
    """
    runtime = memo.runtime
    if runtime is None:
        raise kopf.TemporaryError("the operator is starting", delay=1)
    ns = namespace or ""
    # Our own status patch (below) may not have reached kopf's body yet.
    plain = _freshest(_plain(body), runtime.memories.get((ns, name)).written)
    meta = plain["metadata"] or {}
    try:
        status: LogicBundleStatus | None = LogicBundleStatus.model_validate(
            plain.get("status") or {}
        )
    except ValidationError:
        status = None
    stable = status.stable_digest if status is not None else None
    candidate = status.candidate_digest if status is not None else None
    if stable is not None and candidate is not None and candidate != stable:
        try:
            spec = LogicBundleSpec.model_validate(plain.get("spec") or {})
        except ValidationError:
            spec = None
        state = rollout.released(status, bundle=name, now=datetime.now(UTC))
        if spec is not None and state is not None:
            await _withdraw(runtime, namespace=ns, name=name, body=plain, spec=spec, state=state)
            summary = await runtime.agents.summaries.summary(ns, name, since=None)
            still = None if summary is None else summary.active.get(candidate, 0)
            waited = _seconds_since(meta.get("deletionTimestamp"))
            if still != 0 and waited < RELEASE_DEADLINE:
                raise kopf.TemporaryError(
                    f"{still} pod(s) still run the candidate; waiting for them to go back"
                    if still is not None
                    else "the agents' reports are incomplete; waiting for every pod to go back",
                    delay=1,
                )
    runtime.agents.rules.set_bundle(ns, name, None)
    await runtime.kube.run(runtime.kube.delete_state, ns, name)
    runtime.forget((ns, name))
    logger.info("%s/%s deleted: pods released, keeping %s", ns, name, stable or "what they run")


async def _withdraw(
    runtime: Runtime,
    *,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    spec: LogicBundleSpec,
    state: contract.RolloutState,
) -> None:
    """Publish ``state`` (every pod on stable) in the status, the ConfigMap and the distributor.

    The status first: the replicas follow ``status.targetState`` (the fields of
    the state in flight are nulled), and a retry that finds it there writes
    nothing again.
    """
    published = contract.state_to_json(state)
    before = (body.get("status") or {}).get("targetState") or {}
    if before != published:
        stored = await runtime.kube.run(
            runtime.kube.patch_status,
            namespace,
            name,
            {"targetState": _with_nulls(before, published)},
        )
        if stored is not None:
            runtime.memories.get((namespace, name)).written = stored
    await publish_state(
        runtime,
        namespace=namespace,
        name=name,
        owner_uid=(body.get("metadata") or {}).get("uid"),
        spec=spec,
        state=state,
    )


def _seconds_since(timestamp: Any) -> float:
    if not isinstance(timestamp, str):
        return 0.0
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - then).total_seconds()


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", names.API_VERSION),
        "kind": body.get("kind", names.KIND),
        "metadata": _thaw(body.metadata),
        "spec": _thaw(body.spec),
        "status": _thaw(body.status),
    }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message[:1024])
