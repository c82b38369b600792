"""cosign's encrypted private keys sign like any other key; bad ones fail with a clear reason."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.secret import SecretBox

from logicbundle.trust import (
    BundleSignature,
    CosignPublicKey,
    SigningError,
    TrustPolicy,
    TrustVerifier,
    sign_with_key,
)

DIGEST = "sha256:" + "ab" * 32


def _cosign_key(password: bytes, *, n: int = 1 << 10) -> tuple[bytes, bytes]:
    """A key in cosign's 'ENCRYPTED SIGSTORE PRIVATE KEY' format, and its public PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(password, salt=salt, n=n, r=8, p=1, dklen=32)
    box = SecretBox(secret).encrypt(der, nonce)
    body = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(box.ciphertext).decode(),
    }
    encoded = base64.encodebytes(json.dumps(body).encode()).decode()
    kind = "ENCRYPTED SIGSTORE PRIVATE KEY"
    pem = f"-----BEGIN {kind}-----\n{encoded}-----END {kind}-----\n"
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.encode(), public


def test_a_cosign_encrypted_key_signs_and_the_signature_verifies() -> None:
    private, public = _cosign_key(b"hunter2")
    artifact = sign_with_key(digest=DIGEST, private_key_pem=private, password=b"hunter2")
    verified = TrustVerifier().verify(
        digest=DIGEST,
        signatures=[BundleSignature(artifact.content)],
        policy=TrustPolicy(keys=(CosignPublicKey(public),)),
    )
    assert verified.digest == DIGEST


def test_a_cosign_key_with_the_wrong_password_is_refused() -> None:
    private, _ = _cosign_key(b"right")
    with pytest.raises(SigningError, match="wrong password"):
        sign_with_key(digest=DIGEST, private_key_pem=private, password=b"wrong")


def test_a_cosign_key_without_a_password_says_where_to_put_it() -> None:
    private, _ = _cosign_key(b"right")
    with pytest.raises(SigningError, match="no password") as exc:
        sign_with_key(digest=DIGEST, private_key_pem=private, password=None)
    assert "LOGICBUNDLE_KEY_PASSWORD" in exc.value.diagnostics()


def test_a_cosign_key_asking_for_an_absurd_scrypt_work_factor_is_refused_unrun() -> None:
    private, _ = _cosign_key(b"pw")
    lines = private.decode().splitlines()
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    body["kdf"]["params"]["N"] = 1 << 30
    encoded = base64.encodebytes(json.dumps(body).encode()).decode()
    hostile = f"{lines[0]}\n{encoded}{lines[-1]}\n".encode()
    with pytest.raises(SigningError, match="unreasonable scrypt"):
        sign_with_key(digest=DIGEST, private_key_pem=hostile, password=b"pw")


def test_a_truncated_cosign_key_is_reported_as_malformed() -> None:
    private, _ = _cosign_key(b"pw")
    lines = private.decode().splitlines()
    broken = f"{lines[0]}\nnot-base64-json\n{lines[-1]}\n".encode()
    with pytest.raises(SigningError, match="malformed"):
        sign_with_key(digest=DIGEST, private_key_pem=broken, password=b"pw")
