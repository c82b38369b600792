"""The private Sigstore fixture is real: the unmodified sigstore Verifier accepts its bundles
and rejects each deliberately broken variant."""

from __future__ import annotations

import pytest
from sigstore import dsse
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity
from sigstore_models.common.v1 import HashAlgorithm

from tests.trust.sigstore_fixture import (
    DEFAULT_ISSUER,
    DEFAULT_SUBJECT,
    IN_TOTO,
    BundleFlaw,
    PrivateSigstore,
    in_toto_statement,
)

POLICY = Identity(identity=DEFAULT_SUBJECT, issuer=DEFAULT_ISSUER)


def test_sigstore_accepts_a_dsse_bundle_from_the_fixture(
    sigstore: PrivateSigstore, digest: str
) -> None:
    verifier = Verifier(trusted_root=sigstore.trusted_root())
    bundle = Bundle.from_json(sigstore.keyless_bundle(digest))
    payload_type, payload = verifier.verify_dsse(bundle, POLICY)
    assert payload_type == IN_TOTO
    assert payload == in_toto_statement(digest)


def test_sigstore_accepts_a_hashedrekord_bundle_from_the_fixture(
    sigstore: PrivateSigstore, digest: str
) -> None:
    verifier = Verifier(trusted_root=sigstore.trusted_root())
    bundle = Bundle.from_json(sigstore.keyless_bundle(digest, kind="hashedrekord"))
    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest[7:]))
    verifier.verify_artifact(hashed, bundle, POLICY)


def test_sigstore_signer_round_trips_through_the_fake_fulcio_and_rekor(
    sigstore: PrivateSigstore, digest: str
) -> None:
    from sigstore.oidc import IdentityToken

    context = sigstore.signing_context()
    with context.signer(IdentityToken(sigstore.identity_token())) as signer:
        bundle = signer.sign_dsse(dsse.Statement(in_toto_statement(digest)))
        blob_bundle = signer.sign_artifact(b"manifest bytes")
    verifier = Verifier(trusted_root=sigstore.trusted_root())
    verifier.verify_dsse(Bundle.from_json(bundle.to_json()), POLICY)
    verifier.verify_artifact(b"manifest bytes", Bundle.from_json(blob_bundle.to_json()), POLICY)


def test_the_trusted_root_loads_with_sigstore_trusted_root(sigstore: PrivateSigstore) -> None:
    root = sigstore.trusted_root()
    assert len(root.get_fulcio_certs()) == 2


@pytest.mark.parametrize("flaw", [f for f in BundleFlaw if f is not BundleFlaw.NONE])
def test_sigstore_rejects_each_broken_variant(
    sigstore: PrivateSigstore, digest: str, flaw: BundleFlaw
) -> None:
    verifier = Verifier(trusted_root=sigstore.trusted_root())
    bundle = Bundle.from_json(sigstore.keyless_bundle(digest, flaw=flaw))
    with pytest.raises(SigstoreError):
        verifier.verify_dsse(bundle, POLICY)
