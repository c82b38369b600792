"""Logic bundles as OCI artifacts: push a directory, fetch and unpack by digest, OCI layouts.

This joins the bundle format (:mod:`logicbundle.bundle`) and the registry
client (:mod:`logicbundle.oci`).  The artifact is an OCI image manifest with
``artifactType`` :data:`~logicbundle.bundle.ARTIFACT_TYPE`, the bundle
manifest as its config blob, and one tar+gzip layer.  Nothing here verifies
signatures (that is :mod:`logicbundle.trust`); everything here checks
digests.  No kopf and no Kubernetes client: the in-pod agent uses the pull
side.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from logicbundle.bundle import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DEFAULT_LIMITS,
    LAYER_MEDIA_TYPE,
    BundleManifest,
    Interface,
    PackResult,
    UnpackedBundle,
    UnpackLimits,
    layer_digest,
    pack_directory_to,
    parse_manifest,
    unpack_bundle,
)
from logicbundle.errors import LogicBundleError
from logicbundle.oci import (
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Manifest,
    Reference,
    RegistryClient,
    sha256_digest,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "NotABundleError",
    "PushedBundle",
    "RemoteBundle",
    "fetch_bundle",
    "oci_manifest",
    "pull_bundle",
    "push_directory",
    "push_layout",
    "read_layout",
    "write_layout",
]

MAX_CONFIG_BYTES = 1 << 20
"""The bundle manifest (config blob) is small; a larger one is refused unread."""

_TITLE = "org.opencontainers.image.title"
_VERSION = "org.opencontainers.image.version"
_REF_NAME = "org.opencontainers.image.ref.name"


class NotABundleError(LogicBundleError):
    """The artifact is not a logic bundle (wrong artifact type, config or layers)."""

    reason = "NotABundle"


def oci_manifest(result: PackResult) -> bytes:
    """The OCI image manifest for a packed bundle (canonical JSON)."""
    config = result.config
    manifest = Manifest.model_validate(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": LAYER_MEDIA_TYPE,
                    "digest": result.layer_digest,
                    "size": result.layer_size,
                }
            ],
            "annotations": {_TITLE: result.manifest.name, _VERSION: result.manifest.version},
        }
    )
    return manifest.to_json_bytes()


@dataclass(frozen=True)
class PushedBundle:
    """What :func:`push_directory` pushed: the manifest digest is what gets signed."""

    reference: Reference
    digest: str
    manifest: BundleManifest
    size: int


def push_directory(
    client: RegistryClient,
    target: Reference,
    source: Path,
    *,
    name: str,
    version: str,
    interface: Interface | Mapping[str, Any],
    entrypoint: str | None = None,
    labels: Mapping[str, str] | None = None,
    min_agent_version: str = "0.0.0",
) -> PushedBundle:
    """Pack ``source`` and push it to ``target`` (tagged when it has a tag).

    The layer is packed to a temporary file and streamed; it is never held
    in memory.  Blobs go first, the manifest last, so a tag never names an
    incomplete artifact.
    """
    with tempfile.TemporaryDirectory(prefix="logicbundle-push-") as tmp:
        layer = Path(tmp) / "layer.tar.gz"
        with layer.open("wb") as out:
            result = pack_directory_to(
                source,
                out,
                name=name,
                version=version,
                interface=interface,
                entrypoint=entrypoint,
                labels=labels,
                min_agent_version=min_agent_version,
            )
        return _push(client, target, result=result, layer=layer)


def _push(
    client: RegistryClient, target: Reference, *, result: PackResult, layer: Path
) -> PushedBundle:
    client.push_blob(target, result.config, media_type=CONFIG_MEDIA_TYPE)
    client.push_blob(target, layer, media_type=LAYER_MEDIA_TYPE)
    data = oci_manifest(result)
    descriptor = client.push_manifest(target, data, media_type=OCI_MANIFEST)
    return PushedBundle(
        reference=target.with_digest(descriptor.digest),
        digest=descriptor.digest,
        manifest=result.manifest,
        size=result.layer_size,
    )


@dataclass(frozen=True)
class RemoteBundle:
    """A bundle's manifest, fetched by digest and checked; its layer is not yet pulled."""

    reference: Reference
    """Pinned by digest."""
    digest: str
    manifest: BundleManifest
    layer: Descriptor


def _bundle_parts(manifest: object, *, where: str) -> tuple[Descriptor, Descriptor]:
    """The config and layer descriptors of a bundle's OCI manifest, or NotABundleError."""
    hint = "Point the LogicBundle at an artifact pushed with `logicbundle push`."
    if not isinstance(manifest, Manifest):
        raise NotABundleError(f"{where} is an index, not a logic bundle manifest", hint=hint)
    if manifest.artifact_type not in (ARTIFACT_TYPE, None):
        raise NotABundleError(
            f"{where} has artifactType {manifest.artifact_type!r}, not {ARTIFACT_TYPE!r}",
            hint=hint,
        )
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise NotABundleError(
            f"{where} has config media type {manifest.config.media_type!r}, "
            f"not {CONFIG_MEDIA_TYPE!r}",
            hint=hint,
        )
    layers = [layer for layer in manifest.layers if layer.media_type == LAYER_MEDIA_TYPE]
    if len(manifest.layers) != 1 or len(layers) != 1:
        raise NotABundleError(
            f"{where} has {len(manifest.layers)} layers; a logic bundle has exactly one "
            f"{LAYER_MEDIA_TYPE} layer",
            hint=hint,
        )
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise NotABundleError(
            f"{where} has a {manifest.config.size}-byte config; the limit is {MAX_CONFIG_BYTES}"
        )
    return manifest.config, layers[0]


def fetch_bundle(client: RegistryClient, ref: Reference) -> RemoteBundle:
    """Fetch and check a bundle's OCI manifest and bundle manifest (not its layer).

    A tag is resolved to a digest here; from then on everything is by digest.
    """
    pulled = client.pull_manifest(ref, accept=(OCI_MANIFEST,))
    pinned = ref.with_digest(pulled.descriptor.digest)
    config, layer = _bundle_parts(pulled.manifest, where=str(pinned))
    sink = io.BytesIO()
    client.pull_blob_to(pinned, config, sink, max_bytes=MAX_CONFIG_BYTES)
    return RemoteBundle(
        reference=pinned,
        digest=pulled.descriptor.digest,
        manifest=parse_manifest(sink.getvalue()),
        layer=layer,
    )


def pull_bundle(
    client: RegistryClient,
    bundle: RemoteBundle,
    destination: Path,
    *,
    limits: UnpackLimits = DEFAULT_LIMITS,
) -> UnpackedBundle:
    """Pull the layer (digest-checked while streaming) and unpack it into ``destination``.

    ``destination`` must not exist; on any failure nothing is left there.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=destination.parent) as tmp:
        layer = Path(tmp) / "layer.tar.gz"
        client.pull_blob_to(bundle.reference, bundle.layer, layer)
        return unpack_bundle(
            layer,
            manifest=bundle.manifest,
            destination=destination,
            limits=limits,
            expected_digest=bundle.layer.digest,
        )


# -- OCI image layouts: `logicbundle pack -o FILE` -----------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes | Path) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.mode = 0o644
    if isinstance(data, Path):
        info.size = data.stat().st_size
        with data.open("rb") as fh:
            tar.addfile(info, fh)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_layout(
    output: Path,
    source: Path,
    *,
    name: str,
    version: str,
    interface: Interface | Mapping[str, Any],
    entrypoint: str | None = None,
    labels: Mapping[str, str] | None = None,
    min_agent_version: str = "0.0.0",
) -> tuple[str, BundleManifest]:
    """Pack ``source`` into an OCI image layout tar at ``output``; return (digest, manifest).

    The file is written beside ``output`` and renamed into place, so a failed
    pack leaves no half-written file.  Any OCI tool reads it (for example
    ``oras cp --from-oci-layout``); ``logicbundle push FILE REF`` pushes it.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pack-", dir=output.parent) as tmp:
        layer = Path(tmp) / "layer.tar.gz"
        with layer.open("wb") as out:
            result = pack_directory_to(
                source,
                out,
                name=name,
                version=version,
                interface=interface,
                entrypoint=entrypoint,
                labels=labels,
                min_agent_version=min_agent_version,
            )
        manifest = oci_manifest(result)
        digest = sha256_digest(manifest)
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "artifactType": ARTIFACT_TYPE,
                    "annotations": {_REF_NAME: result.manifest.version},
                }
            ],
        }
        partial = Path(tmp) / "layout.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
            _add(tar, f"blobs/sha256/{result.config_digest[7:]}", result.config)
            _add(tar, f"blobs/sha256/{result.layer_digest[7:]}", layer)
            _add(tar, f"blobs/sha256/{digest[7:]}", manifest)
        partial.replace(output)
    return digest, result.manifest


@dataclass(frozen=True)
class Layout:
    """A bundle read from an OCI layout tar, every blob checked against its digest."""

    digest: str
    manifest_bytes: bytes
    manifest: BundleManifest
    config: bytes
    layer: Descriptor


def _blob(tar: tarfile.TarFile, digest: str, *, limit: int) -> bytes:
    member = tar.getmember(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    if not member.isfile() or member.size > limit:
        raise NotABundleError(f"blob {digest} in the layout is not a file of at most {limit} bytes")
    fh = tar.extractfile(member)
    if fh is None:
        raise NotABundleError(f"blob {digest} in the layout has no content")
    data = fh.read()
    if sha256_digest(data) != digest:
        raise NotABundleError(f"blob {digest} in the layout does not match its digest")
    return data


def read_layout(path: Path) -> Layout:
    """Read and check the bundle in an OCI layout tar written by :func:`write_layout`."""
    try:
        with tarfile.open(path, "r:") as tar:
            index_file = tar.extractfile("index.json")
            if index_file is None:
                raise NotABundleError(f"{path} has no index.json")
            index = json.loads(index_file.read(MAX_CONFIG_BYTES))
            manifests = index.get("manifests") or []
            if len(manifests) != 1:
                raise NotABundleError(f"{path} holds {len(manifests)} manifests, not one bundle")
            digest = str(manifests[0]["digest"])
            data = _blob(tar, digest, limit=MAX_CONFIG_BYTES)
            config, layer = _bundle_parts(Manifest.model_validate_json(data), where=str(path))
            config_bytes = _blob(tar, config.digest, limit=MAX_CONFIG_BYTES)
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise NotABundleError(
            f"{path} is not a logic bundle OCI layout: {exc}",
            hint="Make one with `logicbundle pack DIR -o FILE`.",
        ) from None
    return Layout(
        digest=digest,
        manifest_bytes=data,
        manifest=parse_manifest(config_bytes),
        config=config_bytes,
        layer=layer,
    )


def push_layout(client: RegistryClient, path: Path, target: Reference) -> PushedBundle:
    """Push the bundle in an OCI layout tar to ``target``, byte for byte (same digest)."""
    layout = read_layout(path)
    with tarfile.open(path, "r:") as tar, tempfile.TemporaryDirectory() as tmp:
        member = tar.getmember(f"blobs/sha256/{layout.layer.digest[7:]}")
        fh = tar.extractfile(member)
        if fh is None or member.size != layout.layer.size:
            raise NotABundleError(f"{path}: the layer blob is missing or has the wrong size")
        layer = Path(tmp) / "layer.tar.gz"
        with layer.open("wb") as out:
            while chunk := fh.read(1 << 20):
                out.write(chunk)
        with layer.open("rb") as check:
            matches = layer_digest(check) == layout.layer.digest
        if not matches:
            raise NotABundleError(f"{path}: the layer blob does not match its digest")
        client.push_blob(target, layout.config, media_type=CONFIG_MEDIA_TYPE)
        client.push_blob(target, layer, media_type=LAYER_MEDIA_TYPE)
        descriptor = client.push_manifest(target, layout.manifest_bytes, media_type=OCI_MANIFEST)
    return PushedBundle(
        reference=target.with_digest(descriptor.digest),
        digest=descriptor.digest,
        manifest=layout.manifest,
        size=layout.layer.size,
    )
