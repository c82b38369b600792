"""TLS: a private CA bundle is honoured, an unknown one is refused, HTTP is never a fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.oci import (
    InsecureTransportError,
    RegistryClient,
    RetryPolicy,
    TLSVerificationError,
)

from .conftest import credentials_for, push_bundle, repo
from .mock_registry import MockRegistry, make_self_signed_certificate


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return make_self_signed_certificate(tmp_path)


@pytest.fixture
def tls_registry(certificate: tuple[Path, Path]) -> Iterator[MockRegistry]:
    with MockRegistry(tls=certificate) as running:
        yield running


def test_a_registry_signed_by_a_private_ca_is_trusted_through_the_ca_bundle(
    tls_registry: MockRegistry, certificate: tuple[Path, Path]
) -> None:
    with RegistryClient(ca_bundle=certificate[0], sleep=lambda _: None) as client:
        push_bundle(client, repo(tls_registry, tag="v1"))
        assert client.resolve(repo(tls_registry, tag="v1")).size > 0


def test_a_registry_with_an_unknown_ca_is_refused_without_retrying(
    tls_registry: MockRegistry,
) -> None:
    sleeps: list[float] = []
    with (
        RegistryClient(sleep=sleeps.append) as client,
        pytest.raises(TLSVerificationError, match="CERTIFICATE_VERIFY_FAILED") as caught,
    ):
        client.resolve(repo(tls_registry, tag="v1"))
    assert caught.value.retryable is False
    assert sleeps == []


def test_a_token_service_on_plain_http_is_refused_for_a_tls_registry(
    tls_registry: MockRegistry, certificate: tuple[Path, Path]
) -> None:
    tls_registry.state.auth = "bearer"
    tls_registry.state.realm_override = f"http://{tls_registry.host}/token"
    with (
        RegistryClient(
            auth=credentials_for(tls_registry),
            ca_bundle=certificate[0],
            retry=RetryPolicy(attempts=1),
        ) as client,
        pytest.raises(InsecureTransportError, match="plain HTTP"),
    ):
        client.resolve(repo(tls_registry, tag="v1"))
    assert tls_registry.requests("GET", "/token") == []


def test_a_blob_redirect_to_plain_http_is_refused_for_a_tls_registry(
    tls_registry: MockRegistry, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    with RegistryClient(ca_bundle=certificate[0]) as client:
        push_bundle(client, repo(tls_registry))
        digest = next(iter(tls_registry.state.blobs))
        tls_registry.state.redirect_blobs_to = "http://127.0.0.1:9"
        with pytest.raises(InsecureTransportError):
            client.pull_blob_to(repo(tls_registry), digest, tmp_path / "blob")
    assert not (tmp_path / "blob").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.crt", "registry.key"]
