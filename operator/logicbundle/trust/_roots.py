"""Where keyless trust starts: a Sigstore trusted root, read from bytes, never from TUF.

Operator pods run read-only as non-root and must not depend on the network to verify, so
``Verifier.production()`` (which refreshes and caches TUF metadata under ``$HOME``) is never
used. The trusted root comes from a ConfigMap/Secret (bytes or a mounted file); the default
is the public-good ``trusted_root.json`` embedded in the installed sigstore wheel. That copy
is as fresh as the wheel: after a Sigstore key rotation, mount a current root.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sigstore.models import TrustedRoot
from sigstore_models.trustroot.v1 import TrustedRoot as _TrustedRootMessage

from logicbundle.trust._errors import VerificationError

# sigstore embeds one directory per TUF repository, named by the URL-quoted repository URL.
_PUBLIC_GOOD_DIR = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"


def load_trusted_root(data: bytes | str) -> TrustedRoot:
    """Parse a ``trusted_root.json`` (the content of a ConfigMap or Secret key)."""
    try:
        # TrustedRoot has no from-bytes constructor; from_file would need a writable temp
        # file, so the message is parsed here and wrapped the way from_file does.
        message = _TrustedRootMessage.from_json(data)
        root = TrustedRoot(message)
    except Exception as exc:  # sigstore raises ValueError, pydantic or its own Error
        # Never the parser's message: pydantic's quotes the input, and the input may be
        # any key of any Secret the LogicBundle names (the message lands in an event).
        raise VerificationError(
            f"the trusted root is not a valid Sigstore trusted_root.json ({_shape(exc)})",
            hint="Copy trusted_root.json from your Sigstore instance's TUF repository "
            "(media type application/vnd.dev.sigstore.trustedroot+json;version=0.1).",
        ) from None
    # Keyless verification needs all three; without one, sigstore fails later with its
    # own exception, outside the project's errors, on every verification.
    missing = [
        what
        for what, entries in (
            ("certificate authorities (Fulcio)", message.certificate_authorities),
            ("transparency logs (Rekor)", message.tlogs),
            ("certificate transparency logs", message.ctlogs),
        )
        if not entries
    ]
    if missing:
        raise VerificationError(
            f"the trusted root has no {' and no '.join(missing)}: keyless signatures cannot "
            "be verified against it",
            hint="Use the complete trusted_root.json of your Sigstore instance.",
        )
    unusable = _unusable_entry(message)
    if unusable:
        raise VerificationError(
            f"the trusted root's {unusable}: keyless signatures cannot rely on it",
            hint="Use the complete trusted_root.json of your Sigstore instance.",
        )
    return root


def _unusable_entry(message: _TrustedRootMessage) -> str | None:
    """The first entry whose certificates or key do not load (sigstore would fail later).

    Named by its position only: nothing of the content reaches the message.
    """
    for number, authority in enumerate(message.certificate_authorities, start=1):
        chain = authority.cert_chain.certificates
        if not chain:
            return f"certificate authority {number} has no certificate"
        try:
            for certificate in chain:
                x509.load_der_x509_certificate(certificate.raw_bytes)
        except ValueError:
            return f"certificate authority {number} holds a certificate that does not parse"
    for what, logs in (("transparency log", message.tlogs), ("CT log", message.ctlogs)):
        for number, log in enumerate(logs, start=1):
            raw = log.public_key.raw_bytes
            if not raw:
                return f"{what} {number} has no public key"
            try:
                load_der_public_key(raw)
            except (ValueError, TypeError):  # TypeError: a key type cryptography lacks
                return f"{what} {number} has a public key that does not parse"
    return None


def _shape(exc: Exception) -> str:
    """What went wrong, by kind and location only: nothing of the input's content."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors(include_url=False, include_input=False, include_context=False)
        except TypeError:
            found = None
        if isinstance(found, list) and found:
            first = found[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "document"
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            return f"{first.get('type', 'invalid')} at {where}{more}"
    return type(exc).__name__


def load_trusted_root_file(path: Path) -> TrustedRoot:
    """Parse a mounted ``trusted_root.json``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VerificationError(
            f"cannot read the trusted root {path}: {exc.strerror}",
            hint="Check the ConfigMap/Secret volume that holds trusted_root.json.",
        ) from None
    return load_trusted_root(data)


def public_good_trusted_root() -> TrustedRoot:
    """The Sigstore public-good trusted root shipped inside the sigstore wheel (no network)."""
    asset = resources.files("sigstore._store").joinpath(_PUBLIC_GOOD_DIR, "trusted_root.json")
    return load_trusted_root(asset.read_bytes())
