"""The registry client against the in-process mock registry."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from logicbundle.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    AuthenticationError,
    Descriptor,
    DigestMismatchError,
    DockerConfig,
    InsecureTransportError,
    Manifest,
    NotFoundError,
    Reference,
    RegistryClient,
    RegistryError,
    RegistryRequestError,
    RegistryUnavailableError,
    RetryPolicy,
    SizeLimitError,
    TLSVerificationError,
    fallback_tag,
    sha256_digest,
)

from .conftest import credentials_for, make_client, push_bundle, repo
from .helpers import BUNDLE_ARTIFACT, BUNDLE_LAYER, SIGSTORE_BUNDLE, manifest_bytes
from .mock_registry import MockRegistry

# --- resolve, push, pull ----------------------------------------------------


def test_a_tag_resolves_to_the_digest_of_the_pushed_manifest(
    registry: MockRegistry, client: RegistryClient
) -> None:
    _, _, manifest = push_bundle(client, repo(registry, tag="v1"))
    descriptor = client.resolve(repo(registry, tag="v1"))
    assert descriptor == Descriptor(
        media_type=OCI_MANIFEST, digest=sha256_digest(manifest), size=len(manifest)
    )


def test_a_pushed_bundle_pulls_back_byte_for_byte(
    registry: MockRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    target = repo(registry, tag="v1")
    config, layer, manifest = push_bundle(client, target)
    pulled = client.pull_manifest(target.with_digest(sha256_digest(manifest)))
    assert pulled.data == manifest
    assert isinstance(pulled.manifest, Manifest)
    assert pulled.manifest.artifact_type == BUNDLE_ARTIFACT
    client.pull_blob_to(target, pulled.manifest.layers[0], tmp_path / "layer.tgz")
    assert (tmp_path / "layer.tgz").read_bytes() == layer
    sink = io.BytesIO()
    client.pull_blob_to(target, pulled.manifest.config, sink)
    assert sink.getvalue() == config
    assert list(tmp_path.iterdir()) == [tmp_path / "layer.tgz"]


def test_a_blob_pushed_from_a_file_is_streamed_and_stored_under_its_digest(
    registry: MockRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    path = tmp_path / "layer.tgz"
    path.write_bytes(b"x" * 3_000_000)
    descriptor = client.push_blob(repo(registry), path, media_type=BUNDLE_LAYER)
    assert descriptor.digest == sha256_digest(path.read_bytes())
    assert registry.state.blobs[descriptor.digest] == path.read_bytes()


def test_a_blob_the_registry_already_has_is_not_uploaded_again(
    registry: MockRegistry, client: RegistryClient
) -> None:
    client.push_blob(repo(registry), b"same bytes")
    client.push_blob(repo(registry), b"same bytes")
    assert len(registry.requests("POST", "/blobs/uploads/")) == 1
    assert len(registry.requests("HEAD", "/blobs/")) == 2


def test_a_blob_is_mounted_from_another_repository_instead_of_uploaded(
    registry: MockRegistry, client: RegistryClient
) -> None:
    client.push_blob(repo(registry, "team/a"), b"shared")
    registry.state.seen.clear()
    client.push_blob(repo(registry, "team/b"), b"shared", mount_from="team/a")
    assert client.blob_exists(repo(registry, "team/b"), sha256_digest(b"shared"))
    assert registry.requests("PUT") == []
    (mount,) = registry.requests("POST", "/blobs/uploads/")
    assert "mount=sha256" in mount.path
    assert "from=team%2Fa" in mount.path


def test_tags_are_listed_across_pages(registry: MockRegistry, client: RegistryClient) -> None:
    for tag in ("a", "b", "c", "d", "e"):
        push_bundle(client, repo(registry, tag=tag))
    assert client.list_tags(repo(registry), page_size=2) == ("a", "b", "c", "d", "e")
    assert len(registry.requests("GET", "/tags/list")) == 3


# --- auth -------------------------------------------------------------------


def test_bearer_auth_follows_the_challenge_to_the_token_service(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "bearer"
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        push_bundle(client, repo(registry, tag="v1"))
        assert client.resolve(repo(registry, tag="v1")).media_type == OCI_MANIFEST
    token_requests = registry.requests("GET", "/token")
    assert token_requests
    assert all("scope=repository" in r.path for r in token_requests)
    assert sleeps == []


def test_bearer_auth_without_credentials_fails_with_advice(
    registry: MockRegistry, client: RegistryClient
) -> None:
    registry.state.auth = "bearer"
    with pytest.raises(AuthenticationError) as caught:
        client.resolve(repo(registry, tag="v1"))
    assert caught.value.retryable is False
    assert "pull secret" in caught.value.diagnostics()


def test_credentials_are_not_sent_over_plain_http_to_a_token_service_on_another_host(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "bearer"
    registry.state.realm_override = f"http://localhost:{registry.port}/token"
    with (
        make_client(registry, sleeps, auth=credentials_for(registry)) as client,
        pytest.raises(InsecureTransportError) as caught,
    ):
        client.resolve(repo(registry, tag="v1"))
    assert registry.requests("GET", "/token") == []
    assert str(caught.value).startswith(
        f"resolving {registry.host}/team/rules:v1: refusing to send the credentials for "
        f"127.0.0.1 over plain HTTP to the token service http://localhost:{registry.port}/token "
        "on another host"
    )
    assert "token service" in caught.value.diagnostics()
    assert caught.value.retryable is False
    assert sleeps == []


def test_credentials_go_over_plain_http_to_a_token_service_on_the_registry_host_name(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "bearer"
    with MockRegistry() as token_service:
        token_service.state.issued_tokens = registry.state.issued_tokens
        registry.state.realm_override = f"http://127.0.0.1:{token_service.port}/token"
        with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
            push_bundle(client, repo(registry, tag="v1"))
    token_requests = token_service.requests("GET", "/token")
    assert token_requests
    assert all(r.headers["Authorization"].startswith("Basic ") for r in token_requests)


def test_a_token_service_on_plain_http_on_another_host_is_asked_anonymously_without_credentials(
    registry: MockRegistry, client: RegistryClient
) -> None:
    registry.state.auth = "bearer"
    registry.state.realm_override = f"http://localhost:{registry.port}/token"
    with pytest.raises(AuthenticationError, match="refused the credentials"):
        client.resolve(repo(registry, tag="v1"))
    token_requests = registry.requests("GET", "/token")
    assert token_requests
    assert all("Authorization" not in r.headers for r in token_requests)


def test_basic_auth_is_sent_after_the_registry_asks_for_it(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "basic"
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        push_bundle(client, repo(registry, tag="v1"))
        client.resolve(repo(registry, tag="v1"))
    first = registry.seen[0]
    assert "Authorization" not in first.headers
    assert registry.seen[-1].headers["Authorization"].startswith("Basic ")


def test_wrong_basic_credentials_are_an_authentication_error(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "basic"
    wrong = DockerConfig.from_json(
        json.dumps({"auths": {registry.host: {"username": "robot", "password": "wrong"}}})
    )
    with (
        make_client(registry, sleeps, auth=wrong) as client,
        pytest.raises(AuthenticationError, match="401"),
    ):
        client.resolve(repo(registry, tag="v1"))


def test_credentials_and_tokens_never_appear_in_errors_or_logs(
    registry: MockRegistry, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry.state.auth = "bearer"
    config = credentials_for(registry)
    messages: list[str] = []
    with make_client(registry, sleeps, auth=config) as client:
        push_bundle(client, repo(registry, tag="v1"))
        registry.state.fail_next = [503] * 4
        with pytest.raises(RegistryUnavailableError) as unavailable:
            client.resolve(repo(registry, tag="v1"))
        messages.append(str(unavailable.value))
        with pytest.raises(NotFoundError) as missing:
            client.resolve(repo(registry, tag="nope"))
        messages.append(str(missing.value))
        registry.state.redirect_blobs_to = f"http://localhost:{registry.port}"
        registry.state.tamper_blobs = True
        layer = Descriptor(media_type=BUNDLE_LAYER, digest=next(iter(registry.state.blobs)), size=1)
        with pytest.raises(RegistryError) as tampered:
            client.pull_blob_to(repo(registry), layer, io.BytesIO())
        messages.append(str(tampered.value))
    secrets = [registry.state.password, *registry.state.issued_tokens, "SIGNATURE-SECRET"]
    assert registry.state.issued_tokens
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged
    for secret in secrets:
        for message in [*messages, logged]:
            assert secret not in message


def test_credentials_are_not_forwarded_when_a_blob_redirects_to_another_host(
    registry: MockRegistry, sleeps: list[float], tmp_path: Path
) -> None:
    registry.state.auth = "basic"
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        _, layer, _ = push_bundle(client, repo(registry))
        registry.state.redirect_blobs_to = f"http://localhost:{registry.port}"
        descriptor = Descriptor(
            media_type=BUNDLE_LAYER, digest=sha256_digest(layer), size=len(layer)
        )
        client.pull_blob_to(repo(registry), descriptor, tmp_path / "layer")
    assert (tmp_path / "layer").read_bytes() == layer
    (storage,) = registry.requests("GET", "/storage/")
    assert "Authorization" not in storage.headers


# --- retries ----------------------------------------------------------------


def test_a_503_is_retried_with_exponential_backoff_until_it_succeeds(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float]
) -> None:
    push_bundle(client, repo(registry, tag="v1"))
    registry.state.fail_next = [503, 502, 500]
    client.resolve(repo(registry, tag="v1"))
    assert sleeps == [1.0, 2.0, 4.0]


def test_a_429_waits_as_long_as_retry_after_says(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float]
) -> None:
    push_bundle(client, repo(registry, tag="v1"))
    registry.state.fail_next = [429]
    registry.state.retry_after = "7"
    client.resolve(repo(registry, tag="v1"))
    assert sleeps == [7.0]


def test_a_registry_that_keeps_failing_is_a_retryable_error_after_the_last_attempt(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float]
) -> None:
    registry.state.fail_next = [503] * 10
    with pytest.raises(RegistryUnavailableError, match="failed 4 times") as caught:
        client.resolve(repo(registry, tag="v1"))
    assert caught.value.retryable is True
    assert len(sleeps) == 3


def test_a_404_is_not_retried(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float]
) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.pull_manifest(repo(registry, tag="missing"))
    assert caught.value.retryable is False
    assert "MANIFEST_UNKNOWN" in str(caught.value)
    assert sleeps == []
    assert len(registry.requests("GET")) == 1


def test_other_4xx_are_not_retried(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float]
) -> None:
    registry.state.fail_next = [400]
    with pytest.raises(RegistryRequestError):
        client.resolve(repo(registry, tag="v1"))
    assert sleeps == []


def test_a_refused_connection_is_retried_then_reported_as_unavailable(
    sleeps: list[float],
) -> None:
    with MockRegistry() as stopped:
        host = stopped.host
    client = RegistryClient(
        insecure=True, sleep=sleeps.append, retry=RetryPolicy(attempts=3, jitter=False)
    )
    with pytest.raises(RegistryUnavailableError) as caught:
        client.resolve(Reference(host, "rules", "v1"))
    assert "NewConnectionError" in str(caught.value)
    assert len(sleeps) == 2


def test_a_connection_dropped_mid_blob_resumes_with_a_range_request(
    registry: MockRegistry, client: RegistryClient, sleeps: list[float], tmp_path: Path
) -> None:
    data = bytes(range(256)) * 4096
    descriptor = client.push_blob(repo(registry), data)
    registry.state.drop_blob_after = 100_000
    client.pull_blob_to(repo(registry), descriptor, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    ranges = [r.headers.get("Range") for r in registry.requests("GET", "/blobs/sha256")]
    assert ranges[0] is None
    assert ranges[1] is not None
    assert ranges[1].startswith("bytes=")
    assert len(sleeps) == 1


# --- the registry is untrusted ----------------------------------------------


def test_a_blob_whose_bytes_do_not_match_its_digest_is_rejected_and_leaves_no_file(
    registry: MockRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    descriptor = client.push_blob(repo(registry), b"genuine bundle bytes" * 1000)
    registry.state.tamper_blobs = True
    with pytest.raises(DigestMismatchError) as caught:
        client.pull_blob_to(repo(registry), descriptor, tmp_path / "layer.tgz")
    assert caught.value.retryable is False
    assert list(tmp_path.iterdir()) == []


def test_a_blob_larger_than_its_descriptor_is_cut_off_and_leaves_no_file(
    registry: MockRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    descriptor = client.push_blob(repo(registry), b"small")
    registry.state.lie_about_content_length = True
    with pytest.raises(RegistryError):
        client.pull_blob_to(
            repo(registry), descriptor.model_copy(update={"size": 3}), tmp_path / "x"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_blob_pulled_by_bare_digest_is_capped_by_the_size_limit(
    registry: MockRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    descriptor = client.push_blob(repo(registry), b"z" * 5000)
    with pytest.raises(SizeLimitError):
        client.pull_blob_to(repo(registry), descriptor.digest, tmp_path / "x", max_bytes=4096)
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_whose_bytes_do_not_match_its_digest_is_rejected(
    registry: MockRegistry, client: RegistryClient
) -> None:
    _, _, manifest = push_bundle(client, repo(registry, tag="v1"))
    registry.state.tamper_manifests = True
    with pytest.raises(DigestMismatchError):
        client.pull_manifest(repo(registry).with_digest(sha256_digest(manifest)))
    with pytest.raises(DigestMismatchError):
        client.pull_manifest(repo(registry, tag="v1"))


def test_a_manifest_larger_than_the_limit_is_refused(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    with make_client(registry, sleeps) as pusher:
        push_bundle(pusher, repo(registry, tag="v1"))
    with make_client(registry, sleeps, max_manifest_bytes=100) as client:
        with pytest.raises(SizeLimitError, match="limit of 100"):
            client.pull_manifest(repo(registry, tag="v1"))
        with pytest.raises(SizeLimitError):
            client.push_manifest(
                repo(registry, tag="v2"), b"{" + b" " * 200 + b"}", media_type=OCI_MANIFEST
            )


def test_a_client_without_insecure_never_speaks_plain_http(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    with (
        RegistryClient(sleep=sleeps.append) as client,
        pytest.raises(TLSVerificationError) as caught,
    ):
        client.resolve(repo(registry, tag="v1"))
    assert "insecure" in caught.value.diagnostics()
    assert registry.seen == []
    assert sleeps == []


def test_a_bearer_realm_on_plain_http_is_refused_without_insecure() -> None:
    from logicbundle.oci._transport import Transport

    transport = Transport(
        auth=None,
        insecure=False,
        ca_bundle=None,
        connect_timeout=1,
        read_timeout=1,
        retry=RetryPolicy(),
        sleep=lambda _: None,
        user_agent="t",
    )
    with pytest.raises(InsecureTransportError, match="plain HTTP"):
        transport.check_url("http://auth.example.com/token?scope=x")
    transport.check_url("https://auth.example.com/token")


# --- referrers ----------------------------------------------------------------


def _attach_signature(client: RegistryClient, registry: MockRegistry, subject: bytes) -> bytes:
    signature = b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'
    empty = b"{}"
    client.push_blob(repo(registry), signature)
    client.push_blob(repo(registry), empty)
    referrer = manifest_bytes(
        config=empty,
        config_type="application/vnd.oci.empty.v1+json",
        layers=[signature],
        artifact_type=SIGSTORE_BUNDLE,
        subject={"mediaType": OCI_MANIFEST, "digest": sha256_digest(subject), "size": len(subject)},
    )
    client.push_manifest(repo(registry), referrer, media_type=OCI_MANIFEST)
    return referrer


def test_referrers_are_listed_through_the_referrers_api_and_filtered_by_artifact_type(
    registry: MockRegistry, client: RegistryClient
) -> None:
    registry.state.referrers_api = True
    _, _, manifest = push_bundle(client, repo(registry, tag="v1"))
    referrer = _attach_signature(client, registry, manifest)
    subject = repo(registry).with_digest(sha256_digest(manifest))
    found = client.referrers(subject, artifact_type=SIGSTORE_BUNDLE)
    assert [d.digest for d in found] == [sha256_digest(referrer)]
    assert client.referrers(subject, artifact_type="application/other") == ()
    assert (repo(registry).repository, fallback_tag(subject.digest or "")) not in (
        registry.state.tags
    )


def test_referrers_fall_back_to_the_digest_tag_when_the_registry_has_no_referrers_api(
    registry: MockRegistry, client: RegistryClient
) -> None:
    _, _, manifest = push_bundle(client, repo(registry, tag="v1"))
    subject = repo(registry).with_digest(sha256_digest(manifest))
    assert client.referrers(subject) == ()
    first = _attach_signature(client, registry, manifest)
    second = _attach_signature(client, registry, manifest + b" ")  # another subject
    del second
    found = client.referrers(subject, artifact_type=SIGSTORE_BUNDLE)
    assert [(d.digest, d.artifact_type) for d in found] == [(sha256_digest(first), SIGSTORE_BUNDLE)]
    fallback = registry.state.tags[(subject.repository, fallback_tag(sha256_digest(manifest)))]
    assert registry.state.manifests[fallback][0] == OCI_INDEX


def test_attaching_two_referrers_keeps_both_in_the_fallback_index(
    registry: MockRegistry, client: RegistryClient
) -> None:
    _, _, manifest = push_bundle(client, repo(registry, tag="v1"))
    subject = repo(registry).with_digest(sha256_digest(manifest))
    first = _attach_signature(client, registry, manifest)
    config = b'{"other": true}'
    client.push_blob(repo(registry), config)
    other = manifest_bytes(
        config=config,
        layers=[],
        artifact_type="application/vnd.example.sbom",
        subject={"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": len(manifest)},
    )
    client.push_manifest(repo(registry), other, media_type=OCI_MANIFEST)
    _attach_signature(client, registry, manifest)  # the same one again: no duplicate
    assert {d.digest for d in client.referrers(subject)} == {
        sha256_digest(first),
        sha256_digest(other),
    }


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A registry that accepts connections and never answers: a hung server or a black hole."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)  # held open, never written to

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.timeout(30)  # without the read timeout the call would hang until this fails it
def test_a_registry_that_never_answers_times_out_retries_and_says_it_is_unavailable(
    silent_registry: str, sleeps: list[float]
) -> None:
    client = RegistryClient(
        insecure=True,
        retry=RetryPolicy(attempts=2, initial_delay=1.0, jitter=False),
        sleep=sleeps.append,
        connect_timeout=1.0,
        read_timeout=0.3,
    )
    with client, pytest.raises(RegistryUnavailableError) as raised:
        client.resolve(Reference.parse(f"{silent_registry}/team/rules:v1"))

    assert sleeps == [1.0], "one retry after the first timeout, then give up"
    assert silent_registry in str(raised.value)
    assert raised.value.retryable


@pytest.mark.parametrize("before", [150, 155, 159])
def test_a_password_straddling_the_cut_of_a_registry_message_is_masked_whole(
    registry: MockRegistry, sleeps: list[float], before: int
) -> None:
    """Issue 11, defect 4: the message was cut to 160 characters and only then masked."""
    registry.state.auth = "basic"
    password = registry.state.password
    # The registry echoes the credential so that the cut falls inside it.
    registry.state.not_found_message = "x" * before + password + " and more"
    with (
        make_client(registry, sleeps, auth=credentials_for(registry)) as client,
        pytest.raises(NotFoundError) as missing,
    ):
        client.pull_manifest(repo(registry, tag="nope"))
    message = str(missing.value)
    assert "MANIFEST_UNKNOWN: " + "x" * 10 in message  # the registry's text is there
    for size in range(4, len(password) + 1):
        assert password[:size] not in message, size


def test_a_registry_message_holding_part_of_a_token_is_withheld(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "bearer"
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        push_bundle(client, repo(registry, tag="v1"))
        (token, *_) = registry.state.issued_tokens
        # Only the first ten characters: no whole secret to mask.
        registry.state.not_found_message = f"token {token[:10]}... has no access"
        with pytest.raises(NotFoundError) as missing:
            client.pull_manifest(repo(registry, tag="nope"))
    message = str(missing.value)
    assert token[:10] not in message
    assert "withheld" in message
    # An ordinary message is kept.
    registry.state.not_found_message = "manifest unknown to this registry"
    with (
        make_client(registry, sleeps, auth=credentials_for(registry)) as client,
        pytest.raises(NotFoundError, match="manifest unknown to this registry"),
    ):
        client.pull_manifest(repo(registry, tag="nope"))
