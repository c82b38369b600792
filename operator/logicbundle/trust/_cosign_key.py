"""cosign's own encrypted private-key format, so `logicbundle sign --key cosign.key` just works.

``cosign generate-key-pair`` writes a PEM block ``ENCRYPTED SIGSTORE PRIVATE
KEY`` (``ENCRYPTED COSIGN PRIVATE KEY`` in older releases) whose body is JSON:
a scrypt KDF (N, r, p, salt) and a NaCl secretbox (XSalsa20-Poly1305, 24-byte
nonce) around the DER PKCS#8 private key.  ``hashlib`` has scrypt;
``cryptography`` has no XSalsa20, hence PyNaCl.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from logicbundle.trust._errors import SigningError

PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_MAX_SCRYPT_N = 1 << 20  # refuse absurd work factors from a hostile file


def is_cosign_encrypted_key(pem: bytes) -> bool:
    return any(f"-----BEGIN {t}-----".encode() in pem for t in PEM_TYPES)


def decrypt_cosign_private_key(pem: bytes, password: bytes | None) -> bytes:
    """The DER PKCS#8 private key inside a cosign-encrypted PEM, or SigningError."""
    if password is None:
        raise SigningError(
            "the cosign private key is encrypted and no password was given",
            hint="Set the password in LOGICBUNDLE_KEY_PASSWORD (or COSIGN_PASSWORD).",
        )
    try:
        lines = pem.decode("ascii").strip().splitlines()
        document: dict[str, Any] = json.loads(base64.b64decode("".join(lines[1:-1])))
        kdf, cipher = document["kdf"], document["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise SigningError(
                f"unsupported cosign key encryption {kdf['name']}/{cipher['name']}",
                hint="Re-create the key with a current cosign (scrypt and nacl/secretbox).",
            )
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        if not 1 < n <= _MAX_SCRYPT_N or not 0 < r <= 32 or not 0 < p <= 16:
            raise SigningError(f"the cosign key asks for unreasonable scrypt parameters {params}")
        secret = hashlib.scrypt(
            password,
            salt=base64.b64decode(kdf["salt"]),
            n=n,
            r=r,
            p=p,
            dklen=SecretBox.KEY_SIZE,
            maxmem=256 * r * (n + p + 2),
        )
        return bytes(
            SecretBox(secret).decrypt(
                base64.b64decode(document["ciphertext"]), base64.b64decode(cipher["nonce"])
            )
        )
    except CryptoError:
        raise SigningError(
            "cannot decrypt the cosign private key: wrong password",
            hint="Check LOGICBUNDLE_KEY_PASSWORD (or COSIGN_PASSWORD).",
        ) from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error) as exc:
        raise SigningError(f"the cosign private key is malformed: {exc}") from None
