"""Bundles are served from the verified cache, by digest, only to the pods they are assigned to."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from logicbundle.distributor import BlobCache, BlobCacheError, BundleTarget
from tests.distributor.conftest import AUTH_A, AUTH_B, Bundle, Harness, make_bundle, run


@pytest.fixture
def bundle(tmp_path: Path, harness: Harness) -> Bundle:
    made = make_bundle(tmp_path, version="1.0.0", payload=bytes(range(256)) * 4096)
    harness.blobs.put(
        digest=made.digest, manifest=made.manifest, config=made.config, layer=made.layer
    )
    harness.targets.set_targets(
        "shop", "web-a", {"pricing": BundleTarget(digest=made.digest)}, uid="uid-a"
    )
    return made


def test_the_assigned_pod_gets_manifest_config_and_layer_matching_their_digests(
    harness: Harness, bundle: Bundle
) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get(f"/v1/manifests/{bundle.digest}", headers=AUTH_A)
            assert resp.status == 200
            assert resp.headers["ETag"] == f'"{bundle.digest}"'
            assert resp.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
            data = await resp.read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == bundle.digest
            for digest in (bundle.config_digest, bundle.layer_digest):
                blob = await client.get(f"/v1/blobs/{digest}", headers=AUTH_A)
                assert blob.status == 200
                assert blob.headers["ETag"] == f'"{digest}"'
                body = await blob.read()
                assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
        served = harness.metric("logicbundle_distributor_blob_bytes_served_total")
        assert served == len(bundle.manifest) + len(bundle.config) + bundle.layer.stat().st_size

    run(scenario)


def test_a_range_request_resumes_a_layer_with_206(harness: Harness, bundle: Bundle) -> None:
    layer = bundle.layer.read_bytes()
    url = f"/v1/blobs/{bundle.layer_digest}"

    async def scenario() -> None:
        async with harness.client() as client:
            part = await client.get(url, headers={**AUTH_A, "Range": "bytes=1000-"})
            assert part.status == 206
            assert part.headers["Content-Range"] == f"bytes 1000-{len(layer) - 1}/{len(layer)}"
            assert await part.read() == layer[1000:]
            middle = await client.get(url, headers={**AUTH_A, "Range": "bytes=10-19"})
            assert (middle.status, await middle.read()) == (206, layer[10:20])
            suffix = await client.get(url, headers={**AUTH_A, "Range": "bytes=-5"})
            assert (suffix.status, await suffix.read()) == (206, layer[-5:])
            beyond = await client.get(url, headers={**AUTH_A, "Range": f"bytes={len(layer)}-"})
            assert beyond.status == 416
            assert beyond.headers["Content-Range"] == f"bytes */{len(layer)}"
            stale = await client.get(
                url, headers={**AUTH_A, "Range": "bytes=10-19", "If-Range": '"sha256:other"'}
            )
            assert (stale.status, await stale.read()) == (200, layer)
            cached = await client.get(
                url, headers={**AUTH_A, "If-None-Match": f'"{bundle.layer_digest}"'}
            )
            assert cached.status == 304

    run(scenario)


def test_another_pods_digest_is_refused_with_403(harness: Harness, bundle: Bundle) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            for path in (
                f"/v1/manifests/{bundle.digest}",
                f"/v1/blobs/{bundle.layer_digest}",
                f"/v1/blobs/{bundle.config_digest}",
            ):
                resp = await client.get(path, headers=AUTH_B)
                assert resp.status == 403, path
                assert (await resp.json())["error"]["reason"] == "Forbidden"
        assert (
            harness.metric(
                "logicbundle_distributor_auth_failures_total", {"reason": "not_assigned"}
            )
            == 3
        )

    run(scenario)


def test_a_split_candidate_may_be_fetched_and_an_unassigned_digest_may_not(
    harness: Harness, bundle: Bundle, tmp_path: Path
) -> None:
    other = make_bundle(tmp_path, version="2.0.0")
    harness.blobs.put(
        digest=other.digest, manifest=other.manifest, config=other.config, layer=other.layer
    )

    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get(f"/v1/blobs/{other.layer_digest}", headers=AUTH_A)
            assert resp.status == 403
            harness.targets.set_targets(
                "shop",
                "web-a",
                {
                    "pricing": BundleTarget.model_validate(
                        {"digest": bundle.digest, "split": {"candidate": other.digest, "weight": 5}}
                    )
                },
                uid="uid-a",
            )
            resp = await client.get(f"/v1/blobs/{other.layer_digest}", headers=AUTH_A)
            assert resp.status == 200

    run(scenario)


def test_an_assigned_digest_missing_from_the_cache_is_404_so_the_agent_uses_the_registry(
    harness: Harness,
) -> None:
    digest = "sha256:" + "9" * 64
    harness.targets.set_targets("shop", "web-a", {"p": BundleTarget(digest=digest)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get(f"/v1/manifests/{digest}", headers=AUTH_A)
            assert resp.status == 404
            assert (await resp.json())["error"]["reason"] == "NotCached"
            bad = await client.get("/v1/blobs/latest", headers=AUTH_A)
            assert bad.status == 400

    run(scenario)


def test_the_cache_refuses_bytes_that_do_not_match_their_digests(
    tmp_path: Path, harness: Harness
) -> None:
    made = make_bundle(tmp_path, version="1.0.0")
    cache = BlobCache(tmp_path / "strict")
    with pytest.raises(BlobCacheError, match="do not hash"):
        cache.put(
            digest="sha256:" + "0" * 64,
            manifest=made.manifest,
            config=made.config,
            layer=made.layer,
        )
    with pytest.raises(BlobCacheError, match="config blob"):
        cache.put(digest=made.digest, manifest=made.manifest, config=b"{}", layer=made.layer)
    tampered = tmp_path / "tampered.tar.gz"
    data = bytearray(made.layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(BlobCacheError, match="layer"):
        cache.put(digest=made.digest, manifest=made.manifest, config=made.config, layer=tampered)
    assert cache.get(made.digest) is None
    assert cache.blob_path(made.layer_digest) is None
    assert list((tmp_path / "strict" / "tmp").iterdir()) == []


def test_a_cache_reopened_from_disk_serves_what_was_put_and_prune_drops_the_rest(
    tmp_path: Path,
) -> None:
    one, two = make_bundle(tmp_path, version="1.0.0"), make_bundle(tmp_path, version="2.0.0")
    cache = BlobCache(tmp_path / "c")
    for b in (one, two):
        cache.put(digest=b.digest, manifest=b.manifest, config=b.config, layer=b.layer)
    reopened = BlobCache(tmp_path / "c")
    entry = reopened.get(one.digest)
    assert entry is not None
    assert entry.layer_digest == one.layer_digest
    reopened.prune({one.digest})
    assert reopened.get(two.digest) is None
    assert reopened.blob_path(two.layer_digest) is None
    assert reopened.blob_path(one.layer_digest) is not None
