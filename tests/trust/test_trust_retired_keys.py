"""A key the trusted root retired no longer verifies what was signed after its retirement.

Issue 11, defect 5: sigstore-python accepts a Fulcio CA, a Rekor key or a CT log key whose
``validFor`` ended before the signature was made. Each test signs at a time T an hour ago
(so that every window below has started by now, which sigstore does check) and moves one
window of the trusted root around T.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from logicbundle.trust import (
    BundleSignature,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    load_trusted_root,
)
from tests.trust.sigstore_fixture import PrivateSigstore

T = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)

Window = tuple[datetime, datetime | None]

# Where each part's validFor lives in trusted_root.json.
PARTS = {
    "ca": ("certificateAuthorities", lambda entry: entry),
    "tlog": ("tlogs", lambda entry: entry["publicKey"]),
    "ctlog": ("ctlogs", lambda entry: entry["publicKey"]),
}


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _valid_for(window: Window) -> dict[str, str]:
    start, end = window
    return {"start": _rfc3339(start)} | ({"end": _rfc3339(end)} if end else {})


def _root(sigstore: PrivateSigstore, **windows: Window) -> dict[str, Any]:
    """The fixture's trusted root with the given windows on its (single) CA, log, CT log."""
    document: dict[str, Any] = json.loads(sigstore.trusted_root_json())
    for part, window in windows.items():
        field, holder = PARTS[part]
        holder(document[field][0])["validFor"] = _valid_for(window)
    return document


def _verifier(document: dict[str, Any]) -> TrustVerifier:
    return TrustVerifier(trusted_root=load_trusted_root(json.dumps(document)))


def _verify(verifier: TrustVerifier, digest: str, bundle: bytes, policy: TrustPolicy) -> str:
    return verifier.verify(
        digest=digest, signatures=[BundleSignature(bundle)], policy=policy
    ).identity


def _reject(verifier: TrustVerifier, digest: str, bundle: bytes, policy: TrustPolicy) -> str:
    with pytest.raises(VerificationError) as caught:
        verifier.verify(digest=digest, signatures=[BundleSignature(bundle)], policy=policy)
    assert caught.value.reason == "VerificationFailed"
    assert caught.value.retryable is False
    return str(caught.value)


@pytest.fixture(scope="module")
def signed_at_t() -> PrivateSigstore:
    """A private Sigstore whose CA, log and CT log all sign at T (integrated time = SCT time)."""
    return PrivateSigstore(now=T)


@pytest.fixture(scope="module", params=["dsse", "hashedrekord"])
def bundle_signed_at_t(
    request: pytest.FixtureRequest, signed_at_t: PrivateSigstore, digest: str
) -> bytes:
    """``cosign sign`` (dsse) and ``cosign sign-blob`` (hashedrekord) shapes."""
    return signed_at_t.keyless_bundle(digest, kind=request.param)


# --- windows that cover T ---


def test_a_signature_verifies_when_every_window_covers_its_time(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    around = (T - DAY, T + DAY)
    verifier = _verifier(_root(signed_at_t, ca=around, tlog=around, ctlog=around))
    assert _verify(verifier, digest, bundle_signed_at_t, author_policy)


def test_a_window_is_closed_so_one_that_starts_and_ends_at_t_still_covers_it(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    exactly = (T, T)
    verifier = _verifier(_root(signed_at_t, ca=exactly, tlog=exactly, ctlog=exactly))
    assert _verify(verifier, digest, bundle_signed_at_t, author_policy)


# --- a window that ended before T ---


def test_a_certificate_authority_retired_before_the_signing_time_is_refused(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    verifier = _verifier(_root(signed_at_t, ca=(T - DAY, T - SECOND)))
    message = _reject(verifier, digest, bundle_signed_at_t, author_policy)
    assert (
        "the certificate authority that issued the signing certificate was retired at "
        f"{_rfc3339(T - SECOND)}, before the signing time {_rfc3339(T)} "
        f"(validFor {_rfc3339(T - DAY)} to {_rfc3339(T - SECOND)})"
    ) in message
    assert "transparency log key" not in message
    assert "CT log key" not in message
    assert "trustedRootRef" in message  # the hint says where the windows come from


def test_a_transparency_log_key_retired_before_the_integrated_time_is_refused(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    verifier = _verifier(_root(signed_at_t, tlog=(T - DAY, T - SECOND)))
    message = _reject(verifier, digest, bundle_signed_at_t, author_policy)
    assert (
        "the transparency log key that recorded the signature was retired at "
        f"{_rfc3339(T - SECOND)}, before the integrated time {_rfc3339(T)}"
    ) in message
    assert "certificate authority" not in message


def test_a_ct_log_key_retired_before_the_sct_time_is_refused(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    verifier = _verifier(_root(signed_at_t, ctlog=(T - DAY, T - SECOND)))
    message = _reject(verifier, digest, bundle_signed_at_t, author_policy)
    assert (
        "the CT log key that signed the certificate's SCT was retired at "
        f"{_rfc3339(T - SECOND)}, before the SCT time {_rfc3339(T)}"
    ) in message
    assert "certificate authority" not in message


def test_every_retired_key_is_named_when_several_are(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    ended = (T - DAY, T - SECOND)
    verifier = _verifier(_root(signed_at_t, ca=ended, tlog=ended, ctlog=ended))
    message = _reject(verifier, digest, bundle_signed_at_t, author_policy)
    for role in (
        "the certificate authority that issued the signing certificate was retired",
        "the transparency log key that recorded the signature was retired",
        "the CT log key that signed the certificate's SCT was retired",
    ):
        assert role in message


# --- a window that starts after T ---


@pytest.mark.parametrize(
    ("part", "role", "moment"),
    [
        ("ca", "the certificate authority that issued the signing certificate", "signing time"),
        ("tlog", "the transparency log key that recorded the signature", "integrated time"),
        ("ctlog", "the CT log key that signed the certificate's SCT", "SCT time"),
    ],
)
def test_a_key_whose_window_starts_after_the_signing_time_is_refused(
    signed_at_t: PrivateSigstore,
    bundle_signed_at_t: bytes,
    digest: str,
    author_policy: TrustPolicy,
    part: str,
    role: str,
    moment: str,
) -> None:
    # Started half an hour ago: sigstore, which compares a start only with now, uses it.
    later = (T + timedelta(minutes=30), None)
    verifier = _verifier(_root(signed_at_t, **{part: later}))
    message = _reject(verifier, digest, bundle_signed_at_t, author_policy)
    assert (
        f"{role} is valid only from {_rfc3339(later[0])}, after the {moment} {_rfc3339(T)} "
        f"(validFor {_rfc3339(later[0])} onwards)"
    ) in message


# --- the key actually used, not any key of the same kind ---


def test_a_current_certificate_authority_beside_the_retired_one_does_not_save_its_signature(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    """A rotation: the CA that issued the certificate is retired, its successor is current."""
    document = _root(signed_at_t, ca=(T - DAY, T - SECOND))
    successor = json.loads(json.dumps(document["certificateAuthorities"][0]))
    successor["certChain"]["certificates"] = [
        {"rawBytes": _der(c)}
        for c in (signed_at_t.rogue_ca.intermediate, signed_at_t.rogue_ca.root)
    ]
    successor["validFor"] = _valid_for((T - SECOND, None))
    document["certificateAuthorities"].append(successor)
    message = _reject(_verifier(document), digest, bundle_signed_at_t, author_policy)
    assert "the certificate authority that issued the signing certificate was retired" in message


def test_a_key_listed_again_with_a_current_window_verifies(
    signed_at_t: PrivateSigstore, bundle_signed_at_t: bytes, digest: str, author_policy: TrustPolicy
) -> None:
    """The same CT key in two entries, one window ended and one covering T: T is covered."""
    document = _root(signed_at_t, ctlog=(T - DAY, T - SECOND))
    again = json.loads(json.dumps(document["ctlogs"][0]))
    again["publicKey"]["validFor"] = _valid_for((T - SECOND, None))
    document["ctlogs"].append(again)
    assert _verify(_verifier(document), digest, bundle_signed_at_t, author_policy)


@dataclass
class _LogNamingNoKey(PrivateSigstore):
    """Its log entries and checkpoints name a key id that no key of the root has."""

    @property
    def rekor_log_id(self) -> bytes:
        return hashlib.sha256(b"a key id that matches no key").digest()


def test_a_log_entry_whose_key_hint_names_no_key_is_held_to_the_window_of_the_key_that_signed(
    digest: str, author_policy: TrustPolicy
) -> None:
    """sigstore tries every log key when the entry's key id matches none: a stolen, retired
    key must not get in through that door while a current log key stands beside it."""
    sigstore = _LogNamingNoKey(now=T)
    bundle = sigstore.keyless_bundle(digest)
    document = _root(sigstore, tlog=(T - DAY, T - SECOND))
    current = json.loads(json.dumps(document["tlogs"][0]))
    current["publicKey"]["rawBytes"] = _spki(ec.generate_private_key(ec.SECP256R1()))
    current["publicKey"]["validFor"] = _valid_for((T - DAY, None))
    document["tlogs"].append(current)
    message = _reject(_verifier(document), digest, bundle, author_policy)
    assert "the transparency log key that recorded the signature was retired" in message


# --- other failures keep their own reason ---


def test_a_bundle_that_fails_for_another_reason_is_not_blamed_on_the_windows(
    signed_at_t: PrivateSigstore, digest: str, other_digest: str, author_policy: TrustPolicy
) -> None:
    verifier = _verifier(_root(signed_at_t, ca=(T - DAY, T - SECOND)))
    message = _reject(verifier, digest, signed_at_t.keyless_bundle(other_digest), author_policy)
    assert f"the signature is for {other_digest}, not for {digest}" in message
    assert "retired" not in message


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def _spki(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(raw).decode()


def test_an_integrated_time_beyond_any_calendar_is_a_rejection_not_a_foreign_exception(
    signed_at_t: PrivateSigstore, digest: str, author_policy: TrustPolicy
) -> None:
    """sigstore turns it into a datetime first and raises OverflowError, outside its errors."""
    document = json.loads(signed_at_t.keyless_bundle(digest))
    document["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = str(2**63)
    verifier = _verifier(_root(signed_at_t))
    message = _reject(verifier, digest, json.dumps(document).encode(), author_policy)
    assert f"the transparency log entry's integrated time {2**63} is not a time" in message
