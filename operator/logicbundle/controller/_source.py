"""The source and verification steps: from ``spec.source`` and ``spec.verify`` to a verified digest.

Resolve the reference to a digest (tags are resolved, never trusted), find
and verify its signature under the policy the spec names, fetch the bundle
manifest, pull the layer into the distributor's content-addressed cache, and
audit Python code when asked.  Secrets and ConfigMaps are read through a
small :class:`ObjectReader` so the steps are tested without a cluster;
:class:`SourceTools` is what every check of the process shares.

Every failure is a :class:`~logicbundle.errors.LogicBundleError`.  One that
concerns a digest (a bad signature, not a bundle, a layer refused) is that
digest's ``Verified=False``; one raised before (or beside) a digest is
classified here, in one place (:func:`failure_of`), into what the LogicBundle
shows: retried (``ResolveFailed``) or stalled (``InvalidSource``), the way
Flux's ``serror.Generic`` and ``serror.Stalling`` decide its conditions.
Nothing here ever puts a secret, token or URL credential into a message.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from logicbundle import rollout
from logicbundle.api import conditions
from logicbundle.api.v1alpha1 import (
    DEFAULT_CA_KEY,
    DEFAULT_PUBLIC_KEY_KEY,
    DEFAULT_TRUSTED_ROOT_KEY,
    LogicBundleSpec,
    Source,
    Verify,
)
from logicbundle.artifact import NotABundleError, RemoteBundle, fetch_bundle
from logicbundle.bundle import (
    AuditPolicy,
    BundleError,
    audit_directory,
    enforce_audit,
    unpack_bundle,
)
from logicbundle.distributor import BlobCache
from logicbundle.errors import LogicBundleError
from logicbundle.oci import (
    DockerConfig,
    InsecureTransportError,
    InvalidReferenceError,
    Reference,
    RegistryClient,
    SizeLimitError,
)
from logicbundle.oci import InvalidManifestError as InvalidOciManifestError
from logicbundle.trust import (
    CosignPublicKey,
    KeylessIdentity,
    TrustPolicy,
    TrustVerifier,
    VerificationError,
    Verified,
    load_trusted_root,
    verify_reference,
)


class ObjectReader(Protocol):
    """Reads the Secrets and ConfigMaps a LogicBundle refers to (same namespace only)."""

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        """The Secret's data, decoded; raises ConfigError when it is missing."""

    def config_map(self, namespace: str, name: str) -> Mapping[str, str]:
        """The ConfigMap's data; raises ConfigError when it is missing."""


class ConfigError(LogicBundleError):
    """A Secret, ConfigMap or key the spec names is missing or unusable."""

    reason = "InvalidConfiguration"
    retryable = True  # creating the missing object fixes it without a spec change


def _value(data: Mapping[str, bytes] | Mapping[str, str], key: str, *, what: str) -> bytes:
    if key not in data:
        raise ConfigError(
            f"{what} has no key {key!r}",
            hint=f"Add the key {key!r} or name another key in the LogicBundle.",
        )
    value = data[key]
    return value if isinstance(value, bytes) else value.encode()


def trust_policy(verify: Verify, *, namespace: str, reader: ObjectReader) -> TrustPolicy:
    """The any-of trust policy the spec names, with keys read from their Secrets."""
    identities: list[KeylessIdentity] = []
    if verify.keyless is not None:
        identities = [
            KeylessIdentity(issuer=i.issuer, subject=i.subject, subject_regex=i.subject_regex)
            for i in verify.keyless.identities
        ]
    keys: list[CosignPublicKey] = []
    for key in verify.keys or ():
        if key.pem is not None:
            keys.append(CosignPublicKey(key.pem.encode()))
        elif key.secret_ref is not None:
            ref = key.secret_ref
            data = reader.secret(namespace, ref.name)
            name = ref.key or DEFAULT_PUBLIC_KEY_KEY
            keys.append(CosignPublicKey(_value(data, name, what=f"Secret {namespace}/{ref.name}")))
    return TrustPolicy(identities=tuple(identities), keys=tuple(keys))


def trusted_root_bytes(verify: Verify, *, namespace: str, reader: ObjectReader) -> bytes | None:
    """The trusted root JSON the spec names, or None for sigstore's public-good root."""
    if verify.keyless is None or verify.keyless.trusted_root_ref is None:
        return None
    ref = verify.keyless.trusted_root_ref
    key = ref.key or DEFAULT_TRUSTED_ROOT_KEY
    if ref.kind == "Secret":
        return _value(
            reader.secret(namespace, ref.name), key, what=f"Secret {namespace}/{ref.name}"
        )
    return _value(
        reader.config_map(namespace, ref.name), key, what=f"ConfigMap {namespace}/{ref.name}"
    )


class RegistryClients:
    """Registry clients per (credentials, CA, insecure), with CA bundles on private disk."""

    def __init__(self, *, ca_dir: Path | None = None) -> None:
        self._ca_dir = ca_dir or Path(tempfile.mkdtemp(prefix="logicbundle-ca-"))

    def client(self, source: Source, *, namespace: str, reader: ObjectReader) -> RegistryClient:
        auth = None
        if source.pull_secret_ref is not None:
            name = source.pull_secret_ref.name
            data = reader.secret(namespace, name)
            auth = DockerConfig.from_json(
                _value(data, ".dockerconfigjson", what=f"Secret {namespace}/{name}")
            )
        ca_file = None
        ca_pem = self._ca_pem(source, namespace=namespace, reader=reader)
        if ca_pem is not None:
            ca_file = self._ca_dir / f"{hashlib.sha256(ca_pem).hexdigest()}.pem"
            if not ca_file.exists():
                partial = ca_file.with_suffix(".tmp")
                partial.write_bytes(ca_pem)
                partial.replace(ca_file)
        return RegistryClient(auth=auth, insecure=source.insecure, ca_bundle=ca_file)

    @staticmethod
    def _ca_pem(source: Source, *, namespace: str, reader: ObjectReader) -> bytes | None:
        if source.ca_secret_ref is not None:
            ref = source.ca_secret_ref
            return _value(
                reader.secret(namespace, ref.name),
                ref.key or DEFAULT_CA_KEY,
                what=f"Secret {namespace}/{ref.name}",
            )
        if source.ca_config_map_ref is not None:
            cm = source.ca_config_map_ref
            return _value(
                reader.config_map(namespace, cm.name),
                cm.key or DEFAULT_CA_KEY,
                what=f"ConfigMap {namespace}/{cm.name}",
            )
        return None


@dataclass(frozen=True)
class SourceOutcome:
    """What one pass over the source found: a digest, and either a verified bundle or why not."""

    reference: Reference
    digest: str
    verified: Verified | None = None
    bundle: RemoteBundle | None = None
    error: LogicBundleError | None = None
    """Why the digest must not be assigned: a failed verification or audit, or not a bundle."""
    audit_findings: tuple[str, ...] = ()


class InvalidTrustedRootError(LogicBundleError):
    """The trusted root the spec names does not load: not a trusted_root.json, or no CAs or logs.

    A fault of the ConfigMap or Secret, not of any digest: no digest is failed for it.
    """

    reason = "InvalidTrustedRoot"


def _verifier(root: bytes | None, *, verifiers: dict[bytes | None, TrustVerifier]) -> TrustVerifier:
    """The verifier of trusted root ``root`` (None: public good), made once per root.

    A root that does not load raises :class:`InvalidTrustedRootError` (and is not
    kept): checked before the reference is resolved, it never fails a digest.
    """
    verifier = verifiers.get(root)
    if verifier is None:
        try:
            trusted = load_trusted_root(root) if root else None
        except VerificationError as exc:
            raise InvalidTrustedRootError(exc.message, hint=exc.hint) from None
        verifier = TrustVerifier(trusted_root=trusted)
        verifiers[root] = verifier
    return verifier


class SourceCheckError(LogicBundleError):
    """Checking the source failed before a digest was known, in a way no check names."""

    reason = "SourceCheckFailed"
    retryable = True


STALLING: tuple[type[LogicBundleError], ...] = (
    InvalidReferenceError,
    InsecureTransportError,
    InvalidTrustedRootError,
)
"""The errors before a digest that no retry fixes, only a change of the spec or of what it names.

A malformed reference is the spec's own; plain HTTP asked for by the registry,
its token service or a redirect while ``source.insecure`` is false is refused
for safety and stays refused until the spec (or the registry's configuration)
changes; a trusted root that does not load is the content of the ConfigMap or
Secret the spec names.  The controller checks these again at the source
interval only (Secrets, ConfigMaps and registries are not watched), never with
backoff.  Everything else raised before a digest is known is retried with
backoff, whatever the error's own ``retryable`` (which the registry client
sets for a transient answer only): a missing repository or tag is fixed by a
push, refused or unreadable credentials by the registry or a Secret, a missing
Secret or ConfigMap by creating it, a TLS failure by a CA or a certificate
(plain HTTP answering a TLS client is one: ``TLSVerificationFailed``).
"""


def failure_of(exc: LogicBundleError) -> rollout.SourceFailure:
    """What the LogicBundle shows for ``exc``, raised by :func:`resolve_and_verify`.

    The one place errors before a digest are classified (:data:`STALLING`):
    stalled (``InvalidSource``) or retried (``ResolveFailed``); the message
    starts with the error's own reason.
    """
    stalled = isinstance(exc, STALLING)
    return rollout.SourceFailure(
        reason=conditions.INVALID_SOURCE if stalled else conditions.RESOLVE_FAILED,
        message=f"{exc.reason}: {exc.message}",
        stalled=stalled,
    )


def resolve_and_verify(
    spec: LogicBundleSpec,
    *,
    namespace: str,
    reader: ObjectReader,
    clients: RegistryClients,
    verifiers: dict[bytes | None, TrustVerifier],
    cache: BundleCache | None = None,
) -> SourceOutcome:
    """Resolve ``spec.source.ref``, verify the digest, fetch its manifest, cache and audit it.

    Registry and configuration errors are raised (:func:`failure_of` says how
    the LogicBundle shows them; a trusted root that does not load is one of
    them, checked before the reference is resolved); a bad
    signature, a trusted root that cannot verify it, an artifact that is not a
    bundle, a layer the unpacker refuses, a rejected audit or any unexpected
    exception once the digest is known is returned in
    :attr:`SourceOutcome.error` with the digest it concerns, so the caller can
    say which digest it refused.  ``verifiers`` caches one
    verifier per trusted root across reconciles.

    An unexpected exception before the digest is known (a CA file that cannot be
    written, a library's own error while resolving) becomes a retryable
    :class:`SourceCheckError` naming its type only: the LogicBundle shows
    ``ResolveFailed`` and an event instead of a reconcile that fails on every retry.
    """
    try:
        return _resolve_and_verify(
            spec,
            namespace=namespace,
            reader=reader,
            clients=clients,
            verifiers=verifiers,
            cache=cache,
        )
    except LogicBundleError:
        raise
    except Exception as exc:
        raise SourceCheckError(
            f"checking the source failed unexpectedly ({_detail(exc)})",
            hint="The operator's log has no more than this; retried shortly.",
        ) from None


def _resolve_and_verify(
    spec: LogicBundleSpec,
    *,
    namespace: str,
    reader: ObjectReader,
    clients: RegistryClients,
    verifiers: dict[bytes | None, TrustVerifier],
    cache: BundleCache | None = None,
) -> SourceOutcome:
    """The body of :func:`resolve_and_verify`."""
    policy = trust_policy(spec.verify, namespace=namespace, reader=reader)
    # The trusted root is configuration, whatever the digest: one that does not load
    # is refused here, before any digest, never as some digest's Verified=False.
    root = trusted_root_bytes(spec.verify, namespace=namespace, reader=reader)
    verifier = _verifier(root, verifiers=verifiers)
    reference = Reference.parse(spec.source.ref)
    with clients.client(spec.source, namespace=namespace, reader=reader) as client:
        digest = reference.digest or client.resolve(reference).digest
        pinned = reference.with_digest(digest)
        try:
            verified = verify_reference(
                client=client, reference=pinned, policy=policy, verifier=verifier
            )
            # By the verified digest, never the tag again: a tag moved in between must
            # not swap in unverified bytes.
            bundle = fetch_bundle(client, pinned)
        except (
            VerificationError,
            NotABundleError,
            BundleError,
            InvalidOciManifestError,  # a key twice, not JSON: these bytes never get better
            SizeLimitError,
        ) as exc:
            return SourceOutcome(reference=reference, digest=digest, error=exc)
        except LogicBundleError:
            raise  # the registry or the configuration: retrying may help
        except Exception as exc:  # fail closed on this digest, and say so
            return SourceOutcome(
                reference=reference, digest=digest, error=_unexpected(exc, "verifying", digest)
            )
        findings: tuple[str, ...] = ()
        if cache is not None:
            try:
                findings = cache.store(client, bundle, audit=spec.verify.audit)
            except BundleError as exc:  # a rejected audit, a layer the unpacker refuses
                return SourceOutcome(reference=reference, digest=digest, error=exc)
            except LogicBundleError:
                raise
            except Exception as exc:  # an OSError mid-unpack, for example
                return SourceOutcome(
                    reference=reference, digest=digest, error=_unexpected(exc, "caching", digest)
                )
    return SourceOutcome(
        reference=reference,
        digest=digest,
        verified=verified,
        bundle=bundle,
        audit_findings=findings,
    )


class UnexpectedSourceError(LogicBundleError):
    """Checking or caching a digest failed in a way no check names: it is not served."""

    reason = "VerificationFailed"


def _detail(exc: Exception) -> str:
    # The exception's type (and an OSError's strerror), never its text: a library's
    # message may quote what it was given.
    detail = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        detail += f": {exc.strerror}"
    return detail


def _unexpected(exc: Exception, doing: str, digest: str) -> UnexpectedSourceError:
    return UnexpectedSourceError(
        f"{doing} {digest} failed unexpectedly ({_detail(exc)}); it is not served",
        hint="The operator's log has no more than this; retried at the next source interval.",
    )


class BundleCache:
    """Puts verified bundles into the distributor's content-addressed cache, unpacked and audited.

    A layer enters the cache only once the unpacker the agents run has accepted
    it, whatever the audit setting: a hostile layer is refused here, as that
    digest's ``Verified=False``, never first by every pod it was assigned to.
    """

    def __init__(self, blobs: BlobCache) -> None:
        self.blobs = blobs
        self._audited: dict[tuple[str, str], tuple[str, ...]] = {}
        """(digest, audit mode) -> the findings of a passed audit: the bytes of a digest
        never change, so a resolve of a cached digest pulls and unpacks nothing again."""
        self._writing = threading.Lock()
        """Held while a bundle is put and while the cache is trimmed: a trim must not
        delete the blobs of a bundle whose manifest is not written yet."""

    def trim(self, keep: Collection[str], *, spare: int) -> list[str]:
        """Drop every cached bundle but ``keep`` and the ``spare`` most recently stored others.

        Without it the cache grows by one bundle per digest ever rolled out, on
        disk and in memory (the soak of issue 11 found it).  A dropped digest a
        pod still asks for is fetched from the registry (the agent's fallback).
        Returns the digests dropped.
        """
        with self._writing:
            stored = self.blobs.newest_first()
            drop = [digest for digest in stored if digest not in keep][spare:]
            if drop:
                self.blobs.prune(set(stored) - set(drop))
                gone = set(drop)
                for key in [key for key in list(self._audited) if key[0] in gone]:
                    self._audited.pop(key, None)
        return drop

    def store(self, client: RegistryClient, bundle: RemoteBundle, *, audit: str) -> tuple[str, ...]:
        """Cache ``bundle`` (once per digest); return the audit findings (or raise on reject).

        Raises the unpacker's :class:`~logicbundle.bundle.UnpackError` for a layer it
        refuses, and :class:`~logicbundle.bundle.AuditRejectedError` on a rejecting audit.
        """
        findings: tuple[str, ...] = ()
        cached = self.blobs.get(bundle.digest) is not None
        if cached and audit == "off":
            return findings
        if cached and (bundle.digest, audit) in self._audited:
            return self._audited[(bundle.digest, audit)]
        with tempfile.TemporaryDirectory(prefix="logicbundle-cache-") as tmp:
            work = Path(tmp)
            layer = work / "layer.tar.gz"
            client.pull_blob_to(bundle.reference, bundle.layer, layer)
            unpacked = unpack_bundle(
                layer,
                manifest=bundle.manifest,
                destination=work / "files",
                expected_digest=bundle.layer.digest,
                fsync=False,
            )
            if audit != "off":
                report = audit_directory(unpacked.path)
                findings = tuple(str(f) for f in report.findings)
                enforce_audit(report, policy=AuditPolicy(audit))
            if not cached:
                pulled = client.pull_manifest(bundle.reference)
                with self._writing:
                    self.blobs.put(
                        digest=bundle.digest,
                        manifest=pulled.data,
                        config=bundle.manifest.to_json(),
                        layer=layer,
                    )
        if audit != "off":
            if len(self._audited) >= 1024:
                self._audited.clear()
            self._audited[(bundle.digest, audit)] = findings
        return findings


@dataclass(frozen=True, kw_only=True)
class SourceTools:
    """What every source check of the process shares: readers, clients, verifiers, the cache.

    Process-wide, never per LogicBundle: registry clients and trust verifiers are
    kept per credentials and per trusted root (their setup is costly), and the
    cache is the distributor's, keyed by digest.
    """

    reader: ObjectReader
    """The Secrets and ConfigMaps a spec names (the Kubernetes API in the operator)."""
    cache: BundleCache
    clients: RegistryClients = field(default_factory=RegistryClients)
    verifiers: dict[bytes | None, TrustVerifier] = field(default_factory=dict)
    """Per trusted root (None: sigstore's public-good root), its verifier."""
