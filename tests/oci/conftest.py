"""Fixtures for the registry client tests: a mock registry and a client that never sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from logicbundle.oci import (
    OCI_MANIFEST,
    Credentials,
    DockerConfig,
    Reference,
    RegistryClient,
    RetryPolicy,
)

from .helpers import BUNDLE_CONFIG, BUNDLE_LAYER, manifest_bytes
from .mock_registry import MockRegistry


@pytest.fixture
def registry() -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the client asked to sleep; nothing actually waits."""
    return []


def make_client(
    registry: MockRegistry,
    sleeps: list[float],
    *,
    auth: DockerConfig | None = None,
    **kwargs: object,
) -> RegistryClient:
    return RegistryClient(
        auth=auth,
        insecure=True,
        retry=RetryPolicy(attempts=4, initial_delay=1.0, jitter=False),
        sleep=sleeps.append,
        connect_timeout=5,
        read_timeout=5,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(registry: MockRegistry, sleeps: list[float]) -> Iterator[RegistryClient]:
    with make_client(registry, sleeps) as made:
        yield made


def credentials_for(registry: MockRegistry) -> DockerConfig:
    return DockerConfig(
        auths={registry.host: Credentials(registry.state.username, registry.state.password)}
    )


def repo(registry: MockRegistry, name: str = "team/rules", tag: str | None = None) -> Reference:
    return Reference(registry=registry.host, repository=name, tag=tag)


def push_bundle(client: RegistryClient, target: Reference) -> tuple[bytes, bytes, bytes]:
    """Push a small bundle-shaped artifact; return (config, layer, manifest) bytes."""
    config = b'{"name":"rules","version":"1.0.0"}'
    layer = b"\x1f\x8b" + bytes(range(256)) * 40
    client.push_blob(target, config, media_type=BUNDLE_CONFIG)
    client.push_blob(target, layer, media_type=BUNDLE_LAYER)
    manifest = manifest_bytes(config=config, layers=[layer])
    client.push_manifest(target, manifest, media_type=OCI_MANIFEST)
    return config, layer, manifest
