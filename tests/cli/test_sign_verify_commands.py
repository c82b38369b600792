"""`logicbundle sign` and `verify` from the command line: key, legacy `.sig`, keyless, refusals.

The registry is the in-process mock; keyless signing runs sigstore-python's
own flow against the private sigstore instance of ``tests/trust`` (fake
Fulcio and Rekor, real certificates and log proofs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from logicbundle import trust
from logicbundle.cli import EXIT_VERIFICATION_FAILED, main
from logicbundle.trust import SigningError
from tests.oci.mock_registry import MockRegistry
from tests.trust.sigstore_fixture import DEFAULT_ISSUER, DEFAULT_SUBJECT, PrivateSigstore

DESCRIPTOR = {
    "name": "pricing",
    "version": "1.0.0",
    "entrypoint": "rules:Rules",
    "interface": {"functions": {"price": {"params": [{"name": "item"}]}}},
}


@pytest.fixture
def registry() -> Iterator[MockRegistry]:
    with MockRegistry() as running:
        yield running


@pytest.fixture
def pushed(tmp_path: Path, registry: MockRegistry, capsys: pytest.CaptureFixture[str]) -> str:
    """A bundle pushed to the mock registry, unsigned: its tag reference."""
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "rules.py").write_text("class Rules:\n    def price(self, item):\n        return 1.0\n")
    (src / "logicbundle.yaml").write_text(yaml.safe_dump(DESCRIPTOR))
    ref = f"{registry.host}/shop/pricing:v1"
    assert main(["push", str(src), ref, "--insecure", "--output", "json"]) == 0
    capsys.readouterr()
    return ref


def _key_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / f"{name}.key"
    public = tmp_path / f"{name}.pub"
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
    return private, public


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("legacy", [False, True], ids=["sigstore-bundle", "legacy-sig"])
def test_a_key_signature_made_by_sign_is_accepted_by_verify(
    pushed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], legacy: bool
) -> None:
    private, public = _key_pair(tmp_path, "author")
    sign = ["sign", pushed, "--key", str(private), "--insecure", "--output", "json"]
    assert main(sign + (["--legacy"] if legacy else [])) == 0
    signed = _json(capsys)
    assert signed["method"] == "key"

    assert main(["verify", pushed, "--key", str(public), "--insecure", "--output", "json"]) == 0
    verified = _json(capsys)
    assert verified["verified"] is True
    assert verified["digest"] == signed["digest"]


def test_verify_of_an_unsigned_artifact_exits_3_with_a_json_error(
    pushed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, public = _key_pair(tmp_path, "author")

    code = main(["verify", pushed, "--key", str(public), "--insecure", "--output", "json"])

    assert code == EXIT_VERIFICATION_FAILED
    out = _json(capsys)
    assert out["verified"] is False
    assert out["reference"] == pushed
    assert "no signature" in str(out["error"]).lower(), out


def test_verify_with_another_key_exits_3_and_says_which_check_failed(
    pushed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, _ = _key_pair(tmp_path, "author")
    _, other = _key_pair(tmp_path, "someone-else")
    assert main(["sign", pushed, "--key", str(private), "--insecure"]) == 0
    capsys.readouterr()

    code = main(["verify", pushed, "--key", str(other), "--insecure", "--output", "json"])

    assert code == EXIT_VERIFICATION_FAILED
    out = _json(capsys)
    assert out["verified"] is False
    assert "key" in str(out["error"]).lower(), out


def test_keyless_sign_reads_the_token_from_the_environment_and_verify_checks_the_identity(
    pushed: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sigstore = PrivateSigstore()
    root = tmp_path / "trusted_root.json"
    root.write_bytes(sigstore.trusted_root_json())
    config = tmp_path / "signing_config.json"
    config.write_text("{}")
    seen: dict[str, bytes] = {}

    def private_instance(*, signing_config: bytes, trusted_root: bytes) -> object:
        # The fake Fulcio and Rekor live in this process: hand their context over,
        # after checking the command passed the files it was given.
        seen.update(signing_config=signing_config, trusted_root=trusted_root)
        return sigstore.signing_context()

    monkeypatch.setattr(trust, "signing_context_from_config", private_instance)
    monkeypatch.setenv("SIGSTORE_ID_TOKEN", sigstore.identity_token())

    sign = ["sign", pushed, "--signing-config", str(config), "--trusted-root", str(root)]
    assert main([*sign, "--insecure", "--output", "json"]) == 0
    assert _json(capsys)["method"] == "keyless"
    assert seen == {"signing_config": b"{}", "trusted_root": root.read_bytes()}

    verify = ["verify", pushed, "--trusted-root", str(root), "--insecure", "--output", "json"]
    identity = ["--issuer", DEFAULT_ISSUER]
    assert main([*verify, *identity, "--identity", DEFAULT_SUBJECT]) == 0
    assert _json(capsys)["identity"] == DEFAULT_SUBJECT

    code = main([*verify, *identity, "--identity-regex", "author@.*\\.test"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    code = main([*verify, *identity, "--identity-regex", "author"])  # anchored: no partial match
    assert code == EXIT_VERIFICATION_FAILED
    assert _json(capsys)["verified"] is False


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ([], {}, "keyless signing needs an OIDC identity token"),
        (["--legacy"], {"SIGSTORE_ID_TOKEN": "x"}, "--legacy signs with --key only"),
        (
            ["--signing-config", "only-one.json"],
            {"SIGSTORE_ID_TOKEN": "x"},
            "--signing-config and --trusted-root go together",
        ),
    ],
    ids=["no-token", "legacy-without-key", "config-without-root"],
)
def test_sign_refuses_incomplete_keyless_options_and_says_what_is_missing(
    pushed: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    code = main(["sign", pushed, "--insecure", *extra])

    assert code != 0
    assert message in capsys.readouterr().err


def test_a_signing_config_that_is_not_one_is_refused_clearly() -> None:
    with pytest.raises(SigningError, match="signing configuration is not usable"):
        trust.signing_context_from_config(signing_config=b"{}", trusted_root=b"{}")
