"""Shared by the registry client's unit tests and the real-registry e2e tests."""

from __future__ import annotations

import json

from logicbundle.oci import OCI_MANIFEST, sha256_digest

BUNDLE_CONFIG = "application/vnd.logicbundle.bundle.config.v1+json"
BUNDLE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BUNDLE_ARTIFACT = "application/vnd.logicbundle.bundle.v1"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def manifest_bytes(
    *,
    config: bytes,
    layers: list[bytes],
    artifact_type: str = BUNDLE_ARTIFACT,
    config_type: str = BUNDLE_CONFIG,
    subject: dict[str, object] | None = None,
) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": config_type, "digest": sha256_digest(config), "size": len(config)},
        "layers": [
            {"mediaType": BUNDLE_LAYER, "digest": sha256_digest(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    if subject is not None:
        document["subject"] = subject
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
