"""Signatures interoperate with real cosign v3, on a real registry without a referrers API.

The registry is the harness's Debian ``docker-registry`` (distribution 2.8), so every
Sigstore bundle here travels through the ``sha256-<hex>`` referrers tag fallback. cosign
runs fully offline: ``HOME`` and ``TUF_ROOT`` point into the test's directory, any
request to the internet goes to a closed proxy port on 127.0.0.1, and the flags used are:

* sign, new bundle format (v3 default):
  ``cosign sign --yes --key K --tlog-upload=false --use-signing-config=false
  --allow-http-registry REF@DIGEST``
* sign, legacy ``.sig`` simple signing: the same plus ``--new-bundle-format=false``;
* verify a key signature without a transparency-log entry: ``cosign verify --key P
  --insecure-ignore-tlog=true`` (or ``--private-infrastructure=true``)
  ``--allow-http-registry REF@DIGEST``; without either, cosign fetches the public-good
  trusted root over TUF, and with a local ``--trusted-root`` it still demands a log entry;
* verify a keyless signature from a private Sigstore: ``cosign verify --trusted-root
  trusted_root.json --certificate-identity S --certificate-oidc-issuer I``.

``cosign sign --key`` only reads cosign's own encrypted key format (scrypt + NaCl
secretbox; a plain PKCS#8 PEM is refused with "unsupported pem type: PRIVATE KEY"), which
logicbundle cannot read. One PKCS#8 key serves both: ``cosign import-key-pair`` wraps it
for cosign and logicbundle reads the PEM.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from e2e.harness import services
from e2e.harness.services import Registry
from logicbundle.oci import (
    OCI_EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    Reference,
    RegistryClient,
    fallback_tag,
    sha256_digest,
)
from logicbundle.trust import (
    BUNDLE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    CosignPublicKey,
    KeylessIdentity,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    attach_signature,
    legacy_signature_tag,
    load_trusted_root,
    sign_keyless,
    sign_legacy_with_key,
    sign_with_key,
    verify_reference,
)
from tests.trust.sigstore_fixture import DEFAULT_ISSUER, DEFAULT_SUBJECT, PrivateSigstore

ARTIFACT_TYPE = "application/vnd.logicbundle.bundle.v1"
PASSWORD = "e2e-interop"


@dataclass(frozen=True)
class KeyPair:
    """One ECDSA P-256 key in both worlds."""

    private_pem: Path  # PKCS#8, unencrypted: what logicbundle signs with
    public_pem: Path  # SubjectPublicKeyInfo PEM: what both verify with
    cosign_key: Path  # the same key in cosign's encrypted format (import-key-pair)

    @property
    def policy(self) -> TrustPolicy:
        return TrustPolicy(keys=(CosignPublicKey(self.public_pem.read_bytes()),))


class Cosign:
    """Real cosign, offline, with its state in the test's directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "home").mkdir(exist_ok=True)
        closed = "http://127.0.0.1:9"  # nothing listens: an internet request fails at once
        self.env = {
            **os.environ,
            "HOME": str(workdir / "home"),
            "TUF_ROOT": str(workdir / "tuf"),
            "COSIGN_PASSWORD": PASSWORD,
            "HTTPS_PROXY": closed,
            "HTTP_PROXY": closed,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(services.cosign()), *map(str, args)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str | Path) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, f"cosign {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def sign(self, key: Path, ref: Reference, *extra: str) -> str:
        return self.ok(
            "sign",
            "--yes",
            "--key",
            key,
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--allow-http-registry",
            *extra,
            str(ref),
        )

    def verify_key(
        self, public: Path, ref: Reference, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run("verify", "--key", public, "--allow-http-registry", *extra, str(ref))


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(insecure=True, sleep=lambda _: None) as made:
        yield made


@pytest.fixture
def cosign(tmp_path: Path) -> Cosign:
    return Cosign(tmp_path)


def _key_pair(cosign: Cosign, name: str) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    private = cosign.workdir / f"{name}.pem"
    public = cosign.workdir / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cosign.ok("import-key-pair", "--key", private, "--output-key-prefix", f"{name}-cosign")
    imported = cosign.workdir / f"{name}-cosign.pub"
    assert imported.read_bytes().strip() == public.read_bytes().strip()
    return KeyPair(private, public, cosign.workdir / f"{name}-cosign.key")


@pytest.fixture
def keys(cosign: Cosign) -> KeyPair:
    return _key_pair(cosign, "author")


@pytest.fixture
def other_keys(cosign: Cosign) -> KeyPair:
    return _key_pair(cosign, "stranger")


def _push(client: RegistryClient, repository: Reference, content: bytes) -> Reference:
    """Push a one-layer artifact under tag v1; return it pinned to its digest."""
    config = b"{}"
    target = repository.with_tag("v1")
    client.push_blob(target, config, media_type=OCI_EMPTY_CONFIG)
    client.push_blob(target, content)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": OCI_EMPTY_CONFIG, "digest": sha256_digest(config), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256_digest(content),
                    "size": len(content),
                }
            ],
        }
    ).encode()
    descriptor = client.push_manifest(target, manifest, media_type=OCI_MANIFEST)
    return target.with_digest(descriptor.digest)


@pytest.fixture
def repository(registry: Registry) -> Reference:
    return Reference(registry.host, f"interop/{uuid.uuid4().hex[:12]}")


@pytest.fixture
def artifact(client: RegistryClient, repository: Reference) -> Reference:
    return _push(client, repository, b"rules v1 " + os.urandom(64))


def _digest(ref: Reference) -> str:
    assert ref.digest is not None
    return ref.digest


def _pinned(ref: Reference) -> Reference:
    """``registry/repo@digest``, the way cosign is told what to sign."""
    return ref.with_tag(None).with_digest(_digest(ref))


# --- (a) cosign signs, new bundle format -------------------------------------------------


def test_we_verify_what_cosign_signs_with_a_key_in_the_new_bundle_format(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    cosign.sign(keys.cosign_key, _pinned(artifact))

    tags = client.list_tags(artifact)
    assert fallback_tag(_digest(artifact)) in tags
    assert legacy_signature_tag(_digest(artifact)) not in tags
    index = client.pull_manifest(artifact.with_tag(fallback_tag(_digest(artifact))))
    assert index.descriptor.media_type == OCI_INDEX

    result = verify_reference(client=client, reference=artifact.with_tag("v1"), policy=keys.policy)

    assert result.digest == artifact.digest
    assert result.identity == CosignPublicKey(keys.public_pem.read_bytes()).key_id
    assert result.method == "key-dsse"


def test_what_we_attach_is_byte_for_byte_shaped_like_cosigns_referrer(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    cosign.sign(keys.cosign_key, _pinned(artifact))
    theirs = _referrer_manifest(client, artifact)
    attach_signature(
        client,
        artifact,
        sign_with_key(digest=_digest(artifact), private_key_pem=keys.private_pem.read_bytes()),
    )
    ours = [m for m in _referrer_manifests(client, artifact) if m != theirs]
    assert len(ours) == 1
    mine = ours[0]
    assert list(mine) == list(theirs)  # same fields, same order
    assert mine["config"] == theirs["config"]
    assert mine["subject"] == theirs["subject"]
    assert mine["artifactType"] == theirs["artifactType"] == BUNDLE_MEDIA_TYPE
    assert set(mine["annotations"]) == set(theirs["annotations"])
    assert [layer["mediaType"] for layer in mine["layers"]] == [BUNDLE_MEDIA_TYPE]


def _referrer_manifests(client: RegistryClient, artifact: Reference) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for descriptor in client.referrers(artifact, artifact_type=BUNDLE_MEDIA_TYPE):
        pulled = client.pull_manifest(artifact.with_digest(descriptor.digest))
        assert isinstance(pulled.manifest, Manifest)
        found.append(json.loads(pulled.data))
    return found


def _referrer_manifest(client: RegistryClient, artifact: Reference) -> dict[str, Any]:
    (only,) = _referrer_manifests(client, artifact)
    return only


# --- (b) cosign signs, legacy .sig ---------------------------------------------------------


def test_we_verify_what_cosign_signs_in_the_legacy_sig_format(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    cosign.sign(keys.cosign_key, _pinned(artifact), "--new-bundle-format=false")

    tags = client.list_tags(artifact)
    assert legacy_signature_tag(_digest(artifact)) in tags
    assert fallback_tag(_digest(artifact)) not in tags
    sig = client.pull_manifest(artifact.with_tag(legacy_signature_tag(_digest(artifact))))
    assert isinstance(sig.manifest, Manifest)
    assert [layer.media_type for layer in sig.manifest.layers] == [SIMPLE_SIGNING_MEDIA_TYPE]

    result = verify_reference(client=client, reference=artifact.with_tag("v1"), policy=keys.policy)

    assert result.method == "key-legacy"
    assert result.digest == artifact.digest


# --- (c) we sign, cosign verifies -------------------------------------------------------------


def test_cosign_verifies_what_we_sign_with_a_key(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    signature = sign_with_key(
        digest=_digest(artifact), private_key_pem=keys.private_pem.read_bytes()
    )
    attach_signature(client, artifact, signature)

    for offline in ("--insecure-ignore-tlog=true", "--private-infrastructure=true"):
        proc = cosign.verify_key(keys.public_pem, _pinned(artifact), offline)
        assert proc.returncode == 0, proc.stderr
        claims = json.loads(proc.stdout)
        assert claims[0]["critical"]["image"]["docker-manifest-digest"] == artifact.digest

    wrong = cosign.verify_key(
        _key_pair(cosign, "nobody").public_pem, _pinned(artifact), "--insecure-ignore-tlog=true"
    )
    assert wrong.returncode != 0


def test_cosign_demands_a_log_entry_unless_told_to_ignore_the_transparency_log(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    # What `cosign verify --key` needs for a key signature that never reached Rekor (ours,
    # and cosign's own with --tlog-upload=false): with a local trusted root it still wants
    # a transparency-log entry; only --insecure-ignore-tlog / --private-infrastructure skip it.
    signature = sign_with_key(
        digest=_digest(artifact), private_key_pem=keys.private_pem.read_bytes()
    )
    attach_signature(client, artifact, signature)
    root = cosign.workdir / "empty_trusted_root.json"
    root.write_text('{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}')

    proc = cosign.verify_key(keys.public_pem, _pinned(artifact), "--trusted-root", str(root))

    assert proc.returncode != 0
    assert "not enough verified log entries" in proc.stderr


def test_cosign_verifies_and_extends_what_we_sign_in_the_legacy_format(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, other_keys: KeyPair, artifact: Reference
) -> None:
    signature = sign_legacy_with_key(
        digest=_digest(artifact),
        docker_reference=f"{artifact.registry}/{artifact.repository}",
        private_key_pem=keys.private_pem.read_bytes(),
    )
    attach_signature(client, artifact, signature)
    proc = cosign.verify_key(keys.public_pem, _pinned(artifact), "--insecure-ignore-tlog=true")
    assert proc.returncode == 0, proc.stderr

    # cosign appends its own signature to our .sig manifest, and we still read both.
    cosign.sign(other_keys.cosign_key, _pinned(artifact), "--new-bundle-format=false")
    sig = client.pull_manifest(artifact.with_tag(legacy_signature_tag(_digest(artifact))))
    assert isinstance(sig.manifest, Manifest)
    assert len(sig.manifest.layers) == 2
    for pair in (keys, other_keys):
        result = verify_reference(
            client=client, reference=artifact, policy=pair.policy, verifier=TrustVerifier()
        )
        assert result.method == "key-legacy"


# --- (d) keyless, through a private Sigstore ---------------------------------------------------


@pytest.fixture(scope="module")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


def test_a_keyless_signature_round_trips_through_the_real_registry_and_cosign_accepts_it(
    cosign: Cosign, client: RegistryClient, sigstore: PrivateSigstore, artifact: Reference
) -> None:
    signature = sign_keyless(
        digest=_digest(artifact),
        identity_token=sigstore.identity_token(),
        signing_context=sigstore.signing_context(),
    )
    attach_signature(client, artifact, signature)
    root = cosign.workdir / "trusted_root.json"
    root.write_bytes(sigstore.trusted_root_json())

    result = verify_reference(
        client=client,
        reference=artifact.with_tag("v1"),
        policy=TrustPolicy(
            identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject=DEFAULT_SUBJECT),)
        ),
        verifier=TrustVerifier(trusted_root=load_trusted_root(root.read_bytes())),
    )
    assert (result.digest, result.identity, result.issuer, result.method) == (
        artifact.digest,
        DEFAULT_SUBJECT,
        DEFAULT_ISSUER,
        "keyless-dsse",
    )

    proc = cosign.run(
        "verify",
        "--trusted-root",
        root,
        "--certificate-identity",
        DEFAULT_SUBJECT,
        "--certificate-oidc-issuer",
        DEFAULT_ISSUER,
        "--allow-http-registry",
        str(_pinned(artifact)),
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("field", "role", "cosign_says"),
    [
        (
            "certificateAuthorities",
            "the certificate authority that issued the signing certificate",
            "failed to verify leaf certificate",
        ),
        (
            "tlogs",
            "the transparency log key that recorded the signature",
            "failed to verify log inclusion",
        ),
        (
            "ctlogs",
            "the CT log key that signed the certificate's SCT",
            "failed to verify signed certificate timestamp",
        ),
    ],
)
def test_a_key_retired_before_the_signature_is_refused_by_us_and_by_cosign(
    cosign: Cosign,
    client: RegistryClient,
    sigstore: PrivateSigstore,
    artifact: Reference,
    field: str,
    role: str,
    cosign_says: str,
) -> None:
    """Issue 11, defect 5: sigstore-python alone accepted a key whose validFor had ended."""
    signature = sign_keyless(
        digest=_digest(artifact),
        identity_token=sigstore.identity_token(),
        signing_context=sigstore.signing_context(),
    )
    attach_signature(client, artifact, signature)
    document = json.loads(sigstore.trusted_root_json())
    entry = document[field][0]
    holder = entry if field == "certificateAuthorities" else entry["publicKey"]
    retired = (sigstore.now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    holder["validFor"]["end"] = retired
    root = cosign.workdir / "retired_trusted_root.json"
    root.write_text(json.dumps(document))

    with pytest.raises(VerificationError) as caught:
        verify_reference(
            client=client,
            reference=artifact.with_tag("v1"),
            policy=TrustPolicy(
                identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject=DEFAULT_SUBJECT),)
            ),
            verifier=TrustVerifier(trusted_root=load_trusted_root(root.read_bytes())),
        )
    assert f"{role} was retired at {retired}" in caught.value.message
    assert caught.value.reason == "VerificationFailed"

    proc = cosign.run(
        "verify",
        "--trusted-root",
        root,
        "--certificate-identity",
        DEFAULT_SUBJECT,
        "--certificate-oidc-issuer",
        DEFAULT_ISSUER,
        "--allow-http-registry",
        str(_pinned(artifact)),
    )
    assert proc.returncode != 0
    assert cosign_says in proc.stderr


# --- (e) rejections ----------------------------------------------------------------------------


def test_an_unsigned_artifact_is_rejected(
    client: RegistryClient, keys: KeyPair, artifact: Reference
) -> None:
    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=artifact.with_tag("v1"), policy=keys.policy)
    assert f"no signature was found for {artifact.registry}/{artifact.repository}" in (
        caught.value.message
    )
    assert "`cosign sign`" in str(caught.value)


def test_a_cosign_signature_by_another_key_is_rejected(
    cosign: Cosign, client: RegistryClient, keys: KeyPair, other_keys: KeyPair, artifact: Reference
) -> None:
    cosign.sign(other_keys.cosign_key, _pinned(artifact))
    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=artifact, policy=keys.policy)
    assert "wrong key" in caught.value.message
    assert "spec.verify.keys" in str(caught.value)


def test_a_signature_made_for_another_digest_is_rejected(
    client: RegistryClient, keys: KeyPair, repository: Reference, artifact: Reference
) -> None:
    other = _push(client, repository.with_tag(None), b"other rules " + os.urandom(16))
    signature = sign_with_key(digest=_digest(other), private_key_pem=keys.private_pem.read_bytes())
    attach_signature(client, artifact, signature)  # attached to the wrong artifact
    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=artifact, policy=keys.policy)
    assert f"the signature is for {other.digest}, not for {artifact.digest}" in (
        caught.value.message
    )


def test_a_tampered_manifest_is_not_covered_by_the_original_signature(
    cosign: Cosign,
    client: RegistryClient,
    keys: KeyPair,
    repository: Reference,
    artifact: Reference,
) -> None:
    cosign.sign(keys.cosign_key, _pinned(artifact))
    assert verify_reference(client=client, reference=artifact.with_tag("v1"), policy=keys.policy)
    # Someone with push access moves the tag to a manifest with other content.
    tampered = _push(client, repository, b"evil rules " + os.urandom(16))
    assert tampered.digest != artifact.digest

    with pytest.raises(VerificationError) as caught:
        verify_reference(client=client, reference=artifact.with_tag("v1"), policy=keys.policy)

    assert f"no signature was found for {artifact.registry}/{artifact.repository}@" in (
        caught.value.message
    )
    assert str(tampered.digest) in caught.value.message
