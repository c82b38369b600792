"""Authors' round trips through the real `logicbundle` command and the real registry.

pack -> push -> sign (a cosign key, a PEM key, keyless through the private
sigstore fixture) -> verify, with the exit codes scripts rely on; and the
rejections a user meets: unsigned, wrong key, wrong identity, a regex that
matches only part of the subject, a registry whose layer bytes were tampered with.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from e2e.harness import services
from e2e.harness.services import Registry
from logicbundle.artifact import fetch_bundle, pull_bundle
from logicbundle.oci import DigestMismatchError, Reference, RegistryClient
from logicbundle.trust import attach_signature, sign_keyless
from tests.trust.sigstore_fixture import DEFAULT_ISSUER, DEFAULT_SUBJECT, PrivateSigstore

DESCRIPTOR = {
    "name": "pricing",
    "version": "2.0.0",
    "entrypoint": "rules:Rules",
    "interface": {"functions": {"price": {"params": [{"name": "item"}], "returns": "float"}}},
}


def lb(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logicbundle.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "rules.py").write_text("class Rules:\n    def price(self, item):\n        return 3.0\n")
    (src / "logicbundle.yaml").write_text(yaml.safe_dump(DESCRIPTOR))
    return src


@pytest.fixture
def pushed(registry: Registry, bundle_dir: Path, request: pytest.FixtureRequest) -> str:
    """A bundle pushed with the CLI; returns its tag reference."""
    ref = f"{registry.host}/cli/t{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]}:v2"
    proc = lb("push", bundle_dir, ref, "--insecure")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("sha256:")
    return ref


@pytest.fixture
def pem_keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "key.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "key.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_pack_push_sign_verify_with_a_pem_key(pushed: str, pem_keys: tuple[Path, Path]) -> None:
    private, public = pem_keys
    signed = lb("sign", pushed, "--key", private, "--insecure", "--output", "json")
    assert signed.returncode == 0, signed.stderr
    verified = lb("verify", pushed, "--key", public, "--insecure", "--output", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["verified"] is True
    assert result["digest"] == json.loads(signed.stdout)["digest"]
    assert result["method"] == "key-dsse"


def test_a_key_made_by_cosign_signs_through_the_cli_and_cosign_verifies_it(
    pushed: str, tmp_path: Path
) -> None:
    env = {"COSIGN_PASSWORD": "s3cret", "HOME": str(tmp_path), "TUF_ROOT": str(tmp_path / "t")}
    subprocess.run(
        [str(services.cosign()), "generate-key-pair"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        check=True,
        timeout=60,
    )
    signed = lb("sign", pushed, "--key", tmp_path / "cosign.key", "--insecure", env=env)
    assert signed.returncode == 0, signed.stderr
    cosign = subprocess.run(
        [
            str(services.cosign()),
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            pushed,
        ],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cosign.returncode == 0, cosign.stderr
    ours = lb("verify", pushed, "--key", tmp_path / "cosign.pub", "--insecure")
    assert ours.returncode == 0, ours.stdout


def test_an_unsigned_bundle_fails_verification_with_exit_3_and_says_how_to_sign(
    pushed: str, pem_keys: tuple[Path, Path]
) -> None:
    proc = lb("verify", pushed, "--key", pem_keys[1], "--insecure")
    assert proc.returncode == 3
    assert "no signature was found" in proc.stdout
    assert "logicbundle sign" in proc.stdout


def test_a_bundle_signed_by_another_key_fails_verification(
    pushed: str, pem_keys: tuple[Path, Path], tmp_path: Path
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert lb("sign", pushed, "--key", other_pem, "--insecure").returncode == 0
    proc = lb("verify", pushed, "--key", pem_keys[1], "--insecure")
    assert proc.returncode == 3
    assert "verification failed" in proc.stdout


@pytest.fixture(scope="module")
def sigstore() -> PrivateSigstore:
    return PrivateSigstore()


@pytest.fixture
def keyless_signed(pushed: str, sigstore: PrivateSigstore, tmp_path: Path) -> tuple[str, Path]:
    """`pushed`, signed keyless by the private sigstore; returns (ref, trusted root file)."""
    ref = Reference.parse(pushed)
    with RegistryClient(insecure=True) as client:
        pinned = ref.with_digest(client.resolve(ref).digest)
        attach_signature(
            client,
            pinned,
            sign_keyless(
                digest=str(pinned.digest),
                identity_token=sigstore.identity_token(),
                signing_context=sigstore.signing_context(),
            ),
        )
    root = tmp_path / "trusted_root.json"
    root.write_bytes(sigstore.trusted_root_json())
    return pushed, root


def test_a_keyless_signature_verifies_through_the_cli_with_a_trusted_root_file(
    keyless_signed: tuple[str, Path],
) -> None:
    ref, root = keyless_signed
    proc = lb(
        "verify",
        ref,
        "--identity",
        DEFAULT_SUBJECT,
        "--issuer",
        DEFAULT_ISSUER,
        "--trusted-root",
        root,
        "--insecure",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"signer: {DEFAULT_SUBJECT}" in proc.stdout


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--identity", "someone-else@example.com", "--issuer", DEFAULT_ISSUER], "identity"),
        (["--identity", DEFAULT_SUBJECT, "--issuer", "https://wrong.issuer.example"], "issuer"),
        (["--identity-regex", DEFAULT_SUBJECT[:5], "--issuer", DEFAULT_ISSUER], "partial regex"),
    ],
    ids=["wrong identity", "wrong issuer", "a regex matching only part of the subject"],
)
def test_a_keyless_signature_from_someone_else_fails_verification(
    keyless_signed: tuple[str, Path], flags: list[str], what: str
) -> None:
    ref, root = keyless_signed
    proc = lb("verify", ref, *flags, "--trusted-root", root, "--insecure")
    assert proc.returncode == 3, f"{what}: {proc.stdout}"


def test_a_registry_serving_tampered_layer_bytes_is_caught_and_nothing_is_unpacked(
    registry: Registry, pushed: str, tmp_path: Path
) -> None:
    with RegistryClient(insecure=True) as client:
        remote = fetch_bundle(client, Reference.parse(pushed))
        blob = (
            registry.process.log_path.parent
            / "data"
            / "docker"
            / "registry"
            / "v2"
            / "blobs"
            / "sha256"
            / remote.layer.digest[7:9]
            / remote.layer.digest[7:]
            / "data"
        )
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
        with pytest.raises(DigestMismatchError):
            pull_bundle(client, remote, tmp_path / "landing" / "v2")
    assert not (tmp_path / "landing" / "v2").exists()
    assert [p for p in (tmp_path / "landing").iterdir() if not p.name.startswith(".")] == []


def test_usage_errors_and_a_missing_or_partial_policy_exit_2(pushed: str) -> None:
    """Flags that say nothing to trust, or half of an identity, are usage errors (docs/cli.md)."""
    assert lb("verify").returncode == 2
    no_policy = lb("verify", pushed, "--insecure")
    assert no_policy.returncode == 2
    assert "say whom to trust" in no_policy.stderr
    lonely_issuer = lb("verify", pushed, "--issuer", "https://x.example", "--insecure")
    assert lonely_issuer.returncode == 2
