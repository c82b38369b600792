"""The operator's bundle cache stays bounded: one bundle per digest ever rolled out is not kept.

The soak of issue 11 (``make bench-soak``) found the cache growing by one bundle
per rollout, on disk and in memory, for as long as the operator ran.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from logicbundle.controller import _reconcile
from logicbundle.controller._memory import BundleMemories, SourceCheck
from logicbundle.controller._reconcile import Runtime
from logicbundle.controller._source import BundleCache, SourceOutcome
from logicbundle.distributor import BlobCache
from logicbundle.oci import Reference
from logicbundle.trust import Verified
from tests.controller.test_reconcile import (  # noqa: F401 (runtime is a fixture)
    SPEC,
    FakeKube,
    _agents_report,
    _body,
    _in_flight_at_internal,
    runtime,
)
from tests.distributor.conftest import Bundle, make_bundle
from tests.rollout._fixtures import BUNDLE, D1, D2, D3, NS


def _stored(tmp_path: Path, blobs: BlobCache, count: int) -> list[Bundle]:
    """``count`` bundles put into the cache one after the other, oldest first."""
    made = []
    for i in range(count):
        bundle = make_bundle(tmp_path, version=f"1.0.{i}")
        blobs.put(
            digest=bundle.digest,
            manifest=bundle.manifest,
            config=bundle.config,
            layer=bundle.layer,
        )
        # mtimes a second apart, so that "most recently stored" does not depend on timing
        manifest = blobs.root / "manifests" / "sha256" / bundle.digest.removeprefix("sha256:")
        os.utime(manifest, ns=(i * 10**9, i * 10**9))
        made.append(bundle)
    return made


def test_trim_keeps_the_referenced_and_the_newest_others_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    blobs = BlobCache(tmp_path / "cache")
    bundles = _stored(tmp_path, blobs, 8)
    cache = BundleCache(blobs)
    old_but_stable = bundles[0].digest
    dropped = cache.trim({old_but_stable}, spare=3)
    kept = {old_but_stable, *(b.digest for b in bundles[-3:])}
    assert set(dropped) == {b.digest for b in bundles} - kept
    assert set(blobs.newest_first()) == kept
    fresh = BlobCache(tmp_path / "cache")  # what a restarted process finds on disk
    for bundle in bundles:
        entry = fresh.get(bundle.digest)
        if bundle.digest in kept:
            assert entry is not None
            for blob in entry.blobs():
                assert (blobs.root / "blobs" / "sha256" / blob.removeprefix("sha256:")).exists()
        else:
            assert entry is None
    layers = {p.name for p in (blobs.root / "blobs" / "sha256").iterdir()}
    referenced = {
        d.removeprefix("sha256:")
        for b in bundles
        if b.digest in kept
        for d in (b.config_digest, b.layer_digest)
    }
    assert layers == referenced  # no orphaned blob left behind


def test_trim_below_the_spare_count_drops_nothing(tmp_path: Path) -> None:
    blobs = BlobCache(tmp_path / "cache")
    bundles = _stored(tmp_path, blobs, 3)
    assert BundleCache(blobs).trim(set(), spare=3) == []
    assert set(blobs.newest_first()) == {b.digest for b in bundles}


def test_the_memories_reference_stable_candidate_resolved_history_and_the_last_check() -> None:
    memories = BundleMemories()
    digest = ["sha256:" + c * 64 for c in "abcdef"]
    one = memories.get(("shop", "rules"))
    one.written = {
        "status": {
            "stableDigest": digest[0],
            "candidateDigest": digest[1],
            "resolvedDigest": digest[1],
            "history": [{"digest": digest[2]}, {"digest": digest[3]}],
        }
    }

    class _Outcome:
        def __init__(self, value: str) -> None:
            self.digest = value

    two = memories.get(("shop", "other"))
    two.source = SourceCheck(generation=1, checked_at=0.0, outcome=_Outcome(digest[4]))  # type: ignore[arg-type]
    memories.get(("shop", "empty"))
    assert memories.referenced_digests() == set(digest[:5])


def test_a_new_digest_verified_trims_the_cache_keeping_what_any_published_state_names(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, _, _ = runtime
    calls: list[tuple[set[str], int]] = []

    def trim(keep: set[str], *, spare: int) -> list[str]:
        calls.append((set(keep), spare))
        return []

    monkeypatch.setattr(rt.source.cache, "trim", trim)
    status, reports = _in_flight_at_internal()
    _agents_report(rt, reports, status)  # the published state names D1 (stable) and D2
    found = [D3, D3, D1]

    def resolved(*_: Any, **__: Any) -> SourceOutcome:
        digest = found.pop(0)
        return SourceOutcome(
            reference=Reference.parse("registry.example/shop/pricing:v3"),
            digest=digest,
            verified=Verified(
                digest=digest, identity="sha256:key", issuer=None, method="key-message"
            ),
        )

    monkeypatch.setattr(_reconcile, "resolve_and_verify", resolved)
    memory = rt.memories.get((NS, BUNDLE))

    def check(generation: int) -> None:
        asyncio.run(
            _reconcile._source_step(
                rt,
                memory=memory,
                body=_body(SPEC, status),
                namespace=NS,
                name=BUNDLE,
                generation=generation,
                spec=SPEC,
            )
        )

    check(1)  # D3 found: a new digest
    assert calls == [({D1, D2, D3}, _reconcile.CACHE_SPARE)]
    check(2)  # D3 again (a new generation, same digest): nothing to trim
    assert len(calls) == 1
    check(3)  # D1: a digest other than the last check's
    assert len(calls) == 2
