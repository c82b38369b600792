"""TLS: a private CA bundle is honoured on top of the system roots, an unknown CA or a wrong host
name is refused, HTTP is never a fallback."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.oci import (
    InsecureTransportError,
    Reference,
    RegistryClient,
    RetryPolicy,
    TLSVerificationError,
)
from logicbundle.oci._transport import tls_context

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


@pytest.fixture
def system_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A CA standing in for the operating system's trust store, and its key.

    OpenSSL takes its default roots from ``$SSL_CERT_FILE`` and ``$SSL_CERT_DIR`` when they
    are set, so for the test this CA is what "the system roots" are.
    """
    directory = tmp_path / "system"
    directory.mkdir()
    certificate = make_self_signed_certificate(directory, name="publicly trusted registry")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    return certificate


def test_a_private_ca_bundle_is_trusted_in_addition_to_the_system_roots_not_instead_of_them(
    tls_registry: MockRegistry, certificate: tuple[Path, Path], system_roots: tuple[Path, Path]
) -> None:
    with MockRegistry(tls=system_roots) as publicly_trusted:
        with RegistryClient(sleep=lambda _: None) as without_ca:
            push_bundle(without_ca, repo(publicly_trusted, tag="v1"))
        with RegistryClient(ca_bundle=certificate[0], sleep=lambda _: None) as client:
            assert client.resolve(repo(publicly_trusted, tag="v1")).size > 0
            push_bundle(client, repo(tls_registry, tag="v1"))
            assert client.resolve(repo(tls_registry, tag="v1")).size > 0


def test_the_tls_context_holds_the_system_roots_and_the_private_ca_and_checks_host_names(
    certificate: tuple[Path, Path], system_roots: tuple[Path, Path]
) -> None:
    context = tls_context(certificate[0])
    names = {value for ca in context.get_ca_certs() for rdn in ca["subject"] for _, value in rdn}
    assert names == {"mock registry", "publicly trusted registry"}
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_a_certificate_from_the_private_ca_is_refused_for_a_host_name_it_does_not_name(
    tls_registry: MockRegistry, certificate: tuple[Path, Path]
) -> None:
    sleeps: list[float] = []
    elsewhere = Reference(
        registry=f"localhost:{tls_registry.port}", repository="team/rules", tag="v1"
    )
    with (
        RegistryClient(ca_bundle=certificate[0], sleep=sleeps.append) as client,
        pytest.raises(TLSVerificationError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.resolve(elsewhere)
    assert tls_registry.seen == []
    assert sleeps == []


def test_a_ca_bundle_that_is_not_pem_is_refused_when_the_client_is_built(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSVerificationError, match="cannot load the CA bundle") as caught:
        RegistryClient(ca_bundle=bundle)
    assert "PEM" in caught.value.diagnostics()
    assert caught.value.retryable is False


def test_credentials_go_to_a_token_service_on_another_host_over_https(tmp_path: Path) -> None:
    directory = tmp_path / "localhost"
    directory.mkdir()
    certificate = make_self_signed_certificate(directory, dns_names=["localhost"])
    with MockRegistry(tls=certificate) as registry:
        registry.state.auth = "bearer"
        registry.state.realm_override = f"https://localhost:{registry.port}/token"
        with RegistryClient(
            auth=credentials_for(registry), ca_bundle=certificate[0], sleep=lambda _: None
        ) as client:
            push_bundle(client, repo(registry, tag="v1"))
    token_requests = registry.requests("GET", "/token")
    assert token_requests
    assert all(r.headers["Authorization"].startswith("Basic ") for r in token_requests)


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


def test_tls_contexts_are_shared_per_ca_bundle_and_renewed_when_the_file_changes(
    tmp_path: Path,
) -> None:
    """Loading the system roots costs tens of milliseconds: one context per CA file."""
    assert tls_context(None) is tls_context(None)
    pem = make_self_signed_certificate(tmp_path)[0].read_bytes()
    first = tmp_path / "ca.pem"
    first.write_bytes(pem)
    shared = tls_context(first)
    assert tls_context(first) is shared
    assert tls_context(first) is not tls_context(None)
    first.write_bytes(pem + pem)  # rewritten: another size
    assert tls_context(first) is not shared
