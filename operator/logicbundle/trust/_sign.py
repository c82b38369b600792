"""Signing for bundle authors: the bytes cosign would attach, for a manifest digest.

Two methods, both producing what ``cosign verify`` accepts and :class:`TrustVerifier`
verifies:

* a key (PEM, unencrypted or password-protected PKCS#8): a Sigstore v0.3 bundle holding a
  DSSE in-toto statement (``https://sigstore.dev/cosign/sign/v1`` about the digest), the
  shape ``cosign sign --key`` v3 writes, and, for old verifiers, the cosign v2 simple-signing
  payload with its signature annotation;
* keyless: sigstore-python's ``SigningContext`` with an OIDC token passed in, on the
  public-good instance by default (configuration from the sigstore wheel, no TUF refresh) or
  on a private instance from its signing config and trusted root.

Attaching the result to the registry (as a referrer with ``artifact_type``, or the
``sha256-<hex>.sig`` tag for the legacy form) is the OCI client's job; this module returns
the blob, its media type, the artifact type and the annotations to use.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from sigstore import dsse
from sigstore.errors import Error as SigstoreError
from sigstore.models import ClientTrustConfig
from sigstore.oidc import IdentityError, IdentityToken
from sigstore.sign import SigningContext
from sigstore_models.trustroot.v1 import ClientTrustConfig as _ClientTrustConfigMessage
from sigstore_models.trustroot.v1 import SigningConfig as _SigningConfigMessage
from sigstore_models.trustroot.v1 import TrustedRoot as _TrustedRootMessage

from logicbundle.trust._cosign_key import decrypt_cosign_private_key, is_cosign_encrypted_key
from logicbundle.trust._errors import SigningError
from logicbundle.trust._keys import pae
from logicbundle.trust._statement import (
    COSIGN_SIGN_PREDICATE_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    SIMPLE_SIGNING_TYPE,
    parse_digest,
)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
"""Media type of a Sigstore bundle layer, and the artifactType of its referrer manifest."""
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
"""Media type of the cosign v2 simple-signing payload layer."""
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
"""Layer annotation holding the base64 signature of a cosign v2 payload."""

_PUBLIC_GOOD_DIR = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
_CLIENT_TRUST_CONFIG: Final = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"


@dataclass(frozen=True)
class SignatureArtifact:
    """A signature ready to attach: the layer blob and how to describe it in OCI."""

    content: bytes
    media_type: str
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def cosign_statement(*, digest: str, name: str | None = None) -> bytes:
    """The in-toto statement ``cosign sign`` v3 signs for an image digest."""
    parse_digest(digest)
    subject: dict[str, object] = {"digest": {"sha256": digest.removeprefix("sha256:")}}
    if name is not None:
        subject = {"name": name, **subject}
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [subject],
            "predicateType": COSIGN_SIGN_PREDICATE_TYPE,
            "predicate": {},
        },
        separators=(",", ":"),
    ).encode()


def sign_with_key(
    *, digest: str, private_key_pem: bytes, password: bytes | None = None
) -> SignatureArtifact:
    """A key-signed Sigstore bundle (DSSE, public-key hint, no log entry) for ``digest``.

    There is no transparency-log entry (we never reach Rekor), so ``cosign verify --key``
    needs ``--insecure-ignore-tlog=true`` (or ``--private-infrastructure``) for it.
    """
    key = _load_private_key(private_key_pem, password)
    payload = cosign_statement(digest=digest)
    signature = _sign(key, pae(IN_TOTO_PAYLOAD_TYPE, payload))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": _b64(hashlib.sha256(spki).digest())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        },
    }
    return _bundle_artifact(json.dumps(bundle, separators=(",", ":")).encode())


def sign_legacy_with_key(
    *,
    digest: str,
    docker_reference: str,
    private_key_pem: bytes,
    password: bytes | None = None,
) -> SignatureArtifact:
    """A cosign v2 simple-signing payload and its signature annotation, for ``.sig`` tags."""
    parse_digest(digest)
    key = _load_private_key(private_key_pem, password)
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIMPLE_SIGNING_TYPE,
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    return SignatureArtifact(
        content=payload,
        media_type=SIMPLE_SIGNING_MEDIA_TYPE,
        annotations=MappingProxyType({SIGNATURE_ANNOTATION: _b64(_sign(key, payload))}),
    )


def sign_keyless(
    *,
    digest: str,
    identity_token: str,
    signing_context: SigningContext | None = None,
    name: str | None = None,
) -> SignatureArtifact:
    """Sign ``digest`` with a short-lived certificate for ``identity_token`` (an OIDC JWT).

    ``signing_context`` defaults to the Sigstore public-good instance; for a private one
    pass :func:`signing_context_from_config`. The token is never logged or stored.
    """
    statement_bytes = cosign_statement(digest=digest, name=name or "")
    try:
        token = IdentityToken(identity_token)
        context = signing_context or public_good_signing_context()
        with context.signer(token, cache=True) as signer:
            bundle = signer.sign_dsse(dsse.Statement(statement_bytes))
    except IdentityError as exc:
        raise SigningError(
            f"the OIDC identity token cannot be used: {exc}",
            hint="Get a fresh token for audience 'sigstore' from your identity provider.",
        ) from None
    except (SigstoreError, OSError) as exc:
        raise SigningError(
            f"keyless signing failed: {exc}",
            hint="Check that the Fulcio and Rekor URLs of the signing config are reachable.",
        ) from None
    return _bundle_artifact(bundle.to_json().encode())


def public_good_signing_context() -> SigningContext:
    """The Sigstore public-good services, configured from the sigstore wheel (no TUF)."""
    store = resources.files("sigstore._store").joinpath(_PUBLIC_GOOD_DIR)
    return signing_context_from_config(
        signing_config=store.joinpath("signing_config.v0.2.json").read_bytes(),
        trusted_root=store.joinpath("trusted_root.json").read_bytes(),
    )


def signing_context_from_config(*, signing_config: bytes, trusted_root: bytes) -> SigningContext:
    """A private Sigstore instance from its ``signing_config.json`` and ``trusted_root.json``."""
    try:
        config = ClientTrustConfig(
            _ClientTrustConfigMessage(
                media_type=_CLIENT_TRUST_CONFIG,
                trusted_root=_TrustedRootMessage.from_json(trusted_root),
                signing_config=_SigningConfigMessage.from_json(signing_config),
            )
        )
        return SigningContext.from_trust_config(config)
    except (SigstoreError, ValueError) as exc:
        raise SigningError(
            f"the signing configuration is not usable: {exc}",
            hint="Pass the signing_config.v0.2.json and trusted_root.json of one instance.",
        ) from None


_SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def _load_private_key(pem: bytes, password: bytes | None) -> _SigningKey:
    try:
        if is_cosign_encrypted_key(pem):
            der = decrypt_cosign_private_key(pem, password)
            key = serialization.load_der_private_key(der, password=None)
        else:
            key = serialization.load_pem_private_key(pem, password=password)
    except (ValueError, TypeError) as exc:
        raise SigningError(
            f"cannot load the private key: {exc}",
            hint="Pass a PEM PKCS#8 key or a cosign key (and its password if encrypted).",
        ) from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise SigningError(
            f"{type(key).__name__} keys cannot sign cosign signatures",
            hint="Use an ECDSA P-256, Ed25519 or RSA key.",
        )
    return key


def _sign(key: _SigningKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def _bundle_artifact(content: bytes) -> SignatureArtifact:
    return SignatureArtifact(
        content=content,
        media_type=BUNDLE_MEDIA_TYPE,
        artifact_type=BUNDLE_MEDIA_TYPE,
        annotations=MappingProxyType(
            {
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": COSIGN_SIGN_PREDICATE_TYPE,
            }
        ),
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
