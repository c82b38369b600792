"""The source and verification step: spec -> registry client, trust policy, verified bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from logicbundle.api.v1alpha1 import LogicBundleSpec
from logicbundle.artifact import push_directory
from logicbundle.bundle import AuditRejectedError
from logicbundle.controller._source import (
    BundleCache,
    ConfigError,
    InvalidTrustedRootError,
    RegistryClients,
    failure_of,
    resolve_and_verify,
    trust_policy,
    trusted_root_bytes,
)
from logicbundle.distributor import BlobCache
from logicbundle.oci import Reference, RegistryClient
from logicbundle.trust import TrustVerifier, VerificationError, attach_signature, sign_with_key
from tests.oci.mock_registry import MockRegistry

INTERFACE = {"functions": {"price": {"params": [{"name": "item"}]}}}


class FakeReader:
    def __init__(
        self,
        secrets: Mapping[str, Mapping[str, bytes]] | None = None,
        config_maps: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.secrets = dict(secrets or {})
        self.config_maps = dict(config_maps or {})

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        if name not in self.secrets:
            raise ConfigError(f"Secret {namespace}/{name} not found")
        return self.secrets[name]

    def config_map(self, namespace: str, name: str) -> Mapping[str, str]:
        if name not in self.config_maps:
            raise ConfigError(f"ConfigMap {namespace}/{name} not found")
        return self.config_maps[name]


def _spec(ref: str, verify: dict[str, Any], **source: Any) -> LogicBundleSpec:
    return LogicBundleSpec.model_validate(
        {
            "source": {"ref": ref, **source},
            "verify": verify,
            "target": {"podSelector": {"matchLabels": {"app": "web"}}},
        }
    )


@pytest.fixture
def key_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def signed(tmp_path: Path, key_pair: tuple[bytes, bytes]) -> Iterator[tuple[str, str]]:
    """A bundle pushed and signed on a mock registry: (tag reference, digest)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "rules.py").write_text("def price(item):\n    return 1.0\n")
    with MockRegistry() as registry, RegistryClient(insecure=True) as client:
        target = Reference(registry.host, "shop/rules", "v1")
        pushed = push_directory(
            client, target, src, name="rules", version="1.0.0", interface=INTERFACE
        )
        attach_signature(
            client,
            pushed.reference,
            sign_with_key(digest=pushed.digest, private_key_pem=key_pair[0]),
        )
        yield str(target), pushed.digest


def test_an_inline_key_and_a_secret_key_both_enter_the_policy(
    key_pair: tuple[bytes, bytes],
) -> None:
    spec = _spec(
        "registry.example/a:v1",
        {"keys": [{"pem": key_pair[1].decode()}, {"secretRef": {"name": "k"}}]},
    )
    policy = trust_policy(
        spec.verify, namespace="ns", reader=FakeReader({"k": {"cosign.pub": key_pair[1]}})
    )
    assert len(policy.keys) == 2
    assert policy.keys[0] == policy.keys[1]


def test_a_missing_key_secret_is_a_configuration_error_naming_it() -> None:
    spec = _spec("registry.example/a:v1", {"keys": [{"secretRef": {"name": "gone"}}]})
    with pytest.raises(ConfigError, match="ns/gone"):
        trust_policy(spec.verify, namespace="ns", reader=FakeReader())


def test_a_secret_without_the_named_key_says_which_key(key_pair: tuple[bytes, bytes]) -> None:
    spec = _spec("registry.example/a:v1", {"keys": [{"secretRef": {"name": "k", "key": "x.pub"}}]})
    with pytest.raises(ConfigError, match=r"no key 'x\.pub'"):
        trust_policy(spec.verify, namespace="ns", reader=FakeReader({"k": {"cosign.pub": b""}}))


def test_the_trusted_root_comes_from_a_config_map_and_defaults_to_public_good() -> None:
    identity = {"issuer": "https://i.example", "subject": "me@example.com"}
    default = _spec("registry.example/a:v1", {"keyless": {"identities": [identity]}})
    assert trusted_root_bytes(default.verify, namespace="ns", reader=FakeReader()) is None
    private = _spec(
        "registry.example/a:v1",
        {
            "keyless": {
                "identities": [identity],
                "trustedRootRef": {"kind": "ConfigMap", "name": "root"},
            }
        },
    )
    reader = FakeReader(config_maps={"root": {"trusted_root.json": "{}"}})
    assert trusted_root_bytes(private.verify, namespace="ns", reader=reader) == b"{}"


def test_a_signed_bundle_resolves_verifies_and_fetches_by_digest(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes]
) -> None:
    ref, digest = signed
    spec = _spec(ref, {"keys": [{"pem": key_pair[1].decode()}]}, insecure=True)
    verifiers: dict[bytes | None, TrustVerifier] = {}
    result = resolve_and_verify(
        spec, namespace="ns", reader=FakeReader(), clients=RegistryClients(), verifiers=verifiers
    )
    assert result.error is None
    assert result.verified is not None
    assert result.bundle is not None
    assert result.verified.digest == digest
    assert result.bundle.digest == digest
    assert result.bundle.manifest.name == "rules"
    assert list(verifiers) == [None]


def test_a_bundle_signed_by_another_key_is_not_verified(
    signed: tuple[str, str],
) -> None:
    ref, _ = signed
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    spec = _spec(ref, {"keys": [{"pem": other.decode()}]}, insecure=True)
    outcome = resolve_and_verify(
        spec, namespace="ns", reader=FakeReader(), clients=RegistryClients(), verifiers={}
    )
    assert isinstance(outcome.error, VerificationError)
    assert outcome.verified is None
    assert outcome.digest.startswith("sha256:")


def test_a_pull_secret_that_is_not_a_docker_config_fails_without_leaking_it(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes]
) -> None:
    ref, _ = signed
    spec = _spec(
        ref,
        {"keys": [{"pem": key_pair[1].decode()}]},
        insecure=True,
        pullSecretRef={"name": "creds"},
    )
    reader = FakeReader({"creds": {".dockerconfigjson": b"hunter2-not-json"}})
    with pytest.raises(Exception) as exc:
        resolve_and_verify(
            spec, namespace="ns", reader=reader, clients=RegistryClients(), verifiers={}
        )
    assert "hunter2" not in str(exc.value)


def test_a_verified_bundle_lands_in_the_distributors_cache(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    ref, digest = signed
    blobs = BlobCache(tmp_path / "cache")
    spec = _spec(ref, {"keys": [{"pem": key_pair[1].decode()}], "audit": "warn"}, insecure=True)
    outcome = resolve_and_verify(
        spec,
        namespace="ns",
        reader=FakeReader(),
        clients=RegistryClients(),
        verifiers={},
        cache=BundleCache(blobs),
    )
    assert outcome.error is None
    cached = blobs.get(digest)
    assert cached is not None
    assert blobs.manifest_bytes(digest) is not None


def test_a_cached_digest_resolved_again_is_neither_pulled_nor_unpacked_again(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    """Each reconcile that resolves an already cached, already audited digest (1,000
    LogicBundles on one digest, an operator restarted) must not pull its layer again."""
    ref, digest = signed
    cache = BundleCache(BlobCache(tmp_path / "cache"))
    pulls: list[str] = []
    original = RegistryClient.pull_blob_to

    def counting(self: RegistryClient, *args: Any, **kwargs: Any) -> Any:
        into = [a for a in (*args, *kwargs.values()) if isinstance(a, Path)]
        if into and into[0].name == "layer.tar.gz":  # the cache's pull of the bundle's layer
            pulls.append(digest)
        return original(self, *args, **kwargs)

    spec = _spec(ref, {"keys": [{"pem": key_pair[1].decode()}], "audit": "warn"}, insecure=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RegistryClient, "pull_blob_to", counting)
        for _ in range(3):
            outcome = resolve_and_verify(
                spec,
                namespace="ns",
                reader=FakeReader(),
                clients=RegistryClients(),
                verifiers={},
                cache=cache,
            )
            assert outcome.error is None and outcome.digest == digest
    assert len(pulls) == 1


def test_an_unverified_bundle_never_reaches_the_cache(
    signed: tuple[str, str], tmp_path: Path
) -> None:
    ref, digest = signed
    blobs = BlobCache(tmp_path / "cache")
    other = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    spec = _spec(ref, {"keys": [{"pem": other.decode()}]}, insecure=True)
    outcome = resolve_and_verify(
        spec,
        namespace="ns",
        reader=FakeReader(),
        clients=RegistryClients(),
        verifiers={},
        cache=BundleCache(blobs),
    )
    assert outcome.error is not None
    assert blobs.get(digest) is None


def test_an_audit_set_to_reject_refuses_a_bundle_that_runs_subprocesses(
    tmp_path: Path, key_pair: tuple[bytes, bytes]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "rules.py").write_text("import subprocess\n\ndef price(item):\n    return 1.0\n")
    blobs = BlobCache(tmp_path / "cache")
    with MockRegistry() as registry, RegistryClient(insecure=True) as client:
        target = Reference(registry.host, "shop/evil", "v1")
        pushed = push_directory(
            client, target, src, name="evil", version="1.0.0", interface=INTERFACE
        )
        attach_signature(
            client,
            pushed.reference,
            sign_with_key(digest=pushed.digest, private_key_pem=key_pair[0]),
        )
        spec = _spec(
            str(target),
            {"keys": [{"pem": key_pair[1].decode()}], "audit": "reject"},
            insecure=True,
        )
        outcome = resolve_and_verify(
            spec,
            namespace="ns",
            reader=FakeReader(),
            clients=RegistryClients(),
            verifiers={},
            cache=BundleCache(blobs),
        )
    assert isinstance(outcome.error, AuditRejectedError)
    assert "subprocess" in outcome.error.message
    assert blobs.get(pushed.digest) is None


# --- every failure tied to a digest ends as that digest's error (issue 11, defect 3) ----------


def _outcome(ref: str, public: bytes, cache: BundleCache) -> Any:
    spec = _spec(ref, {"keys": [{"pem": public.decode()}], "audit": "warn"}, insecure=True)
    return resolve_and_verify(
        spec,
        namespace="ns",
        reader=FakeReader(),
        clients=RegistryClients(),
        verifiers={},
        cache=cache,
    )


class _FailingCache(BundleCache):
    def __init__(self, blobs: BlobCache, error: Exception) -> None:
        super().__init__(blobs)
        self.error = error

    def store(self, client: RegistryClient, bundle: Any, *, audit: str) -> tuple[str, ...]:
        raise self.error


def test_an_os_error_while_caching_names_the_digest_and_is_not_served(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    ref, digest = signed
    blobs = BlobCache(tmp_path / "cache")
    error = OSError(36, "File name too long", "/cache/" + "a" * 300)
    outcome = _outcome(ref, key_pair[1], _FailingCache(blobs, error))
    assert outcome.digest == digest
    assert outcome.error is not None
    assert outcome.error.reason == "VerificationFailed"
    assert f"caching {digest} failed unexpectedly (OSError: File name too long)" in str(
        outcome.error
    )
    assert "a" * 50 not in str(outcome.error)  # the path it was given is not quoted
    assert blobs.get(digest) is None


def test_a_hostile_layer_refused_while_caching_is_that_digests_error(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    from logicbundle.bundle import PathTraversalError

    ref, digest = signed
    refused = PathTraversalError("member '../x' is refused", member="../x")
    outcome = _outcome(ref, key_pair[1], _FailingCache(BlobCache(tmp_path / "c"), refused))
    assert outcome.error is refused
    assert outcome.digest == digest


def test_a_foreign_exception_while_verifying_fails_closed_on_the_digest(
    signed: tuple[str, str],
    key_pair: tuple[bytes, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref, digest = signed

    def explode(**_: Any) -> None:
        raise RuntimeError("a library's own error, quoting secret input")

    monkeypatch.setattr("logicbundle.controller._source.verify_reference", explode)
    blobs = BlobCache(tmp_path / "cache")
    outcome = _outcome(ref, key_pair[1], BundleCache(blobs))
    assert outcome.error is not None
    assert f"verifying {digest} failed unexpectedly (RuntimeError)" in str(outcome.error)
    assert "secret input" not in str(outcome.error)
    assert outcome.verified is None
    assert blobs.get(digest) is None


def _public_good_root() -> dict[str, Any]:
    from importlib import resources

    asset = resources.files("sigstore._store").joinpath(
        "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev", "trusted_root.json"
    )
    root: dict[str, Any] = json.loads(asset.read_bytes())
    return root


@pytest.mark.parametrize(
    ("emptied", "named"),
    [
        ("tlogs", "transparency logs"),
        ("certificateAuthorities", "certificate authorities"),
        ("ctlogs", "certificate transparency logs"),
    ],
)
def test_a_trusted_root_that_does_not_load_is_refused_before_any_digest_and_stalls(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], emptied: str, named: str
) -> None:
    """Issue 11, defects 3 and 2: it escaped the source step; then it failed the digest.

    The trusted root is the ConfigMap's fault, not any digest's: refused before
    the reference is resolved, as ``InvalidSource`` (stalled until the spec or
    the ConfigMap changes), never as a digest's ``Verified=False``.
    """
    ref, _ = signed
    root = _public_good_root()
    root[emptied] = []
    spec = _spec(
        ref,
        {
            "keys": [{"pem": key_pair[1].decode()}],
            "keyless": {
                "identities": [{"issuer": "https://i.example", "subject": "me@example.com"}],
                "trustedRootRef": {"kind": "ConfigMap", "name": "root"},
            },
        },
        insecure=True,
    )
    reader = FakeReader(config_maps={"root": {"trusted_root.json": json.dumps(root)}})
    verifiers: dict[bytes | None, TrustVerifier] = {}

    class NoRegistry(RegistryClients):
        def client(self, *_: Any, **__: Any) -> RegistryClient:
            raise AssertionError("the registry is not asked before the trusted root loads")

    with pytest.raises(InvalidTrustedRootError) as raised:
        resolve_and_verify(
            spec, namespace="ns", reader=reader, clients=NoRegistry(), verifiers=verifiers
        )
    assert named in raised.value.message
    failure = failure_of(raised.value)
    assert (failure.reason, failure.stalled) == ("InvalidSource", True)
    assert failure.message.startswith("InvalidTrustedRoot: the trusted root has no ")
    assert verifiers == {}, "a root that does not load is not kept"


def test_a_missing_trusted_root_config_map_is_still_a_configuration_error(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes]
) -> None:
    ref, _ = signed
    spec = _spec(
        ref,
        {
            "keys": [{"pem": key_pair[1].decode()}],
            "keyless": {
                "identities": [{"issuer": "https://i.example", "subject": "me@example.com"}],
                "trustedRootRef": {"kind": "ConfigMap", "name": "absent"},
            },
        },
        insecure=True,
    )
    with pytest.raises(ConfigError, match="absent"):
        resolve_and_verify(
            spec, namespace="ns", reader=FakeReader(), clients=RegistryClients(), verifiers={}
        )


def test_a_foreign_exception_before_the_digest_is_known_is_a_retryable_source_error(
    signed: tuple[str, str], key_pair: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from logicbundle.controller._source import SourceCheckError

    ref, _ = signed

    def unwritable(*_: Any, **__: Any) -> None:
        raise PermissionError(13, "Permission denied", "/ca/secret-name.pem")

    monkeypatch.setattr(RegistryClients, "client", unwritable)
    spec = _spec(ref, {"keys": [{"pem": key_pair[1].decode()}]}, insecure=True)
    with pytest.raises(SourceCheckError) as raised:
        resolve_and_verify(
            spec, namespace="ns", reader=FakeReader(), clients=RegistryClients(), verifiers={}
        )
    assert raised.value.retryable
    assert "PermissionError: Permission denied" in raised.value.message
    assert "secret-name" not in str(raised.value)


def test_a_hostile_layer_is_refused_before_the_cache_even_with_the_audit_off(
    tmp_path: Path, key_pair: tuple[bytes, bytes]
) -> None:
    from logicbundle.bundle import PathTraversalError
    from tests.artifact.hostile_artifacts import config_bytes, config_for, push_raw
    from tests.bundle import hostile_corpus as corpus

    ok = corpus.OK_CONTENT
    layer = corpus.build_layer([corpus.entry("ok.txt", ok), corpus.entry("../escaped", b"x")])
    blobs = BlobCache(tmp_path / "cache")
    with MockRegistry() as registry, RegistryClient(insecure=True) as client:
        target = Reference(registry.host, "shop/evil", "v1")
        digest = push_raw(
            client, target, config=config_bytes(config_for({"ok.txt": ok})), layer=layer
        )
        attach_signature(
            client,
            target.with_digest(digest),
            sign_with_key(digest=digest, private_key_pem=key_pair[0]),
        )
        spec = _spec(
            str(target), {"keys": [{"pem": key_pair[1].decode()}], "audit": "off"}, insecure=True
        )
        outcome = resolve_and_verify(
            spec,
            namespace="ns",
            reader=FakeReader(),
            clients=RegistryClients(),
            verifiers={},
            cache=BundleCache(blobs),
        )
    assert isinstance(outcome.error, PathTraversalError)
    assert outcome.digest == digest
    assert blobs.get(digest) is None
