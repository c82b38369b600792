"""The HTTP API the agents talk to (see ``docs/distributor-protocol.md``).

Thin I/O: every decision (what a pod is assigned, what it may fetch, what its
report changes) lives in the stores; the handlers authenticate, parse, ask the
stores and format.  The caller's identity always comes from its token: a
``pod`` or ``namespace`` query parameter is only a consistency check, and a
mismatch is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from logicbundle import contract
from logicbundle.distributor._auth import (
    AuthenticationFailedError,
    AuthenticationUnavailableError,
    Authenticator,
)
from logicbundle.distributor._blobs import BlobCache
from logicbundle.distributor._metrics import DistributorMetrics
from logicbundle.distributor._models import (
    PodIdentity,
    PodRef,
    parse_report,
)
from logicbundle.distributor._reports import PodActivity, ReportStore
from logicbundle.distributor._targets import TargetSnapshot, TargetStore
from logicbundle.distributor._traces import SwapSpans
from logicbundle.distributor._upstream import Upstream, UpstreamError
from logicbundle.oci import OCI_MANIFEST, is_digest

logger = logging.getLogger("logicbundle.distributor")

DEFAULT_MAX_WAIT_SECONDS: Final = 300.0
DEFAULT_MAX_REPORT_BYTES: Final = 256 * 1024
_CHUNK: Final = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

TOKEN_HEADER: Final = contract.TOKEN_HEADER
"""Where a token may travel instead of ``Authorization`` (through the API server's proxy)."""

ActivityCallback = Callable[[PodActivity], Awaitable[None]]
"""Called with a pod's new active digests / readiness; raising leaves it to be retried."""


@dataclass(frozen=True, kw_only=True)
class _Deps:
    targets: TargetStore
    blobs: BlobCache
    reports: ReportStore
    authenticator: Authenticator
    metrics: DistributorMetrics
    on_activity: ActivityCallback | None
    max_wait: float
    audience: str
    assigns: Callable[[str, str, str], bool] | None = None
    """``(namespace, pod, bundle)``: the bundle's rule gives the pod a target (summaries)."""
    peers: frozenset[tuple[str, str]] = frozenset()
    """``(namespace, service account)`` of the operator, who may read summaries."""
    viewers: frozenset[tuple[str, str]] = frozenset()
    """``(namespace, service account)`` who may read each pod's report (``status --pods``)."""
    replicas: frozenset[tuple[str, str]] = frozenset()
    """``(namespace, service account)`` of distributor replicas, who may fetch the bytes of
    any published digest (the operator's side)."""
    published: Callable[[], set[str]] | None = None
    """The digests the bundles' published states name (the operator verified each)."""
    upstream: Upstream | None = None
    """Where a replica fills its cache from (the operator); None: serve what is cached."""
    deliveries: set[asyncio.Task[None]] = field(default_factory=set)
    """Background pod writes in flight (kept referenced until done)."""
    pod_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    """One write at a time per pod, in the order the reports arrived."""
    swaps: SwapSpans | None = None
    """Exports the reported swaps as spans of their rollouts' traces (None: tracing off)."""
    unknown_logged: set[str] = field(default_factory=set)
    """Unknown report fields already logged (each once; see :func:`_note_unknown`)."""


_DEPS: Final = web.AppKey("logicbundle_distributor", _Deps)


def _error(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"reason": reason, "message": message}}, status=status, headers=headers
    )


def _deps(request: web.Request) -> _Deps:
    return request.app[_DEPS]


class _Refused(Exception):  # control flow inside a handler; never escapes
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _identify(request: web.Request) -> PodIdentity:
    """The calling pod, from its bearer token; :class:`_Refused` with 401/403/503 otherwise."""
    deps = _deps(request)
    challenge = {"WWW-Authenticate": f'Bearer realm="{deps.audience}"'}
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    forwarded = request.headers.get(TOKEN_HEADER, "").strip()
    if forwarded:
        # Through the API server's proxy (``logicbundle status --pods``), which answers
        # for the Authorization header itself: the token travels in a header of ours.
        scheme, token = "bearer", forwarded
    if scheme.lower() != "bearer" or not token:
        deps.metrics.auth_failures.labels("missing").inc()
        raise _Refused(
            _error(
                401,
                "Unauthenticated",
                "send the pod's projected token as a Bearer token",
                **challenge,
            )
        )
    try:
        identity = await deps.authenticator.authenticate(token)
    except AuthenticationFailedError as exc:
        deps.metrics.auth_failures.labels("invalid").inc()
        raise _Refused(_error(401, exc.reason, exc.message, **challenge)) from None
    except AuthenticationUnavailableError as exc:
        deps.metrics.auth_failures.labels("unavailable").inc()
        logger.warning("cannot check a token: %s", exc.message)
        raise _Refused(_error(503, exc.reason, exc.message, **{"Retry-After": "1"})) from None
    namespace = request.query.get("namespace")
    pod = request.query.get("pod")
    if (namespace is not None and namespace != identity.namespace) or (
        pod is not None and pod != identity.name
    ):
        deps.metrics.auth_failures.labels("other_pod").inc()
        raise _Refused(_error(403, "Forbidden", "a pod may only read and report for itself"))
    return identity


def _guard(
    handler: Callable[[web.Request, PodIdentity], Awaitable[web.StreamResponse]],
    *,
    pod: bool = True,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authenticate, then call ``handler``; ``pod``: the caller must be a pod (its token bound
    to it), as every agent endpoint requires."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            identity = await _identify(request)
            if pod and not (identity.name and identity.uid):
                deps = _deps(request)
                deps.metrics.auth_failures.labels("invalid").inc()
                return _error(
                    401,
                    "AuthenticationFailed",
                    "the token is not bound to a pod: the agent must present a projected "
                    "service-account token bound to its pod",
                    **{"WWW-Authenticate": f'Bearer realm="{deps.audience}"'},
                )
            return await handler(request, identity)
        except _Refused as refused:
            return refused.response

    return wrapped


# --- targets -------------------------------------------------------------------------


def _targets_response(
    identity: PodIdentity, snapshot: TargetSnapshot, store: TargetStore
) -> web.Response:
    # A TargetsResponse, put together from parts: the targets' JSON is encoded once per
    # version and shared by every pod of a cohort (a rollback answers thousands at once).
    pod = PodRef(namespace=identity.namespace, name=identity.name, uid=identity.uid)
    body = b"".join(
        (
            b'{"version":',
            json.dumps(snapshot.version).encode(),
            b',"pod":',
            pod.model_dump_json(exclude_none=True).encode(),
            b',"known":',
            b"true" if snapshot.known else b"false",
            b',"targets":',
            store.targets_json(snapshot),
            b"}",
        )
    )
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"ETag": f'"{snapshot.version}"', "Cache-Control": "no-store"},
    )


def _not_modified(snapshot: TargetSnapshot) -> web.Response:
    return web.Response(
        status=304, headers={"ETag": f'"{snapshot.version}"', "Cache-Control": "no-store"}
    )


def _parse_wait(raw: str | None, cap: float) -> float:
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise _Refused(_error(400, "BadRequest", "wait must be a number of seconds >= 0"))
    return min(wait, cap)


async def _get_targets(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    deps = _deps(request)
    wait = _parse_wait(request.query.get("wait"), deps.max_wait)
    version = request.query.get("version")
    if version is None and "If-None-Match" in request.headers:
        version = request.headers["If-None-Match"].strip().strip('"')
    ns, name, uid = identity.namespace, identity.name, identity.uid
    snapshot = deps.targets.get(ns, name, uid=uid)
    if version is not None and snapshot.version == version and wait > 0:
        deps.metrics.long_polls_open.inc()
        try:
            snapshot = await deps.targets.wait_for_change(
                ns, name, uid=uid, version=version, wait_seconds=wait
            )
        finally:
            deps.metrics.long_polls_open.dec()
    if version is not None and snapshot.version == version:
        deps.metrics.target_responses.labels("304").inc()
        return _not_modified(snapshot)
    deps.metrics.target_responses.labels("200").inc()
    return _targets_response(identity, snapshot, deps.targets)


# --- manifests and blobs ----------------------------------------------------------------


def _allowed(deps: _Deps, identity: PodIdentity) -> tuple[set[str], set[str]]:
    """The manifest digests the caller may fetch, and the blobs those manifests name.

    A pod: the digests it is assigned.  A distributor replica: every digest a
    published state names (each was verified by the operator before it was
    published).
    """
    if (identity.namespace, identity.service_account) in deps.replicas and deps.published:
        manifests = set(deps.published())
    else:
        snapshot = deps.targets.get(identity.namespace, identity.name, uid=identity.uid)
        manifests = {d for target in snapshot.targets.values() for d in target.digests()}
    blobs: set[str] = set()
    for digest in manifests:
        entry = deps.blobs.get(digest)
        if entry is not None:
            blobs.update(entry.blobs())
    return manifests, blobs


def _digest_param(request: web.Request) -> str:
    digest = request.match_info["digest"]
    if not is_digest(digest):
        raise _Refused(_error(400, "BadRequest", "the path must end in a sha256:<hex> digest"))
    return digest


def _forbidden(deps: _Deps, digest: str) -> web.Response:
    deps.metrics.auth_failures.labels("not_assigned").inc()
    return _error(403, "Forbidden", f"{digest} is not assigned to this pod")


async def _get_manifest(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    deps = _deps(request)
    digest = _digest_param(request)
    manifests, _ = _allowed(deps, identity)
    if digest not in manifests:
        return _forbidden(deps, digest)
    data = deps.blobs.manifest_bytes(digest)
    if data is None and deps.upstream is not None:
        try:
            await deps.upstream.fill(digest)
        except UpstreamError as exc:
            logger.warning("cannot fill %s from the operator: %s", digest, exc)
        data = deps.blobs.manifest_bytes(digest)
    if data is None:
        return _error(404, "NotCached", f"{digest} is not cached; pull it from the registry")
    etag = f'"{digest}"'
    headers = {"ETag": etag, "Docker-Content-Digest": digest}
    if request.headers.get("If-None-Match", "").strip() == etag:
        return web.Response(status=304, headers=headers)
    deps.metrics.blob_bytes_served.inc(len(data))
    return web.Response(body=data, content_type=OCI_MANIFEST, headers=headers)


_UNSATISFIABLE: Final = (-1, -1)


def _byte_range(request: web.Request, size: int, etag: str) -> tuple[int, int] | None:
    """(start, end exclusive) of a single Range; None: send it all; ``_UNSATISFIABLE``: 416."""
    header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    match = _RANGE.match(header.strip())
    # Multiple or unknown ranges: RFC 9110 lets a server send the whole representation.
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(size - int(last), 0), size
    if start >= end:
        return _UNSATISFIABLE
    return (start, end)


async def _get_blob(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    deps = _deps(request)
    digest = _digest_param(request)
    manifests, blobs = _allowed(deps, identity)
    if digest not in blobs and deps.upstream is not None:
        # The pod read the manifest from another replica (any replica serves any pod):
        # its blobs are known here once this replica has the manifest too.
        for manifest in manifests:
            if deps.blobs.get(manifest) is None:
                try:
                    await deps.upstream.fill(manifest)
                except UpstreamError as exc:
                    logger.warning("cannot fill %s from the operator: %s", manifest, exc)
        manifests, blobs = _allowed(deps, identity)
    if digest not in blobs:
        return _forbidden(deps, digest)
    path = deps.blobs.blob_path(digest)
    if path is None:
        return _error(404, "NotCached", f"{digest} is not cached; pull it from the registry")
    size = path.stat().st_size
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Docker-Content-Digest": digest,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if request.headers.get("If-None-Match", "").strip() == etag:
        return web.Response(status=304, headers=headers)
    span = _byte_range(request, size, etag)
    if span == _UNSATISFIABLE:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    status = 200
    start, end = 0, size
    if span is not None:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = end - start
    await response.prepare(request)
    if request.method != "HEAD":
        await _stream(path, response, start=start, end=end, metrics=deps.metrics)
    await response.write_eof()
    return response


async def _stream(
    path: Path, response: web.StreamResponse, *, start: int, end: int, metrics: DistributorMetrics
) -> None:
    loop = asyncio.get_running_loop()
    with path.open("rb") as fh:  # opening is cheap; reads go to a thread
        fh.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = await loop.run_in_executor(None, fh.read, min(_CHUNK, remaining))
            if not chunk:
                break  # the file shrank: the client sees a short body and its digest check fails
            await response.write(chunk)
            metrics.blob_bytes_served.inc(len(chunk))
            remaining -= len(chunk)


# --- reports ---------------------------------------------------------------------------


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:10]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


async def _post_report(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    deps = _deps(request)
    if request.content_type != "application/json":
        deps.metrics.reports_received.labels("rejected").inc()
        return _error(415, "UnsupportedMediaType", "send the report as application/json")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        deps.metrics.reports_received.labels("rejected").inc()
        return _error(413, "TooLarge", f"a report is at most {request.client_max_size} bytes")
    try:
        report, unknown, named = parse_report(body)
    except ValidationError as exc:
        deps.metrics.reports_received.labels("rejected").inc()
        return _error(400, "InvalidReport", f"the report is invalid: {_describe(exc)}")
    deps.metrics.reports_received.labels("accepted").inc()
    if unknown:
        _note_unknown(deps, identity, unknown, named)
    if deps.swaps is not None:
        deps.swaps.observe(identity, report, received_ns=time.time_ns())
    snapshot = deps.targets.get(identity.namespace, identity.name, uid=identity.uid)
    activity = deps.reports.record(
        identity, report, targets=snapshot.targets if snapshot.known else None
    )
    if activity is not None and deps.on_activity is not None:
        # Answer at once and record on the pod in the background: the agent need not wait
        # for two API writes, and a failed write is retried by the agent's next report
        # (what was not delivered is not marked delivered).
        task = asyncio.create_task(_deliver(deps, activity))
        deps.deliveries.add(task)
        task.add_done_callback(deps.deliveries.discard)
    elif activity is not None:
        deps.reports.mark_delivered(activity)
    return web.Response(status=204)


_MAX_UNKNOWN_LOGGED: Final = 64


def _note_unknown(deps: _Deps, identity: PodIdentity, count: int, named: tuple[str, ...]) -> None:
    """Count the fields a report carried that this version ignores; log each new one once.

    An agent newer than this distributor reports fields it does not know yet
    (an upgrade in progress): the report is accepted, the fields are dropped.
    """
    deps.metrics.report_unknown_fields.inc(count)
    new = [n for n in dict.fromkeys(named) if n not in deps.unknown_logged]
    new = new[: max(0, _MAX_UNKNOWN_LOGGED - len(deps.unknown_logged))]
    if new:
        deps.unknown_logged.update(new)
        logger.warning(
            "pod %s/%s reported fields this distributor does not know, ignored (an agent "
            "newer than the distributor?): %s",
            identity.namespace,
            identity.name,
            ", ".join(new),
        )


async def _deliver(deps: _Deps, activity: PodActivity) -> None:
    assert deps.on_activity is not None  # noqa: S101 - only scheduled when there is one
    lock = deps.pod_locks.setdefault((activity.namespace, activity.name), asyncio.Lock())
    try:
        async with lock:
            await deps.on_activity(activity)
    except Exception:
        deps.metrics.status_writes.labels("failed").inc()
        logger.exception(
            "recording the active bundles of pod %s/%s failed; the next report retries",
            activity.namespace,
            activity.name,
        )
    else:
        deps.metrics.status_writes.labels("written").inc()
        deps.reports.mark_delivered(activity)


# --- the leader's reads -------------------------------------------------------------------


def _bundle_query(request: web.Request) -> tuple[str, str]:
    """The ``bundleNamespace`` and ``bundle`` query parameters; :class:`_Refused` (400) if not."""
    namespace = request.query.get("bundleNamespace", "")
    bundle = request.query.get("bundle", "")
    if not namespace or not bundle or len(namespace) > 63 or len(bundle) > 253:
        raise _Refused(_error(400, "InvalidRequest", "bundleNamespace and bundle are required"))
    return namespace, bundle


def _assigned(deps: _Deps, namespace: str, bundle: str) -> Callable[[str], bool]:
    """Whether the bundle's rule gives a pod (by name) a target: only those pods count."""
    assigns = deps.assigns
    if assigns is None:
        return lambda _pod: True
    return lambda pod: assigns(namespace, pod, bundle)


async def _get_summary(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    """One bundle's reports summed per digest, for the operator (see :mod:`._summary`)."""
    deps = _deps(request)
    if (identity.namespace, identity.service_account) not in deps.peers:
        deps.metrics.auth_failures.labels("not_a_peer").inc()
        return _error(403, "Forbidden", "only the operator reads summaries")
    namespace, bundle = _bundle_query(request)
    try:
        since = _since(deps, request.query.get("since"))
    except ValueError:
        return _error(400, "InvalidRequest", "since must be seconds since the epoch")
    summary = deps.reports.summary(
        namespace, bundle, since=since, assigned=_assigned(deps, namespace, bundle)
    )
    return web.json_response(summary.to_json())


MAX_SUMMARY_BATCH: Final = 500
"""Bundles one ``POST /v1/summaries`` may ask for (its body stays under the report limit)."""


def _since(deps: _Deps, raw: object) -> float | None:
    """``since`` (seconds since the epoch) on the report store's clock; ValueError if bad."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ValueError(raw)
    since_wall = float(raw)
    if not math.isfinite(since_wall):
        raise ValueError(raw)
    return deps.reports.clock() - max(0.0, time.time() - since_wall)


async def _post_summaries(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    """Many bundles' summaries in one answer, for the operator (see :mod:`._summary`).

    The leader's reconciles of many LogicBundles share one request per replica
    (the controller batches them), instead of one each: at 1,000 LogicBundles
    the per-bundle reads alone kept a replica busy.  Body: ``{"bundles":
    [{"bundleNamespace", "bundle", "since"?}, ...]}`` (at most
    :data:`MAX_SUMMARY_BATCH`); answer: ``{"summaries": [...]}`` in that order.
    """
    deps = _deps(request)
    if (identity.namespace, identity.service_account) not in deps.peers:
        deps.metrics.auth_failures.labels("not_a_peer").inc()
        return _error(403, "Forbidden", "only the operator reads summaries")
    summaries = [
        deps.reports.summary(
            namespace, bundle, since=since, assigned=_assigned(deps, namespace, bundle)
        ).to_json()
        for namespace, bundle, since in await _summary_batch(request, deps)
    ]
    return web.json_response({"summaries": summaries})


def _invalid(message: str) -> _Refused:
    return _Refused(_error(400, "InvalidRequest", message))


async def _summary_batch(request: web.Request, deps: _Deps) -> list[tuple[str, str, float | None]]:
    """The bundles a ``POST /v1/summaries`` asks for; :class:`_Refused` (400/413) if bad."""
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise _Refused(
            _error(413, "TooLarge", f"a request is at most {request.client_max_size} bytes")
        ) from None
    except ValueError:
        raise _invalid("the body must be JSON") from None
    asked = body.get("bundles") if isinstance(body, dict) else None
    if not isinstance(asked, list) or len(asked) > MAX_SUMMARY_BATCH:
        raise _invalid(f"bundles must be a list of at most {MAX_SUMMARY_BATCH} objects")
    batch = []
    for entry in asked:
        if not isinstance(entry, dict):
            raise _invalid("each entry must be an object")
        namespace, bundle = entry.get("bundleNamespace"), entry.get("bundle")
        if (
            not isinstance(namespace, str)
            or not isinstance(bundle, str)
            or not 0 < len(namespace) <= 63
            or not 0 < len(bundle) <= 253
        ):
            raise _invalid("bundleNamespace and bundle are required")
        try:
            since = _since(deps, entry.get("since"))
        except ValueError:
            raise _invalid("since must be seconds since the epoch") from None
        batch.append((namespace, bundle, since))
    return batch


async def _get_pods(request: web.Request, identity: PodIdentity) -> web.StreamResponse:
    """Each pod's latest report for one bundle: what ``logicbundle status --pods`` lists."""
    deps = _deps(request)
    caller = (identity.namespace, identity.service_account)
    if caller not in deps.peers and caller not in deps.viewers:
        deps.metrics.auth_failures.labels("not_a_peer").inc()
        return _error(403, "Forbidden", "only the operator and its status readers read pods")
    namespace, bundle = _bundle_query(request)
    pods = deps.reports.pods(namespace, bundle, assigned=_assigned(deps, namespace, bundle))
    return web.json_response({"pods": pods})


# --- unauthenticated ----------------------------------------------------------------------


async def _healthz(_: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def _metrics(request: web.Request) -> web.StreamResponse:
    data = generate_latest(_deps(request).metrics.registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    *,
    targets: TargetStore,
    blobs: BlobCache,
    reports: ReportStore,
    authenticator: Authenticator,
    audience: str,
    metrics: DistributorMetrics | None = None,
    on_activity: ActivityCallback | None = None,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    max_report_bytes: int = DEFAULT_MAX_REPORT_BYTES,
    assigns: Callable[[str, str, str], bool] | None = None,
    peers: frozenset[tuple[str, str]] = frozenset(),
    viewers: frozenset[tuple[str, str]] = frozenset(),
    replicas: frozenset[tuple[str, str]] = frozenset(),
    published: Callable[[], set[str]] | None = None,
    upstream: Upstream | None = None,
    swaps: SwapSpans | None = None,
) -> web.Application:
    """The distributor's aiohttp application; run it with :class:`DistributorServer`.

    On shutdown every waiting long-poll is answered at once.
    """
    app = web.Application(client_max_size=max_report_bytes)
    app[_DEPS] = _Deps(
        targets=targets,
        blobs=blobs,
        reports=reports,
        authenticator=authenticator,
        metrics=metrics if metrics is not None else DistributorMetrics(),
        on_activity=on_activity,
        max_wait=max_wait_seconds,
        audience=audience,
        assigns=assigns,
        peers=peers,
        viewers=viewers,
        replicas=replicas,
        published=published,
        upstream=upstream,
        swaps=swaps if swaps is not None and swaps.tracing.enabled else None,
    )
    app.router.add_get("/v1/targets", _guard(_get_targets))
    app.router.add_get("/v1/manifests/{digest}", _guard(_get_manifest))
    app.router.add_get("/v1/blobs/{digest}", _guard(_get_blob))
    app.router.add_post("/v1/reports", _guard(_post_report))
    app.router.add_get("/v1/summary", _guard(_get_summary, pod=False))
    app.router.add_post("/v1/summaries", _guard(_post_summaries, pod=False))
    app.router.add_get("/v1/pods", _guard(_get_pods, pod=False))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)

    async def release_long_polls(_: web.Application) -> None:
        targets.close()

    async def finish_deliveries(app: web.Application) -> None:
        pending = list(app[_DEPS].deliveries)
        if pending:
            await asyncio.wait(pending, timeout=5)

    app.on_shutdown.append(release_long_polls)
    app.on_cleanup.append(finish_deliveries)
    return app
