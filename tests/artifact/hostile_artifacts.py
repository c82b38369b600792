"""Hostile bundles as a registry serves them: raw config and layer bytes, pushed as they are.

``push_directory`` only pushes what the packer accepts; an attacker pushes
anything.  :func:`push_raw` puts a config blob and a layer on a registry
under a well-formed OCI manifest, so the operator's source step and the
agent's registry fallback can be shown the same hostile bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from logicbundle.bundle import CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, interface_hash
from logicbundle.bundle._manifest import Interface
from logicbundle.oci import OCI_MANIFEST, Reference, RegistryClient
from tests.oci.helpers import manifest_bytes

INTERFACE = Interface.model_validate({"jsonSchema": {"type": "object"}})


def config_for(files: dict[str, bytes], **overrides: Any) -> dict[str, Any]:
    """A bundle manifest for ``files`` as a JSON document, written without any check."""
    document: dict[str, Any] = {
        "name": "hostile",
        "version": "1.0.0",
        "interface": INTERFACE.model_dump(mode="json", by_alias=True, exclude_none=True),
        "interfaceHash": interface_hash(INTERFACE),
        "files": [
            {
                "path": path,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "mode": 0o644,
            }
            for path, data in sorted(files.items())
        ],
    }
    document.update(overrides)
    return document


def config_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def push_raw(client: RegistryClient, target: Reference, *, config: bytes, layer: bytes) -> str:
    """Push ``config`` and ``layer`` as they are under ``target``; return the manifest digest."""
    client.push_blob(target, config, media_type=CONFIG_MEDIA_TYPE)
    client.push_blob(target, layer, media_type=LAYER_MEDIA_TYPE)
    data = manifest_bytes(config=config, layers=[layer])
    return client.push_manifest(target, data, media_type=OCI_MANIFEST).digest
