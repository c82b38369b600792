"""A replica's bytes come from the operator: published digests only, once each, checked.

Two real distributor apps on local test servers: the "operator" (a cache of
verified bundles, answering the replicas' ServiceAccount for every published
digest) and a "replica" whose cache starts empty and fills from it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from logicbundle.distributor import (
    AuthenticationFailedError,
    BlobCache,
    BundleTarget,
    PodIdentity,
    ReportStore,
    TargetStore,
    Upstream,
    create_app,
)
from tests.distributor.conftest import make_bundle

POD = PodIdentity(namespace="shop", name="web-0", uid="u0", service_account="web")
REPLICA = PodIdentity(
    namespace="lb-system", name="distributor-0", uid="ur", service_account="distributor"
)


class Auth:
    async def authenticate(self, token: str) -> PodIdentity:
        found = {"pod": POD, "replica": REPLICA}.get(token)
        if found is None:
            raise AuthenticationFailedError("refused")
        return found


def _operator(tmp_path: Path, published: set[str]) -> tuple[Any, BlobCache]:
    cache = BlobCache(tmp_path / "operator-cache")
    app = create_app(
        targets=TargetStore(),
        blobs=cache,
        reports=ReportStore(),
        authenticator=Auth(),
        audience="logicbundle-distributor",
        replicas=frozenset({(REPLICA.namespace, REPLICA.service_account)}),
        published=lambda: set(published),
    )
    return app, cache


def test_a_blob_asked_first_fills_the_replica_from_the_operator_once(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, version="1.0.0")
    unpublished = make_bundle(tmp_path, version="2.0.0")
    operator_app, operator_cache = _operator(tmp_path, {bundle.digest})
    for b in (bundle, unpublished):
        operator_cache.put(digest=b.digest, manifest=b.manifest, config=b.config, layer=b.layer)
    token = tmp_path / "replica.token"
    token.write_text("replica")

    async def scenario() -> tuple[list[int], int, int]:
        async with TestServer(operator_app) as upstream_server:
            replica_cache = BlobCache(tmp_path / "replica-cache")
            upstream = Upstream(
                url=str(upstream_server.make_url("")).rstrip("/"),
                token_file=token,
                blobs=replica_cache,
            )
            targets = TargetStore()
            targets.set_targets(
                "shop",
                "web-0",
                {
                    "pricing": BundleTarget(digest=bundle.digest),
                    "other": BundleTarget(digest=unpublished.digest),
                },
                uid="u0",
            )
            replica = create_app(
                targets=targets,
                blobs=replica_cache,
                reports=ReportStore(),
                authenticator=Auth(),
                audience="logicbundle-distributor",
                upstream=upstream,
            )
            codes = []
            async with TestClient(TestServer(replica)) as client:
                headers = {"Authorization": "Bearer pod"}
                # The layer first: the pod read the manifest from another replica.
                for path in (
                    f"/v1/blobs/{bundle.layer_digest}",
                    f"/v1/manifests/{bundle.digest}",
                    f"/v1/blobs/{bundle.config_digest}",
                    f"/v1/manifests/{unpublished.digest}",
                ):
                    response = await client.get(path, headers=headers)
                    await response.read()
                    codes.append(response.status)
            await upstream.close()
            return (
                codes,
                upstream.fetches,
                len(list((replica_cache.root / "manifests" / "sha256").iterdir())),
            )

    codes, fetches, cached = asyncio.run(scenario())
    # The published digest is served (fetched once); the digest the operator never
    # published is refused by the operator, so the replica has nothing to serve (404).
    assert codes == [200, 200, 200, 404]
    assert fetches == 1 and cached == 1


def test_a_pod_token_cannot_fetch_every_published_digest_from_the_operator(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path, version="1.0.0")
    operator_app, operator_cache = _operator(tmp_path, {bundle.digest})
    operator_cache.put(
        digest=bundle.digest, manifest=bundle.manifest, config=bundle.config, layer=bundle.layer
    )

    async def scenario() -> tuple[int, int]:
        async with TestClient(TestServer(operator_app)) as client:
            as_pod = await client.get(
                f"/v1/manifests/{bundle.digest}", headers={"Authorization": "Bearer pod"}
            )
            as_replica = await client.get(
                f"/v1/manifests/{bundle.digest}", headers={"Authorization": "Bearer replica"}
            )
            return as_pod.status, as_replica.status

    # The pod is not assigned it here (the operator's own distributor answers pods by
    # their targets); the replica's account may fetch any published digest.
    assert asyncio.run(scenario()) == (403, 200)
