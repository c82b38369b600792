"""The kopf handlers: a daemon per LogicBundle, a pod index, the embedded distributor.

Why a daemon per LogicBundle rather than timers: a rollout must react to an
agent's report within milliseconds (a failed verdict rolls every pod back in
under a second), so each bundle has a loop that reconciles, then sleeps until
its requeue time or until something wakes it: a change of the bundle, of one
of its namespace's opted-in pods, or a report from an agent.

Deletion: a finalizer holds the LogicBundle until its pods are released. Each
pod keeps the last stable version, unmanaged: in-flight candidates go back to
stable, the target annotations are removed, and the distributor forgets the
pods (agents keep what is active; nothing is deleted inside the pods).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
import kubernetes.client
from prometheus_client import start_http_server

from logicbundle import rollout
from logicbundle.api import names
from logicbundle.api.v1alpha1 import LogicBundleStatus
from logicbundle.controller._kube import Kube, api_client
from logicbundle.controller._leader import LeaderLabeler, LeaderSettings
from logicbundle.controller._metrics import OperatorMetrics
from logicbundle.controller._reconcile import (
    RETRY_REQUEUE,
    PodSnapshot,
    Runtime,
    reconcile,
    snapshot_pod,
)
from logicbundle.controller._source import BundleCache
from logicbundle.controller._tls import ReloadingCertificate
from logicbundle.controller._webhook import RunningWebhook, WebhookSettings, start_webhook
from logicbundle.distributor import (
    BlobCache,
    CachingAuthenticator,
    DistributorServer,
    PodActivity,
    PodStatusWriter,
    ReportStore,
    TargetStore,
    TokenReviewAuthenticator,
    create_app,
)

logger = logging.getLogger("logicbundle.operator")

GROUP, VERSION, PLURAL = names.GROUP, names.VERSION, names.PLURAL
INJECTED = {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED}


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
    certificate: asyncio.Task[None] | None = None
    """Follows renewals of the distributor's certificate (see :mod:`._tls`)."""
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def wake(self, namespace: str, name: str | None = None) -> None:
        for (ns, bundle), event in self.wakeups.items():
            if ns == namespace and (name is None or bundle == name):
                event.set()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register every handler on ``registry``; they share the :class:`Memo` passed to kopf."""
    kopf.on.startup(registry=registry)(start)
    kopf.on.cleanup(registry=registry)(stop)
    kopf.index("pods", labels=INJECTED, registry=registry)(pods_by_namespace)
    kopf.on.event("pods", labels=INJECTED, registry=registry)(pod_changed)
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)(bundle_changed)
    kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)(run_bundle)
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)(release)


async def start(memo: Memo, logger: kopf.Logger, **_: Any) -> None:
    settings = memo.settings
    client = api_client()
    kube = Kube(client)
    metrics = OperatorMetrics()
    targets, reports = TargetStore(), ReportStore()
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    blobs = BlobCache(settings.cache_dir)
    memo.runtime = Runtime(
        kube=kube,
        reader=kube,
        targets=targets,
        reports=reports,
        cache=BundleCache(blobs),
        metrics=metrics,
        post_event=_post_event,
    )
    if settings.metrics_port is not None:
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry
        )
    if settings.webhook is not None:
        memo.webhook = await start_webhook(settings.webhook, client)
        logger.info("webhook listening on port %d", memo.webhook.server.port)
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
    # Its own threads: hundreds of reports after a swap must not queue behind the
    # reconcile's calls (the default pool has CPU count + 4 threads).
    writer = PodStatusWriter(
        api_client=client, executor=ThreadPoolExecutor(32, thread_name_prefix="pod-status")
    )

    async def on_activity(activity: PodActivity) -> None:
        # The controller reads what pods run from the report store, not from the pod:
        # wake it before the (slower) durable write.
        memo.wake(activity.namespace)
        await writer(activity)

    app = create_app(
        targets=targets,
        blobs=blobs,
        reports=reports,
        authenticator=CachingAuthenticator(TokenReviewAuthenticator(api_client=client)),
        audience=names.DISTRIBUTOR_AUDIENCE,
        on_activity=on_activity,
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
    if memo.runtime is not None:
        memo.runtime.targets.close()
        memo.runtime.kube.close()


def pods_by_namespace(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str, PodSnapshot]:
    return {namespace or "": snapshot_pod(body)}


def pod_changed(memo: Memo, namespace: str | None, **_: Any) -> None:
    memo.wake(namespace or "")


def bundle_changed(memo: Memo, namespace: str | None, name: str, **_: Any) -> None:
    memo.wake(namespace or "", name)


async def run_bundle(
    memo: Memo,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    index: kopf.Index[str, PodSnapshot] = kwargs["pods_by_namespace"]
    ns = namespace or ""
    key = (ns, name)
    wake = memo.wakeups.setdefault(key, asyncio.Event())
    try:
        while not stopped:
            wake.clear()
            wait = 1.0
            if memo.runtime is not None:
                try:
                    pods = list(index.get(ns, []))
                    wait = await reconcile(memo.runtime, body=_plain(body), pods=pods)
                except Exception:
                    logger.exception("%s/%s: reconcile failed; retrying", ns, name)
                    wait = RETRY_REQUEUE
            await _sleep(wake, stopped, wait)
    finally:
        if memo.wakeups.get(key) is wake:
            del memo.wakeups[key]


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


async def release(
    memo: Memo, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any
) -> None:
    """Deletion: pods keep the last stable version, unmanaged (see the module docstring)."""
    runtime = memo.runtime
    if runtime is None:
        raise kopf.TemporaryError("the operator is starting", delay=1)
    index: kopf.Index[str, PodSnapshot] = kwargs["pods_by_namespace"]
    ns = namespace or ""
    status = LogicBundleStatus.model_validate(_thaw(body.status) or {})
    annotation = names.target_annotation(name)
    pods = [p for p in index.get(ns, []) if annotation in p.annotations]
    stable = status.stable_digest
    # The annotation records what each pod keeps (no candidate); the distributor stops
    # answering for this bundle, so agents keep what is active.
    value = rollout.format_target(rollout.PodTarget(digest=stable)) if stable else None
    tasks = []
    for pod in pods:
        key = (pod.namespace, pod.name)
        per_pod = runtime.pod_targets.get(key, {})
        per_pod.pop(name, None)
        if per_pod:
            runtime.targets.set_targets(pod.namespace, pod.name, per_pod, uid=pod.uid)
        else:
            runtime.pod_targets.pop(key, None)
            runtime.targets.forget(pod.namespace, pod.name)
        if pod.annotations.get(annotation) != value:
            tasks.append(
                runtime.kube.run(
                    runtime.kube.patch_pod_annotations, pod.namespace, pod.name, {annotation: value}
                )
            )
    await asyncio.gather(*tasks)
    runtime.metrics.forget(namespace=ns, name=name)
    runtime.restarts.forget_bundle(bundle=name, namespace=ns)
    runtime.sources.pop((ns, name), None)
    runtime.written.pop((ns, name), None)
    logger.info(
        "%s/%s deleted: %d pods released, keeping %s", ns, name, len(pods), value or "what they run"
    )


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
