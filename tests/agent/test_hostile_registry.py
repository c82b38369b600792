"""A hostile bundle served to the agent's registry fallback is refused exactly as the operator does.

The same bytes go to both: the operator's source step (fetch the bundle
manifest, then unpack the layer before it enters the distributor's cache) and
the agent fetching straight from the registry because the distributor cannot
serve the digest.  A layer is refused by the one unpacker both run, with the
same error class and reason; a bundle manifest by each side's parser (the
operator's model, the agent's standard-library reader) for the same rule.
Issue 11, "Hostile input, the rows still missing".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from logicbundle.agent import BundleStore
from logicbundle.agent._artifact import parse_bundle_manifest, parse_image_manifest
from logicbundle.agent._errors import ArtifactInvalidError, FetchError
from logicbundle.agent._fetch import Fetcher
from logicbundle.artifact import fetch_bundle, push_directory
from logicbundle.bundle import (
    AmbiguousNameError,
    BundleError,
    InvalidPathError,
    PathTraversalError,
    UnpackError,
)
from logicbundle.controller._source import BundleCache
from logicbundle.distributor import BlobCache
from logicbundle.errors import LogicBundleError
from logicbundle.oci import InvalidManifestError as InvalidOciManifestError
from logicbundle.oci import Reference, RegistryClient
from logicbundle.oci import parse_manifest as parse_oci_manifest
from tests.artifact.hostile_artifacts import config_bytes, config_for, push_raw
from tests.bundle import hostile_corpus as corpus
from tests.oci.helpers import manifest_bytes
from tests.oci.mock_registry import MockRegistry

OK = corpus.OK_CONTENT


@pytest.fixture
def registry() -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        yield running


@dataclass
class Refusals:
    operator: LogicBundleError
    agent: LogicBundleError
    agent_root: Path


def _agent_install(registry: MockRegistry, digest: str, root: Path) -> Path:
    store = BundleStore(root, "hostile")
    store.prepare()
    Fetcher(distributor=None).install(
        store, digest, source=f"{registry.host}/shop/hostile", insecure=True
    )
    return store.version_path(digest)


def _operator_check(registry: MockRegistry, digest: str, cache_root: Path) -> BlobCache:
    blobs = BlobCache(cache_root)
    with RegistryClient(insecure=True) as client:
        ref = Reference(registry.host, "shop/hostile", digest=digest)
        bundle = fetch_bundle(client, ref)
        BundleCache(blobs).store(client, bundle, audit="off")  # no audit: unpacked all the same
    return blobs


def _refusals(registry: MockRegistry, tmp_path: Path, *, config: bytes, layer: bytes) -> Refusals:
    with RegistryClient(insecure=True) as client:
        digest = push_raw(
            client, Reference(registry.host, "shop/hostile", "v1"), config=config, layer=layer
        )
    with pytest.raises(LogicBundleError) as operator:
        _operator_check(registry, digest, tmp_path / "cache")
    blobs = BlobCache(tmp_path / "cache")
    assert blobs.get(digest) is None, "a refused bundle never enters the distributor's cache"
    root = tmp_path / "pod"
    with pytest.raises(LogicBundleError) as agent:
        _agent_install(registry, digest, root)
    versions = root / "hostile" / ".versions"
    assert list(versions.iterdir()) == [], "a refused bundle leaves nothing in the pod"
    assert not (tmp_path / "escaped.txt").exists()
    return Refusals(operator=operator.value, agent=agent.value, agent_root=root)


# --- layers: one unpacker, one answer ------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "members", "expected"),
    [
        pytest.param(
            {"ok.txt": OK},
            [corpus.entry("ok.txt", OK), corpus.entry("../escaped.txt", b"pwned")],
            PathTraversalError,
            id="dotdot",
        ),
        pytest.param(
            {"rules.txt": OK},
            [corpus.entry("ok.txt", OK, pax={"path": "rules.txt"})],
            AmbiguousNameError,
            id="pax-path-disagrees",
        ),
        pytest.param(
            {"ok.txt": OK},
            [corpus.entry("../escaped.txt", OK, pax={"path": "ok.txt"})],
            AmbiguousNameError,
            id="pax-hides-traversal",
        ),
        pytest.param(
            {"ok.txt": OK},
            [corpus.entry("ok.txt", OK), corpus.entry("evil\u202etxt.py", b"x")],
            InvalidPathError,
            id="bidi-name",
        ),
    ],
)
def test_a_hostile_layer_from_the_registry_is_refused_by_the_agent_as_by_the_operator(
    registry: MockRegistry,
    tmp_path: Path,
    files: dict[str, bytes],
    members: list[corpus.Member],
    expected: type[UnpackError],
) -> None:
    refusals = _refusals(
        registry,
        tmp_path,
        config=config_bytes(config_for(files)),
        layer=corpus.build_layer(members),
    )
    assert type(refusals.operator) is expected, refusals.operator
    assert type(refusals.agent) is expected, refusals.agent
    assert refusals.agent.reason == refusals.operator.reason
    assert not refusals.agent.retryable, "the same bytes fail the same way: no retry helps"


def test_the_registry_fallback_no_longer_hides_the_unpackers_reason(
    registry: MockRegistry, tmp_path: Path
) -> None:
    layer = corpus.build_layer([corpus.entry("ok.txt", OK), corpus.entry("../x", b"pwned")])
    refusals = _refusals(
        registry, tmp_path, config=config_bytes(config_for({"ok.txt": OK})), layer=layer
    )
    assert not isinstance(refusals.agent, FetchError)
    assert refusals.agent.reason == "PathTraversal"


# --- bundle manifests: two parsers, one rule -----------------------------------------------------


def _manifest_refusals(
    registry: MockRegistry, tmp_path: Path, config: bytes, *, rule: str
) -> Refusals:
    refusals = _refusals(
        registry, tmp_path, config=config, layer=corpus.build_layer([corpus.entry("ok.txt", OK)])
    )
    assert isinstance(refusals.operator, BundleError)
    assert refusals.operator.reason == "InvalidManifest"
    assert isinstance(refusals.agent, ArtifactInvalidError)
    assert rule in str(refusals.operator)
    assert rule in str(refusals.agent)
    return refusals


def test_a_256_byte_name_component_is_refused_on_both_sides_with_the_same_words(
    registry: MockRegistry, tmp_path: Path
) -> None:
    config = config_bytes(config_for({"d/" + "b" * 256: OK}))
    _manifest_refusals(registry, tmp_path, config, rule="is 256 bytes, more than 255")


def test_a_bidirectional_character_in_a_listed_name_is_refused_on_both_sides(
    registry: MockRegistry, tmp_path: Path
) -> None:
    config = config_bytes(config_for({"evil\u202etxt.py": OK}))
    _manifest_refusals(registry, tmp_path, config, rule="forbidden characters (U+202E)")


def test_a_key_given_twice_in_the_bundle_manifest_is_refused_on_both_sides(
    registry: MockRegistry, tmp_path: Path
) -> None:
    config = config_bytes(config_for({"ok.txt": OK}))
    twice = config.replace(b'"path":"ok.txt"', b'"path":"ok.txt","path":"rules.txt"', 1)
    assert twice != config
    _manifest_refusals(registry, tmp_path, twice, rule="'path' appears twice")


# --- the 255-byte name, accepted end to end ------------------------------------------------------


def test_a_255_byte_name_is_packed_pushed_cached_and_installed_by_the_agent(
    registry: MockRegistry, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    name = "r" * 250 + ".json"
    assert len(name.encode()) == 255
    (source / "tables").mkdir(parents=True)
    (source / "tables" / name).write_bytes(b'{"max": 10}')
    with RegistryClient(insecure=True) as client:
        pushed = push_directory(
            client,
            Reference(registry.host, "shop/hostile", "v1"),
            source,
            name="edge",
            version="1.0.0",
            interface={"jsonSchema": {"type": "object"}},
        )
    blobs = _operator_check(registry, pushed.digest, tmp_path / "cache")
    assert blobs.get(pushed.digest) is not None
    installed = _agent_install(registry, pushed.digest, tmp_path / "pod")
    assert (installed / "tables" / name).read_bytes() == b'{"max": 10}'


# --- the OCI manifest: a key twice is refused by both readers ------------------------------------


def test_a_key_given_twice_in_the_oci_manifest_is_refused_by_the_operator_and_the_agent() -> None:
    config = config_bytes(config_for({"ok.txt": OK}))
    layer = corpus.build_layer([corpus.entry("ok.txt", OK)])
    honest = manifest_bytes(config=config, layers=[layer])
    twice = honest.replace(b'"schemaVersion":2', b'"schemaVersion":2,"artifactType":"x/y"', 1)
    assert json.loads(twice)["artifactType"] == "x/y"  # a last-wins reader sees another type
    with pytest.raises(InvalidOciManifestError, match="'artifactType' appears twice"):
        parse_oci_manifest(twice)
    digest = "sha256:" + hashlib.sha256(twice).hexdigest()
    with pytest.raises(ArtifactInvalidError, match="'artifactType' appears twice"):
        parse_image_manifest(twice, digest=digest, max_layer_bytes=1 << 20)


def test_the_agents_reader_refuses_a_nested_key_given_twice() -> None:
    config = config_bytes(config_for({"ok.txt": OK}))
    twice = config.replace(b'"size":', b'"size":1,"size":', 1)
    digest = "sha256:" + hashlib.sha256(twice).hexdigest()
    with pytest.raises(ArtifactInvalidError, match="'size' appears twice"):
        parse_bundle_manifest(twice, digest=digest, max_file_size=1 << 20)
