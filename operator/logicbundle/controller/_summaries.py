"""Where the controller reads what the agents reported: sums per bundle and digest.

The operator's leader holds no per-pod state of the agents.  Each reconcile
asks a :class:`SummarySource` for one bundle's
:class:`~logicbundle.distributor.BundleSummary` (the SDK counters' increase
since the analysis window started, the pods active per digest, the failures)
and turns it into the rollout core's :class:`~logicbundle.rollout.Observed`
and builtin analysis samples.

* :class:`LocalSummaries`: the distributor embedded in this process (one
  replica; its report store is read in memory).
* A source that asks every distributor replica over HTTP sums their answers
  with :func:`~logicbundle.distributor.combine`; when one does not answer it
  returns None, and a stage never advances (nor passes an analysis) on a
  partial view.

:class:`AgentsView` is the distributor side as the controller holds it: the
rules that give every pod its targets, and where the agents' reports are
read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import kubernetes.client

from logicbundle import rollout
from logicbundle.controller._kube import Kube
from logicbundle.distributor import (
    BundleSummary,
    ReportStore,
    RuleTargets,
    SummaryError,
    TargetStore,
    combine,
    summary_from_json,
)

logger = logging.getLogger("logicbundle.controller")


class SummarySource(Protocol):
    async def summary(
        self, namespace: str, bundle: str, *, since: float | None
    ) -> BundleSummary | None:
        """``bundle``'s summary; ``since`` in seconds since the epoch; None: incomplete."""
        ...


@dataclass(frozen=True)
class LocalSummaries:
    """The embedded distributor's reports, summed in memory."""

    reports: ReportStore
    rules: RuleTargets

    async def summary(
        self, namespace: str, bundle: str, *, since: float | None
    ) -> BundleSummary | None:
        start = None
        if since is not None:
            start = self.reports.clock() - max(0.0, time.time() - since)
        return self.reports.summary(
            namespace,
            bundle,
            since=start,
            assigned=lambda pod: self.rules.assigns(namespace, pod, bundle),
        )


@dataclass(kw_only=True)
class AgentsView:
    """What the agents are told and what they report, process-wide.

    ``rules`` turns each bundle's published state into every pod's targets
    (the embedded distributor serves :attr:`targets`); ``reports`` holds what
    the agents of this process's distributor sent.
    """

    rules: RuleTargets
    reports: ReportStore
    summary_source: SummarySource | None = None
    """Where the agents' reports are read, summed (None: this process's report store)."""

    @property
    def summaries(self) -> SummarySource:
        if self.summary_source is None:
            self.summary_source = LocalSummaries(self.reports, self.rules)
        return self.summary_source

    @property
    def targets(self) -> TargetStore:
        return self.rules.store


def observed(summary: BundleSummary | None) -> rollout.Observed:
    """The core's view of a summary (None: incomplete, nothing counted)."""
    if summary is None:
        return rollout.Observed(complete=False)
    return rollout.Observed(
        active=dict(summary.active),
        failures={
            digest: rollout.PodFailure(
                digest=digest, at=f.at, message=f.message, pod=f.pod, pods=f.pods
            )
            for digest, f in summary.failures.items()
        },
    )


@dataclass(frozen=True, kw_only=True)
class ReplicaSettings:
    """The distributor replicas this operator works with (``logicbundle distributor``).

    ``urls`` (local runs) or ``service`` (its EndpointSlices in ``namespace``)
    say where the agents' reports are read; ``accounts`` are the replicas'
    ServiceAccounts, which may fetch the bytes of published digests from this
    operator's distributor.
    """

    urls: tuple[str, ...] = ()
    service: str | None = None
    namespace: str = "logicbundle-system"
    accounts: tuple[tuple[str, str], ...] = ()
    readers: tuple[tuple[str, str], ...] = ()
    """ServiceAccounts whose tokens may read each pod's report (``status --pods``)."""
    token_file: Path = Path("/var/run/secrets/logicbundle/token")
    ca_file: Path | None = None
    server_name: str | None = None

    def source(self, kube: Kube) -> ReplicaSummaries | None:
        """Where the leader reads the agents' reports (None: this process's own distributor)."""
        if self.urls:
            endpoints = static_endpoints(self.urls)
            https = all(url.startswith("https://") for url in self.urls)
        elif self.service:
            endpoints = endpoint_slice_endpoints(
                kube, namespace=self.namespace, service=self.service
            )
            https = True
        else:
            return None
        context = None
        if https:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        return ReplicaSummaries(
            endpoints=endpoints,
            token_file=self.token_file,
            ssl_context=context,
            server_hostname=self.server_name,
        )


Endpoints = Callable[[], Awaitable[list[str]]]
"""The base URLs of the distributor replicas now (``https://10.0.0.7:8443``)."""


def static_endpoints(urls: Sequence[str]) -> Endpoints:
    """A fixed list of replicas (local runs, tests)."""
    fixed = [url.rstrip("/") for url in urls]

    async def endpoints() -> list[str]:
        return list(fixed)

    return endpoints


def endpoint_slice_endpoints(
    kube: Kube, *, namespace: str, service: str, port_name: str = "https", scheme: str = "https"
) -> Endpoints:
    """The ready endpoints of a Service, from its EndpointSlices (a list per call)."""

    def read() -> list[str]:
        discovery = kubernetes.client.DiscoveryV1Api(kube.client)
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        )
        urls = []
        for item in slices.items or []:
            ports = [p.port for p in item.ports or [] if p.port and p.name in (port_name, None)]
            if not ports:
                continue
            for endpoint in item.endpoints or []:
                if endpoint.conditions is not None and endpoint.conditions.ready is False:
                    continue
                for address in endpoint.addresses or []:
                    host = f"[{address}]" if ":" in address else address
                    urls.append(f"{scheme}://{host}:{ports[0]}")
        return sorted(set(urls))

    async def endpoints() -> list[str]:
        return await kube.run(read)

    return endpoints


SummaryKey = tuple[str, str, float | None]
"""(bundle namespace, bundle, window start in seconds since the epoch)."""

BATCH_SIZE = 500
"""Bundles per ``POST /v1/summaries`` (the replicas' limit)."""


class ReplicaSummaries:
    """Asks every distributor replica for bundles' summaries and sums the answers.

    Reads grow with the replicas, never with the pods.  A replica that does
    not answer, answers an error or something malformed makes the whole
    summary None (incomplete): a stage never advances, and an analysis never
    passes, on part of the pods.  No replica at all is incomplete too.

    Batched: the reconciles that ask within ``batch_delay`` of each other (all
    of them, when many LogicBundles wake at once) share one ``POST
    /v1/summaries`` per replica, so a replica answers a few requests a second
    rather than one per bundle per reconcile.  A replica that does not know
    that endpoint (an older version, mid-upgrade) is asked bundle by bundle.
    """

    def __init__(
        self,
        *,
        endpoints: Endpoints,
        token_file: Path,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
        batch_delay: float = 0.02,
    ) -> None:
        self._endpoints = endpoints
        self._token_file = token_file
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._batch_delay = batch_delay
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[SummaryKey, asyncio.Future[BundleSummary | None]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.failures = 0
        """Reads that found the view incomplete (for the operator's metrics and tests)."""
        self.requests = 0
        """Requests sent to the replicas (for tests and the benchmarks)."""

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def summary(
        self, namespace: str, bundle: str, *, since: float | None
    ) -> BundleSummary | None:
        key = (namespace, bundle, None if since is None else round(since, 3))
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush(), name="replica-summaries")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        pending: dict[SummaryKey, asyncio.Future[BundleSummary | None]] = {}
        found: dict[SummaryKey, BundleSummary | None] = {}
        try:
            await asyncio.sleep(self._batch_delay)
            pending, self._pending = self._pending, {}
            self._flusher = None
            found = await self._read(list(pending))
        except Exception:
            logger.exception("reading the distributor replicas' summaries failed")
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None
            for key, future in pending.items():
                if not future.done():
                    future.set_result(found.get(key))

    async def _read(self, keys: list[SummaryKey]) -> dict[SummaryKey, BundleSummary | None]:
        """Every key's summed summary; {} (every one incomplete) when a replica fails."""
        try:
            urls = await self._endpoints()
        except Exception as exc:
            logger.warning("cannot list the distributor replicas: %s", type(exc).__name__)
            self.failures += 1
            return {}
        if not urls:
            self.failures += 1
            return {}
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            logger.warning("cannot read the operator's distributor token: %s", exc.strerror)
            self.failures += 1
            return {}
        answers = await asyncio.gather(
            *(self._ask_replica(url, keys, token) for url in urls), return_exceptions=True
        )
        per_replica: list[list[BundleSummary]] = []
        for url, answer in zip(urls, answers, strict=True):
            if isinstance(answer, BaseException):
                logger.warning("distributor replica %s did not answer: %s", url, _why(answer))
                self.failures += 1
                return {}
            per_replica.append(answer)
        return {key: combine([found[i] for found in per_replica]) for i, key in enumerate(keys)}

    async def _ask_replica(
        self, url: str, keys: list[SummaryKey], token: str
    ) -> list[BundleSummary]:
        found: list[BundleSummary] = []
        for start in range(0, len(keys), BATCH_SIZE):
            chunk = keys[start : start + BATCH_SIZE]
            batch = await self._ask_batch(url, chunk, token)
            if batch is None:  # an older replica: one bundle at a time
                batch = [await self._ask_one(url, key, token) for key in chunk]
            found.extend(batch)
        return found

    def _request(self, method: str, url: str, token: str, **kwargs: object) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        self.requests += 1
        return self._session.request(
            method,
            url,
            headers={"Authorization": f"Bearer {token}"},
            ssl=self._ssl if self._ssl is not None else False,
            server_hostname=self._server_hostname,
            **kwargs,  # type: ignore[arg-type]
        )

    async def _ask_batch(
        self, url: str, keys: list[SummaryKey], token: str
    ) -> list[BundleSummary] | None:
        asked = [
            {
                "bundleNamespace": ns,
                "bundle": bundle,
                **({"since": since} if since is not None else {}),
            }
            for ns, bundle, since in keys
        ]
        async with self._request(
            "POST", f"{url}/v1/summaries", token, json={"bundles": asked}
        ) as response:
            if response.status in (404, 405):
                return None
            if response.status != 200:
                raise SummaryError(f"HTTP {response.status}")
            body = await response.json(content_type=None)
        summaries = body.get("summaries") if isinstance(body, dict) else None
        if not isinstance(summaries, list) or len(summaries) != len(keys):
            raise SummaryError("the replica's answer does not match the bundles asked")
        return [summary_from_json(item) for item in summaries]

    async def _ask_one(self, url: str, key: SummaryKey, token: str) -> BundleSummary:
        namespace, bundle, since = key
        query: dict[str, str] = {"bundleNamespace": namespace, "bundle": bundle}
        if since is not None:
            query["since"] = f"{since:.3f}"
        async with self._request("GET", f"{url}/v1/summary", token, params=query) as response:
            if response.status != 200:
                raise SummaryError(f"HTTP {response.status}")
            body = await response.json(content_type=None)
        return summary_from_json(body)


def _why(exc: BaseException) -> str:
    """A short reason that never echoes a body (which could carry anything)."""
    if isinstance(exc, SummaryError):
        return str(exc)[:200]
    return type(exc).__name__
