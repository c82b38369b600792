"""The leader reads sums from every distributor replica, never per-pod state (issue 10, point 4).

Two real distributor apps on local test servers stand for two replicas: each
holds the reports of the pods that talk to it.  The leader's
:class:`ReplicaSummaries` asks both and adds them up; one that does not answer,
refuses, or answers something malformed makes the view incomplete (None), so
no stage advances and no analysis passes on part of the pods.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from logicbundle import contract
from logicbundle.controller._summaries import ReplicaSummaries, static_endpoints
from logicbundle.distributor import (
    AuthenticationFailedError,
    BlobCache,
    BundleReport,
    PodIdentity,
    Report,
    ReportStore,
    RuleTargets,
    TargetStore,
    VersionCounters,
    bundle_rule,
    create_app,
)
from tests.rollout._fixtures import BUNDLE, D1, D2, NS, make_spec

LEADER = PodIdentity(namespace="lb-system", name="op-0", uid="u-op", service_account="operator")
STRANGER = PodIdentity(namespace=NS, name="web-9", uid="u-9", service_account="default")
PEERS = frozenset({("lb-system", "operator")})


class Auth:
    async def authenticate(self, token: str) -> PodIdentity:
        if token == "leader":
            return LEADER
        if token == "stranger":
            return STRANGER
        raise AuthenticationFailedError("the token was refused")


def _replica(tmp_path: Path, pods: dict[str, str]) -> web.Application:
    """A replica whose agents (pod name -> active digest) reported 10 calls, 1 error each."""
    store, reports = TargetStore(), ReportStore()
    rules = RuleTargets(store)
    spec = make_spec()
    rules.set_bundle(NS, BUNDLE, bundle_rule(spec, contract.RolloutState(bundle=BUNDLE, stable=D1)))
    for name, digest in pods.items():
        rules.set_pod(
            NS,
            name,
            uid=f"u-{name}",
            facts=contract.PodFacts(key=f"{NS}/{name}", labels={"app": "shop"}),
        )
        reports.record(
            PodIdentity(namespace=NS, name=name, uid=f"u-{name}", service_account="default"),
            Report(
                bundles={
                    BUNDLE: BundleReport(
                        active=digest,
                        healthy=True,
                        versions={digest: VersionCounters(calls=10, errors=1)},
                    )
                }
            ),
            targets=None,
        )
    return create_app(
        targets=store,
        blobs=BlobCache(tmp_path / f"blobs-{len(pods)}-{id(pods)}"),
        reports=reports,
        authenticator=Auth(),
        audience="logicbundle-distributor",
        assigns=rules.assigns,
        peers=PEERS,
    )


async def _with_replicas(apps: list[web.Application], token: str, scenario: Any) -> Any:
    servers = [TestServer(app) for app in apps]
    for server in servers:
        await server.start_server()
    try:
        urls = [str(server.make_url("")).rstrip("/") for server in servers]
        return await scenario(urls)
    finally:
        for server in servers:
            await server.close()


def _token(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "token"
    path.write_text(value)
    return path


def test_two_replicas_are_summed_per_digest(tmp_path: Path) -> None:
    a = _replica(tmp_path, {"web-0": D1, "web-1": D2})
    b = _replica(tmp_path, {"web-2": D1})

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints(urls), token_file=_token(tmp_path, "leader")
        )
        try:
            # The window opened before the versions loaded: their counters count from zero.
            return await source.summary(NS, BUNDLE, since=time.time() - 60)
        finally:
            await source.close()

    summary = asyncio.run(_with_replicas([a, b], "leader", scenario))

    assert summary is not None
    assert summary.reporting == 3
    assert dict(summary.active) == {D1: 2, D2: 1}
    assert summary.versions[D1].calls == 20 and summary.versions[D1].errors == 2
    assert summary.versions[D2].calls == 10 and summary.versions[D2].pods == 1


def test_a_replica_that_is_down_makes_the_view_incomplete(tmp_path: Path) -> None:
    a = _replica(tmp_path, {"web-0": D1})

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints([*urls, "http://127.0.0.1:9"]),
            token_file=_token(tmp_path, "leader"),
            timeout=2.0,
        )
        try:
            return await source.summary(NS, BUNDLE, since=None), source.failures
        finally:
            await source.close()

    summary, failures = asyncio.run(_with_replicas([a], "leader", scenario))
    assert summary is None and failures == 1


def test_no_replica_at_all_is_incomplete_not_empty(tmp_path: Path) -> None:
    source = ReplicaSummaries(endpoints=static_endpoints([]), token_file=_token(tmp_path, "x"))
    assert asyncio.run(source.summary(NS, BUNDLE, since=None)) is None


def test_only_the_operator_may_read_a_summary(tmp_path: Path) -> None:
    """A pod's token (any pod may hold one for the distributor) is refused: 403."""
    a = _replica(tmp_path, {"web-0": D1})

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints(urls), token_file=_token(tmp_path, "stranger")
        )
        try:
            return await source.summary(NS, BUNDLE, since=None)
        finally:
            await source.close()

    assert asyncio.run(_with_replicas([a], "stranger", scenario)) is None


def test_a_malformed_answer_is_refused(tmp_path: Path) -> None:
    async def bad(_: web.Request) -> web.Response:
        return web.json_response({"active": {"not-a-digest": 3}})

    app = web.Application()
    app.router.add_get("/v1/summary", bad)

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints(urls), token_file=_token(tmp_path, "leader")
        )
        try:
            return await source.summary(NS, BUNDLE, since=None)
        finally:
            await source.close()

    assert asyncio.run(_with_replicas([app], "leader", scenario)) is None


def test_a_pod_the_rule_does_not_assign_is_not_counted(tmp_path: Path) -> None:
    """Reports of pods outside the bundle's selection never reach the leader's sums."""
    store, reports = TargetStore(), ReportStore()
    rules = RuleTargets(store)
    rules.set_bundle(
        NS, BUNDLE, bundle_rule(make_spec(), contract.RolloutState(bundle=BUNDLE, stable=D1))
    )
    rules.set_pod(
        NS, "other", uid="u", facts=contract.PodFacts(key=f"{NS}/other", labels={"app": "other"})
    )
    reports.record(
        PodIdentity(namespace=NS, name="other", uid="u", service_account="default"),
        Report(bundles={BUNDLE: BundleReport(active=D2, healthy=True)}),
        targets=None,
    )
    summary = reports.summary(
        NS, BUNDLE, since=None, assigned=lambda pod: rules.assigns(NS, pod, BUNDLE)
    )
    assert summary.reporting == 0 and dict(summary.active) == {}


def test_reconciles_asking_at_once_share_one_request_per_replica(tmp_path: Path) -> None:
    """1,000 LogicBundles waking together must not send 1,000 requests to each replica."""
    a = _replica(tmp_path, {"web-0": D1, "web-1": D2})
    b = _replica(tmp_path, {"web-2": D1})

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints(urls), token_file=_token(tmp_path, "leader")
        )
        try:
            asked = [source.summary(NS, BUNDLE, since=None) for _ in range(5)]
            asked += [source.summary(NS, f"other-{i}", since=time.time() - 60) for i in range(600)]
            return await asyncio.gather(*asked), source.requests
        finally:
            await source.close()

    summaries, requests = asyncio.run(_with_replicas([a, b], "leader", scenario))
    assert requests == 4  # two replicas, 605 bundles in two batches of at most 500 each
    assert all(s is not None and dict(s.active) == {D1: 2, D2: 1} for s in summaries[:5])
    assert all(s is not None and s.reporting == 0 for s in summaries[5:])


def test_a_replica_without_the_batch_endpoint_is_asked_bundle_by_bundle(tmp_path: Path) -> None:
    old = _replica(tmp_path, {"web-0": D1})
    batches = []

    @web.middleware
    async def before_batches(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/v1/summaries":
            batches.append(request.method)
            raise web.HTTPNotFound()
        return await handler(request)

    old.middlewares.append(before_batches)

    async def scenario(urls: list[str]) -> Any:
        source = ReplicaSummaries(
            endpoints=static_endpoints(urls), token_file=_token(tmp_path, "leader")
        )
        try:
            return await asyncio.gather(
                source.summary(NS, BUNDLE, since=None), source.summary(NS, "other", since=None)
            )
        finally:
            await source.close()

    mine, other = asyncio.run(_with_replicas([old], "leader", scenario))
    assert batches == ["POST"]
    assert mine is not None and dict(mine.active) == {D1: 1}
    assert other is not None and other.reporting == 0


def test_the_batch_endpoint_refuses_other_callers_and_malformed_batches(tmp_path: Path) -> None:
    a = _replica(tmp_path, {"web-0": D1})

    async def scenario(urls: list[str]) -> Any:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for token, body in [
                ("stranger", {"bundles": [{"bundleNamespace": NS, "bundle": BUNDLE}]}),
                ("leader", {"bundles": "all"}),
                ("leader", {"bundles": [{"bundle": BUNDLE}]}),
                ("leader", {"bundles": [{"bundleNamespace": NS, "bundle": BUNDLE, "since": "x"}]}),
                ("leader", {"bundles": [{"bundleNamespace": NS, "bundle": BUNDLE, "since": True}]}),
                ("leader", {"bundles": [{"bundleNamespace": NS, "bundle": "b"}] * 501}),
                ("leader", [1]),
            ]:
                async with session.post(
                    f"{urls[0]}/v1/summaries",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    statuses.append(response.status)
            async with session.post(
                f"{urls[0]}/v1/summaries",
                data=b"{not json",
                headers={"Authorization": "Bearer leader"},
            ) as response:
                statuses.append(response.status)
        return statuses

    assert asyncio.run(_with_replicas([a], "leader", scenario)) == [403] + [400] * 7
