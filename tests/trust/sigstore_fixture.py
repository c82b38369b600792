"""A private Sigstore instance played in-process, for tests that cannot reach Fulcio or Rekor.

Build machines have no network, yet keyless verification is the main trust mode of the
project. This module plays every Sigstore service a bundle depends on, with its own keys:

* a CA (root and intermediate, ECDSA P-384) issuing Fulcio-shaped leaf certificates: the
  SAN (email or URI), the OIDC issuer extensions (1.3.6.1.4.1.57264.1.1 raw and .1.8 as a
  DER UTF8String), KeyUsage digitalSignature, ExtendedKeyUsage codeSigning, and an embedded
  SCT. The leaf is signed in two passes the way a CT-logging CA does: a precertificate with
  the critical poison extension is signed first, the CT log signs its TBS (poison removed)
  together with the hash of the issuer's key, and the final certificate carries the SCT list;
* a CT log (ECDSA P-256) that signs those SCTs;
* a transparency log (ECDSA P-256) that records ``hashedrekord`` and ``dsse`` entries with a
  signed entry timestamp, an RFC 6962 inclusion proof in a small tree, and a signed checkpoint
  (its signature line names the log without spaces and starts with a 4-byte key hint equal to
  the first four bytes of the log id, which is what sigstore-python checks);
* the matching ``trusted_root.json``.

The proof that this fixture is real is that the *unmodified* ``sigstore.verify.Verifier``
accepts its bundles (see ``test_sigstore_fixture.py``). Every deliberately broken variant
(``BundleFlaw``) exists to make one rejection test fail for exactly one reason.

It can also stand behind sigstore-python's own ``SigningContext``: ``signing_context()``
returns one wired to fake Fulcio and Rekor clients, for sign -> verify round trips.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sigstore._internal.fulcio.client import FulcioCertificateSigningResponse
from sigstore._internal.rekor import EntryRequestBody
from sigstore._internal.rekor.client import RekorClient
from sigstore.models import TransparencyLogEntry, TrustedRoot
from sigstore.sign import SigningContext
from sigstore_models.rekor.v1 import TransparencyLogEntry as _InnerEntry

OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")

IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"

DEFAULT_SUBJECT = "author@logicbundle.test"
DEFAULT_ISSUER = "https://issuer.logicbundle.test"
LOG_NAME = "rekor.logicbundle.test"


class BundleFlaw(enum.Enum):
    """One deliberate defect per rejection test; NONE gives a valid bundle."""

    NONE = "none"
    TAMPERED_CHECKPOINT = "tampered-checkpoint"
    TAMPERED_LOG_ENTRY_BODY = "tampered-log-entry-body"
    MISSING_SCT = "missing-sct"
    CERT_OUTSIDE_VALIDITY = "cert-outside-validity"
    UNTRUSTED_CA = "untrusted-ca"
    TAMPERED_PAYLOAD = "tampered-payload"


def der_utf8(text: str) -> bytes:
    """DER encoding of a UTF8String (only the short and two-byte long forms are needed)."""
    raw = text.encode()
    if len(raw) < 0x80:
        return bytes([0x0C, len(raw)]) + raw
    if len(raw) < 0x100:
        return bytes([0x0C, 0x81, len(raw)]) + raw
    return bytes([0x0C, 0x82]) + struct.pack(">H", len(raw)) + raw


def _der_octet_string(raw: bytes) -> bytes:
    if len(raw) < 0x80:
        return bytes([0x04, len(raw)]) + raw
    if len(raw) < 0x100:
        return bytes([0x04, 0x81, len(raw)]) + raw
    return bytes([0x04, 0x82]) + struct.pack(">H", len(raw)) + raw


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def in_toto_statement(
    digest: str, *, predicate_type: str = COSIGN_SIGN, name: str = "registry.test/bundle"
) -> bytes:
    """The statement ``cosign sign`` (v3) writes for an image digest."""
    algorithm, hex_digest = digest.split(":", 1)
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": name, "digest": {algorithm: hex_digest}}],
            "predicateType": predicate_type,
            "predicate": {},
        }
    ).encode()


def _claim_another_artifact(body: bytes) -> bytes:
    """A log entry body edited to record another artifact's hash (a spliced entry)."""
    document = json.loads(body)
    spec = document["spec"]
    recorded = spec["payloadHash"] if "payloadHash" in spec else spec["data"]["hash"]
    recorded["value"] = hashlib.sha256(b"another artifact").hexdigest()
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# --- RFC 6962 Merkle tree -------------------------------------------------------------------


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _tree_hash(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return _leaf_hash(leaves[0])
    k = _split(len(leaves))
    return _node_hash(_tree_hash(leaves[:k]), _tree_hash(leaves[k:]))


def _audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*_audit_path(index, leaves[:k]), _tree_hash(leaves[k:])]
    return [*_audit_path(index - k, leaves[k:]), _tree_hash(leaves[:k])]


# --- the services ---------------------------------------------------------------------------


@dataclass
class _CA:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    @classmethod
    def create(cls, name: str, now: datetime) -> _CA:
        root_key = ec.generate_private_key(ec.SECP384R1())
        root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root"),
            ]
        )
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
            )
            .sign(root_key, hashes.SHA384())
        )
        key = ec.generate_private_key(ec.SECP384R1())
        intermediate = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"{name} intermediate"),
                    ]
                )
            )
            .issuer_name(root_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                critical=False,
            )
            .sign(root_key, hashes.SHA384())
        )
        return cls(root_key=root_key, root=root, key=key, intermediate=intermediate)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class PrivateSigstore:
    """A Fulcio-like CA, a CT log and a Rekor-like log, with their trusted root."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    ca: _CA = field(init=False)
    rogue_ca: _CA = field(init=False)
    ct_key: ec.EllipticCurvePrivateKey = field(init=False)
    rekor_key: ec.EllipticCurvePrivateKey = field(init=False)
    _log_index: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.ca = _CA.create("logicbundle test sigstore", self.now)
        # A CA nobody trusts: same shape, absent from the trusted root.
        self.rogue_ca = _CA.create("rogue sigstore", self.now)
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())

    # --- identifiers ---

    @property
    def rekor_log_id(self) -> bytes:
        return hashlib.sha256(_spki(self.rekor_key.public_key())).digest()

    @property
    def ct_log_id(self) -> bytes:
        return hashlib.sha256(_spki(self.ct_key.public_key())).digest()

    # --- trusted root ---

    def trusted_root_json(self) -> bytes:
        start = _rfc3339(self.now - timedelta(days=30))

        def log(url: str, key: ec.EllipticCurvePrivateKey, log_id: bytes) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(log_id)},
            }

        document = {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(f"https://{LOG_NAME}", self.rekor_key, self.rekor_log_id)],
            "certificateAuthorities": [
                {
                    "subject": {
                        "organization": "logicbundle test sigstore",
                        "commonName": "logicbundle test sigstore",
                    },
                    "uri": "https://fulcio.logicbundle.test",
                    "certChain": {
                        "certificates": [
                            {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                            for c in (self.ca.intermediate, self.ca.root)
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log("https://ctfe.logicbundle.test", self.ct_key, self.ct_log_id)],
            "timestampAuthorities": [],
        }
        return json.dumps(document, indent=2).encode()

    def trusted_root(self) -> TrustedRoot:
        from sigstore_models.trustroot.v1 import TrustedRoot as _InnerRoot

        return TrustedRoot(_InnerRoot.from_json(self.trusted_root_json()))

    # --- Fulcio ---

    def issue_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        subject: str = DEFAULT_SUBJECT,
        issuer: str = DEFAULT_ISSUER,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        embed_sct: bool = True,
        trusted: bool = True,
    ) -> x509.Certificate:
        """A Fulcio-shaped leaf for ``public_key``, SCT embedded unless told otherwise."""
        ca = self.ca if trusted else self.rogue_ca
        not_before = not_before or self.now - timedelta(minutes=1)
        not_after = not_after or self.now + timedelta(minutes=10)
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(subject)
            if "://" in subject
            else x509.RFC822Name(subject)
        )
        serial = x509.random_serial_number()

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(ca.intermediate.subject)
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(_leaf_key_usage(), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                    critical=False,
                )
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(
                    x509.UnrecognizedExtension(OIDC_ISSUER_V1, issuer.encode()), critical=False
                )
                .add_extension(
                    x509.UnrecognizedExtension(OIDC_ISSUER_V2, der_utf8(issuer)), critical=False
                )
            )

        if not embed_sct:
            return builder().sign(ca.key, hashes.SHA384())

        # Pass one: the precertificate, poisoned so that no one can use it as a certificate.
        # The log signs its TBS with the poison removed; ECDSA signatures are not part of the
        # TBS, so that is the TBS of the same builder without the poison extension.
        precert = builder().add_extension(x509.PrecertPoison(), critical=True)
        precert.sign(ca.key, hashes.SHA384()).extensions.get_extension_for_class(x509.PrecertPoison)
        precert_tbs = builder().sign(ca.key, hashes.SHA384()).tbs_certificate_bytes
        sct = self._sign_sct(precert_tbs, issuer_key=ca.key.public_key())
        sct_list = struct.pack(">H", len(sct)) + sct
        sct_ext = _der_octet_string(struct.pack(">H", len(sct_list)) + sct_list)
        # Pass two: the same TBS with the SCT list where the poison was.
        final = builder().add_extension(
            x509.UnrecognizedExtension(SCT_LIST_OID, sct_ext), critical=False
        )
        cert = final.sign(ca.key, hashes.SHA384())
        assert cert.tbs_precertificate_bytes == precert_tbs, "SCT would not verify"
        return cert

    def _sign_sct(self, tbs: bytes, *, issuer_key: ec.EllipticCurvePublicKey) -> bytes:
        # Whole seconds: verifiers rebuild the millisecond timestamp from a datetime.
        timestamp_ms = int(self.now.timestamp()) * 1000
        issuer_key_hash = hashlib.sha256(_spki(issuer_key)).digest()
        signed = (
            struct.pack(">BBQH", 0, 0, timestamp_ms, 1)  # v1, certificate_timestamp, precert
            + issuer_key_hash
            + struct.pack(">I", len(tbs))[1:]
            + tbs
            + struct.pack(">H", 0)  # no extensions
        )
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return (
            struct.pack(">B", 0)
            + self.ct_log_id
            + struct.pack(">QH", timestamp_ms, 0)
            + struct.pack(">BBH", 4, 3, len(signature))  # sha256, ecdsa
            + signature
        )

    # --- Rekor ---

    def log_entry(
        self,
        body: bytes,
        *,
        kind: str,
        tamper_checkpoint: bool = False,
        tamper_body: bool = False,
    ) -> dict[str, Any]:
        """A v1 log entry for ``body`` in the JSON shape of a bundle's ``tlogEntries``.

        With ``tamper_body`` the entry's ``canonicalizedBody`` claims another artifact while
        its inclusion proof, checkpoint and signed entry timestamp stay those of ``body``.
        """
        self._log_index += 1
        integrated_time = int(self.now.timestamp())
        # A small tree whose shape exercises both the inner and the border part of a proof.
        leaves = [f"other entry {i}".encode() for i in range(6)]
        index = 5
        leaves.insert(index, body)
        root_hash = _tree_hash(leaves)
        proof = _audit_path(index, leaves)
        log_id_hex = self.rekor_log_id.hex()
        set_payload = json.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated_time,
                "logID": log_id_hex,
                "logIndex": self._log_index,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        signed_entry_timestamp = self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256()))
        return {
            "logIndex": str(self._log_index),
            "logId": {"keyId": _b64(self.rekor_log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(signed_entry_timestamp)},
            "inclusionProof": {
                "logIndex": str(index),
                "rootHash": _b64(root_hash),
                "treeSize": str(len(leaves)),
                "hashes": [_b64(h) for h in proof],
                "checkpoint": {
                    "envelope": self._checkpoint(root_hash, len(leaves), tamper=tamper_checkpoint)
                },
            },
            "canonicalizedBody": _b64(_claim_another_artifact(body) if tamper_body else body),
        }

    def _checkpoint(self, root_hash: bytes, size: int, *, tamper: bool) -> str:
        note = f"{LOG_NAME} - 4242\n{size}\n{_b64(root_hash)}\n"
        signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        if tamper:
            # The signed note claims a bigger tree than the one that was signed.
            note = f"{LOG_NAME} - 4242\n{size + 1}\n{_b64(root_hash)}\n"
        return f"{note}\n\u2014 {LOG_NAME} {_b64(self.rekor_log_id[:4] + signature)}\n"

    def log_request(
        self,
        request: dict[str, Any],
        *,
        tamper_checkpoint: bool = False,
        tamper_body: bool = False,
    ) -> dict[str, Any]:
        """Integrate a Rekor v1 proposed entry, the way Rekor canonicalizes it."""
        if request["kind"] == "hashedrekord":
            body = request
        else:
            proposed = request["spec"]["proposedContent"]
            envelope = json.loads(proposed["envelope"])
            body = {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(proposed["envelope"].encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest(),
                    },
                    "signatures": [
                        {"signature": s["sig"], "verifier": proposed["verifiers"][0]}
                        for s in envelope["signatures"]
                    ],
                },
            }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return self.log_entry(
            raw, kind=body["kind"], tamper_checkpoint=tamper_checkpoint, tamper_body=tamper_body
        )

    # --- whole bundles ---

    def keyless_bundle(
        self,
        digest: str,
        *,
        subject: str = DEFAULT_SUBJECT,
        issuer: str = DEFAULT_ISSUER,
        kind: str = "dsse",
        statement: bytes | None = None,
        payload_type: str = IN_TOTO,
        flaw: BundleFlaw = BundleFlaw.NONE,
    ) -> bytes:
        """A v0.3 bundle as ``cosign sign`` (dsse) or ``cosign sign-blob`` (hashedrekord) makes."""
        key = ec.generate_private_key(ec.SECP256R1())
        validity: dict[str, datetime] = {}
        if flaw is BundleFlaw.CERT_OUTSIDE_VALIDITY:
            # Expired an hour before the log saw the signature.
            validity = {
                "not_before": self.now - timedelta(hours=2),
                "not_after": self.now - timedelta(hours=1),
            }
        cert = self.issue_certificate(
            key.public_key(),
            subject=subject,
            issuer=issuer,
            embed_sct=flaw is not BundleFlaw.MISSING_SCT,
            trusted=flaw is not BundleFlaw.UNTRUSTED_CA,
            **validity,
        )
        cert_pem_b64 = _b64(cert.public_bytes(serialization.Encoding.PEM))
        tamper = flaw is BundleFlaw.TAMPERED_CHECKPOINT
        tamper_body = flaw is BundleFlaw.TAMPERED_LOG_ENTRY_BODY
        bundle: dict[str, Any] = {"mediaType": BUNDLE_V03}
        if kind == "dsse":
            payload = statement if statement is not None else in_toto_statement(digest)
            signature = key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
            if flaw is BundleFlaw.TAMPERED_PAYLOAD:
                payload = payload.replace(b"registry.test/bundle", b"registry.test/evil!!")
            envelope = {
                "payload": _b64(payload),
                "payloadType": payload_type,
                "signatures": [{"sig": _b64(signature), "keyid": ""}],
            }
            request = {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "proposedContent": {
                        "envelope": json.dumps(envelope),
                        "verifiers": [cert_pem_b64],
                    }
                },
            }
            entry = self.log_request(request, tamper_checkpoint=tamper, tamper_body=tamper_body)
            bundle["dsseEnvelope"] = envelope
        elif kind == "hashedrekord":
            digest_bytes = bytes.fromhex(digest.split(":", 1)[1])
            signature = key.sign(digest_bytes, ec.ECDSA(_prehashed_sha256()))
            request = {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": digest_bytes.hex()}},
                    "signature": {
                        "content": _b64(signature),
                        "publicKey": {"content": cert_pem_b64},
                    },
                },
            }
            entry = self.log_request(request, tamper_checkpoint=tamper, tamper_body=tamper_body)
            bundle["messageSignature"] = {
                "messageDigest": {"algorithm": "SHA2_256", "digest": _b64(digest_bytes)},
                "signature": _b64(signature),
            }
        else:
            raise ValueError(f"unknown entry kind {kind!r}")
        bundle["verificationMaterial"] = {
            "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
            "tlogEntries": [entry],
        }
        return json.dumps(bundle, indent=2).encode()

    # --- sigstore-python's own signing flow, against fake services ---

    def identity_token(
        self, *, subject: str = DEFAULT_SUBJECT, issuer: str = DEFAULT_ISSUER
    ) -> str:
        """An OIDC token shaped enough for sigstore-python (it never checks the signature)."""
        now = int(datetime.now(UTC).timestamp())
        claims = {"iss": issuer, "sub": subject, "aud": "sigstore", "iat": now, "exp": now + 600}
        return jwt.encode(claims, "not-a-secret-only-a-test-fixture-key!", algorithm="HS256")

    def signing_context(self) -> SigningContext:
        return SigningContext(
            fulcio=_FakeFulcio(self),  # type: ignore[arg-type]
            rekor=_FakeRekor(self),
            trusted_root=self.trusted_root(),
        )


def _prehashed_sha256() -> Any:
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    return Prehashed(hashes.SHA256())


class _FakeSigningCertEndpoint:
    def __init__(self, sigstore: PrivateSigstore) -> None:
        self._sigstore = sigstore

    def post(
        self, request: x509.CertificateSigningRequest, identity: Any
    ) -> FulcioCertificateSigningResponse:
        claims = jwt.decode(str(identity), options={"verify_signature": False})
        public_key = request.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        cert = self._sigstore.issue_certificate(
            public_key, subject=claims["sub"], issuer=claims["iss"]
        )
        return FulcioCertificateSigningResponse(
            cert, [self._sigstore.ca.intermediate, self._sigstore.ca.root]
        )


class _FakeFulcio:
    """Stands in for ``FulcioClient``: only ``signing_cert.post`` is used by the Signer."""

    def __init__(self, sigstore: PrivateSigstore) -> None:
        self.signing_cert = _FakeSigningCertEndpoint(sigstore)


class _FakeRekor(RekorClient):
    """A Rekor v1 client whose log is the fixture's; request building is sigstore's own."""

    def __init__(self, sigstore: PrivateSigstore) -> None:
        super().__init__(f"https://{LOG_NAME}")
        self._sigstore = sigstore

    def create_entry(self, request: EntryRequestBody) -> TransparencyLogEntry:
        entry = self._sigstore.log_request(dict(request))
        return TransparencyLogEntry(_InnerEntry.from_dict(entry))
