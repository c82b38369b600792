"""logicbundle.oci: a small, strict client for OCI distribution registries.

Why our own client (on ``urllib3``) and not oras-py: the registry is
untrusted, so every manifest and blob is checked against its digest while it
streams and nothing unverified is ever left on disk; manifests are
size-limited; the referrers API falls back to the ``sha256-<hex>`` tag schema
(cosign's interop path on registries such as Debian's ``docker-registry``);
retries back off and never repeat a 4xx; and no error or log line carries a
credential, token or signed URL.  It imports neither kopf nor the kubernetes
client, so the in-pod agent reuses the pull side.

Typical use::

    client = RegistryClient(auth=DockerConfig.from_json(secret_value))
    ref = Reference.parse("registry.example.com/team/rules:v1")
    descriptor = client.resolve(ref)                    # tag -> digest
    pulled = client.pull_manifest(ref.with_digest(descriptor.digest))
    client.pull_blob_to(ref, pulled.manifest.layers[0], Path("layer.tgz"))
"""

from logicbundle.oci._auth import Credentials, DockerConfig
from logicbundle.oci._client import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_MANIFEST_BYTES,
    BlobSink,
    PulledManifest,
    RegistryClient,
    fallback_tag,
)
from logicbundle.oci._errors import (
    AccessDeniedError,
    AuthenticationError,
    DigestMismatchError,
    InsecureTransportError,
    InvalidManifestError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    RegistryRequestError,
    RegistryUnavailableError,
    SizeLimitError,
    TLSVerificationError,
)
from logicbundle.oci._models import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_EMPTY_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    check_digest,
    is_digest,
    parse_manifest,
    sha256_digest,
)
from logicbundle.oci._reference import Reference, check_tag
from logicbundle.oci._transport import RetryPolicy, redact_url

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "DEFAULT_MAX_MANIFEST_BYTES",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_EMPTY_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "AccessDeniedError",
    "AuthenticationError",
    "BlobSink",
    "Credentials",
    "Descriptor",
    "DigestMismatchError",
    "DockerConfig",
    "Index",
    "InsecureTransportError",
    "InvalidManifestError",
    "InvalidReferenceError",
    "Manifest",
    "NotFoundError",
    "PulledManifest",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "RegistryRequestError",
    "RegistryUnavailableError",
    "RetryPolicy",
    "SizeLimitError",
    "TLSVerificationError",
    "check_digest",
    "check_tag",
    "fallback_tag",
    "is_digest",
    "parse_manifest",
    "redact_url",
    "sha256_digest",
]
