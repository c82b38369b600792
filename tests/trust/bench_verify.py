"""Benchmark: keyless verify latency, cold and cached (run it; it is not a test).

    .venv/bin/python tests/trust/bench_verify.py

Targets (issue 3): keyless verify <= 5 ms cold, <= 50 us cached. Three figures:
cold on a warm verifier (result cache emptied before each call), cold on a brand-new
TrustVerifier (its sigstore Verifier built too; the trusted root already parsed, as the
operator does once per root), and cached.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(_ROOT / "operator"), str(_ROOT)]

from logicbundle.trust import (  # noqa: E402
    BundleSignature,
    KeylessIdentity,
    TrustPolicy,
    TrustVerifier,
    load_trusted_root,
)
from tests.trust.sigstore_fixture import (  # noqa: E402
    DEFAULT_ISSUER,
    DEFAULT_SUBJECT,
    PrivateSigstore,
)


def main() -> None:
    sigstore = PrivateSigstore()
    root = load_trusted_root(sigstore.trusted_root_json())
    digest = "sha256:" + "ab" * 32
    signatures = [BundleSignature(sigstore.keyless_bundle(digest))]
    policy = TrustPolicy(
        identities=(KeylessIdentity(issuer=DEFAULT_ISSUER, subject=DEFAULT_SUBJECT),)
    )

    verifier = TrustVerifier(trusted_root=root)
    verifier.verify(digest=digest, signatures=signatures, policy=policy)  # warm imports

    cold = []
    for _ in range(200):
        verifier.forget()
        start = time.perf_counter()
        verifier.verify(digest=digest, signatures=signatures, policy=policy)
        cold.append(time.perf_counter() - start)

    fresh = []
    for _ in range(100):
        start = time.perf_counter()
        TrustVerifier(trusted_root=root).verify(digest=digest, signatures=signatures, policy=policy)
        fresh.append(time.perf_counter() - start)

    batch = 2000
    cached = []
    for _ in range(25):
        start = time.perf_counter()
        for _ in range(batch):
            verifier.verify(digest=digest, signatures=signatures, policy=policy)
        cached.append((time.perf_counter() - start) / batch)

    for label, samples, scale, unit in (
        ("cold (cache emptied)", cold, 1e3, "ms"),
        ("cold (new TrustVerifier)", fresh, 1e3, "ms"),
        ("cached", cached, 1e6, "us"),
    ):
        print(f"keyless verify, {label:<26} median {statistics.median(samples) * scale:.2f} {unit}")
    print("targets: <= 5 ms cold, <= 50 us cached")


if __name__ == "__main__":
    main()
