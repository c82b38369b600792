"""The authors' sub-commands: pack, push, sign, verify, inspect.

A bundle directory describes itself in ``logicbundle.yaml`` (name, version,
entrypoint, interface, labels, minAgentVersion); ``--name`` and
``--bundle-version`` win over the file.  Exit codes: 0 done, 1 failed, 2 usage,
3 verification failed.  ``-o json`` (or ``yaml``) prints one object for scripts;
``pack`` writes its file to ``--output-file``, so that ``-o`` means the output
format in every command, as in kubectl and flux.  Registry credentials come
from the user's docker config (:mod:`logicbundle.cli._credentials`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Final

from logicbundle.cli._errors import (
    EXIT_VERIFICATION_FAILED,
    FlagError,
    cli_hint,
    speak_cli,
    verbosity_options,
)
from logicbundle.errors import LogicBundleError

__all__ = ["EXIT_VERIFICATION_FAILED", "add_parsers", "emit", "output_options"]

DESCRIPTOR = "logicbundle.yaml"
OUTPUT_FORMATS: Final = ("text", "json", "yaml")


class UsageError(LogicBundleError):
    """The bundle descriptor is wrong (exit 1; wrong flags are a :class:`FlagError`, exit 2)."""

    reason = "InvalidUsage"


def render(data: Any, output: str) -> str | None:
    """``data`` as JSON or YAML for ``-o json|yaml``; None for text."""
    if output == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump(data, sort_keys=True, default_flow_style=False)).rstrip("\n")
    return None


def emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    """Print ``data`` in the ``-o`` format, or ``text`` for people."""
    rendered = render(data, getattr(args, "output", "text"))
    print(text if rendered is None else rendered)


def output_format(text: str) -> str:
    """``-o``'s value: a format; a file name gets a pointer to ``--output-file``."""
    if text in OUTPUT_FORMATS:
        return text
    hint = ""
    if "." in text or "/" in text:
        hint = "; -o is the output format, write the packed file with --output-file FILE"
    raise argparse.ArgumentTypeError(
        f"invalid format {text!r} (choose from {', '.join(OUTPUT_FORMATS)}){hint}"
    )


def output_options() -> argparse.ArgumentParser:
    """``-o/--output text|json|yaml`` as a parent parser: one meaning in every command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-o",
        "--output",
        type=output_format,
        default="text",
        metavar="{text,json,yaml}",
        help="text for people (default), json or yaml for scripts",
    )
    return parent


class _Deprecated(argparse.Action):
    """A flag's old spelling: works, says so on stderr, and stays out of --help."""

    def __init__(self, *args: Any, instead: str, **kwargs: Any) -> None:
        self.instead = instead
        super().__init__(*args, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"warning: {option_string} is deprecated, use {self.instead}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _descriptor(source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The bundle's metadata from ``logicbundle.yaml`` with the command-line overrides."""
    if not source.is_dir():
        raise UsageError(f"{source} is not a directory", hint="Pack a directory of bundle files.")
    import yaml  # only authors' commands read YAML; the agent never pays for it

    path = source / DESCRIPTOR
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{path} must be a mapping of name, version, interface …")
        data = loaded
    unknown = set(data) - {
        "name",
        "version",
        "entrypoint",
        "interface",
        "labels",
        "minAgentVersion",
    }
    if unknown:
        raise UsageError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    if args.name:
        data["name"] = args.name
    if args.bundle_version:
        data["version"] = args.bundle_version
    missing = [k for k in ("name", "version", "interface") if not data.get(k)]
    if missing:
        raise UsageError(
            f"the bundle has no {', '.join(missing)}",
            hint=f"Write them in {path}"
            + (" (or pass --name/--bundle-version)." if "interface" not in missing else "."),
        )
    return {
        "name": str(data["name"]),
        "version": str(data["version"]),
        "interface": data["interface"],
        "entrypoint": data.get("entrypoint"),
        "labels": {str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        "min_agent_version": str(data.get("minAgentVersion", "0.0.0")),
    }


def _client(args: argparse.Namespace, reference: Any) -> Any:
    """A registry client for ``reference``'s registry, with the user's credentials for it."""
    from logicbundle.cli._credentials import registry_auth
    from logicbundle.oci import RegistryClient

    ca_file = Path(args.ca_file) if args.ca_file else None
    if ca_file is not None and not ca_file.is_file():
        raise FlagError(f"--ca-file {ca_file}: no such file")
    return RegistryClient(
        auth=registry_auth(reference.registry, explicit=args.registry_config),
        insecure=args.insecure,
        ca_bundle=ca_file,
    )


def _reference(text: str) -> Any:
    from logicbundle.oci import Reference

    return Reference.parse(text)


def cmd_pack(args: argparse.Namespace) -> int:
    from logicbundle.artifact import write_layout

    if not args.output_file:
        raise FlagError(
            "pack needs --output-file FILE",
            hint="-o is the output format (text, json, yaml); the packed file is --output-file.",
        )
    source = Path(args.directory)
    digest, manifest = write_layout(Path(args.output_file), source, **_descriptor(source, args))
    emit(
        args,
        {
            "digest": digest,
            "file": args.output_file,
            "name": manifest.name,
            "version": manifest.version,
            "files": len(manifest.files),
        },
        f"packed {manifest.name} {manifest.version} ({len(manifest.files)} files) "
        f"to {args.output_file}\n{digest}",
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from logicbundle.artifact import push_directory, push_layout

    source = Path(args.source)
    target = _reference(args.reference)
    if not source.exists():
        raise UsageError(
            f"{source}: no such file or directory",
            hint="Push a bundle directory or a file from `logicbundle pack`.",
        )
    with _client(args, target) as client:
        if source.is_file():
            pushed = push_layout(client, source, target)
        else:
            pushed = push_directory(client, target, source, **_descriptor(source, args))
    emit(
        args,
        {
            "digest": pushed.digest,
            "reference": str(pushed.reference),
            "name": pushed.manifest.name,
            "version": pushed.manifest.version,
        },
        pushed.digest,
    )
    return 0


def _read_secret_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None


def cmd_sign(args: argparse.Namespace) -> int:
    from logicbundle import trust
    from logicbundle.trust import attach_signature

    ref = _reference(args.reference)
    with _client(args, ref) as client:
        digest = ref.digest or client.resolve(ref).digest
        pinned = ref.with_digest(digest)
        if args.key:
            key = _read_secret_file(args.key, "private key")
            password = (
                os.environ.get(args.key_password_env) or os.environ.get("COSIGN_PASSWORD") or ""
            ).encode() or None
            if args.legacy:
                artifact = trust.sign_legacy_with_key(
                    digest=digest,
                    docker_reference=f"{ref.registry}/{ref.repository}",
                    private_key_pem=key,
                    password=password,
                )
            else:
                artifact = trust.sign_with_key(
                    digest=digest, private_key_pem=key, password=password
                )
            method = "key"
        else:
            if args.legacy:
                raise FlagError("--legacy signs with --key only")
            token = args.identity_token or os.environ.get("SIGSTORE_ID_TOKEN")
            if not token:
                raise FlagError(
                    "keyless signing needs an OIDC identity token",
                    hint="Pass --identity-token or set SIGSTORE_ID_TOKEN (in CI, the "
                    "workflow's OIDC token with audience 'sigstore'); or sign with --key.",
                )
            context = None
            if args.signing_config or args.trusted_root:
                if not (args.signing_config and args.trusted_root):
                    raise FlagError("--signing-config and --trusted-root go together")
                context = trust.signing_context_from_config(
                    signing_config=_read_secret_file(args.signing_config, "signing config"),
                    trusted_root=_read_secret_file(args.trusted_root, "trusted root"),
                )
            artifact = trust.sign_keyless(
                digest=digest, identity_token=token, signing_context=context
            )
            method = "keyless"
        descriptor = attach_signature(client, pinned, artifact)
    emit(
        args,
        {"digest": digest, "signature": descriptor.digest, "method": method},
        f"signed {pinned} ({method}); signature {descriptor.digest}",
    )
    return 0


def _policy(args: argparse.Namespace) -> Any:
    from logicbundle.trust import CosignPublicKey, KeylessIdentity, TrustPolicy

    keys = tuple(CosignPublicKey(_read_secret_file(k, "public key")) for k in args.key)
    identities = []
    if args.identity or args.identity_regex:
        if not args.issuer:
            raise FlagError("--identity and --identity-regex need --issuer")
        identities += [KeylessIdentity(issuer=args.issuer, subject=s) for s in args.identity]
        identities += [
            KeylessIdentity(issuer=args.issuer, subject_regex=r) for r in args.identity_regex
        ]
    elif args.issuer:
        raise FlagError("--issuer needs --identity or --identity-regex")
    if not keys and not identities:
        raise FlagError(
            "say whom to trust",
            hint="Pass --key FILE, or --identity/--identity-regex with --issuer.",
        )
    return TrustPolicy(identities=tuple(identities), keys=keys)


def cmd_verify(args: argparse.Namespace) -> int:
    from logicbundle.trust import (
        TrustVerifier,
        VerificationError,
        load_trusted_root_file,
        verify_reference,
    )

    policy = _policy(args)
    root = load_trusted_root_file(Path(args.trusted_root)) if args.trusted_root else None
    verifier = TrustVerifier(trusted_root=root)
    ref = _reference(args.reference)
    try:
        with _client(args, ref) as client:
            verified = verify_reference(
                client=client, reference=ref, policy=policy, verifier=verifier
            )
    except VerificationError as exc:
        message = speak_cli(exc.message)
        hint = cli_hint(exc)
        emit(
            args,
            {"verified": False, "reference": str(ref), "error": message},
            f"verification failed: {message}" + (f"\nHint: {hint}" if hint else ""),
        )
        return EXIT_VERIFICATION_FAILED
    emit(
        args,
        {
            "verified": True,
            "digest": verified.digest,
            "method": verified.method,
            "identity": verified.identity,
            "issuer": verified.issuer,
        },
        f"verified {ref.registry}/{ref.repository}@{verified.digest}\n"
        f"  signer: {verified.identity} ({verified.method}"
        + (f", issuer {verified.issuer})" if verified.issuer else ")"),
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    target = args.target
    if Path(target).is_file():
        from logicbundle.artifact import read_layout

        layout = read_layout(Path(target))
        digest, manifest, signatures = layout.digest, layout.manifest, None
    else:
        from logicbundle.artifact import fetch_bundle
        from logicbundle.trust import discover_signatures

        reference = _reference(target)
        with _client(args, reference) as client:
            remote = fetch_bundle(client, reference)
            digest, manifest = remote.digest, remote.manifest
            signatures = len(discover_signatures(client, remote.reference))
    data = {
        "digest": digest,
        "manifest": json.loads(manifest.to_json()),
        "signatures": signatures,
    }
    lines = [
        f"{manifest.name} {manifest.version}",
        f"  digest:      {digest}",
        f"  entrypoint:  {manifest.entrypoint or '-'}",
        f"  interface:   {manifest.interface_hash}",
        f"  files:       {len(manifest.files)} ({manifest.total_size} bytes)",
    ]
    if manifest.labels:
        lines.append("  labels:      " + ", ".join(f"{k}={v}" for k, v in manifest.labels.items()))
    if signatures is not None:
        lines.append(f"  signatures:  {signatures} found (not verified; use `logicbundle verify`)")
    emit(args, data, "\n".join(lines))
    return 0


def add_parsers(sub: Any, *, verbosity: argparse.ArgumentParser | None = None) -> None:
    """Add pack, push, sign, verify and inspect to the top-level sub-parsers."""
    verbosity = verbosity or verbosity_options()
    output = output_options()
    registry = argparse.ArgumentParser(add_help=False)
    registry.add_argument(
        "--insecure",
        action="store_true",
        help="talk plain HTTP to the registry (never over a network you do not trust)",
    )
    registry.add_argument(
        "--ca-file", help="PEM bundle of CAs that sign the registry's certificate"
    )
    registry.add_argument(
        "--registry-config",
        metavar="FILE",
        help="docker config.json with the registry credentials (default: "
        "$LOGICBUNDLE_REGISTRY_CONFIG, $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, "
        "~/.docker/config.json; credHelpers and credsStore are run as docker runs them)",
    )
    meta = argparse.ArgumentParser(add_help=False)
    meta.add_argument("--name", help=f"bundle name (wins over {DESCRIPTOR})")
    meta.add_argument(
        "--bundle-version", metavar="VERSION", help=f"bundle version (wins over {DESCRIPTOR})"
    )
    meta.add_argument(
        "--version",
        dest="bundle_version",
        action=_Deprecated,
        instead="--bundle-version",
        help=argparse.SUPPRESS,
    )

    pack = sub.add_parser(
        "pack",
        parents=[verbosity, output, meta],
        help="pack a directory into an OCI layout file",
    )
    pack.add_argument("directory", help=f"the bundle directory (with its {DESCRIPTOR})")
    pack.add_argument(
        "--output-file",
        dest="output_file",
        metavar="FILE",
        help="the OCI layout file to write (a tar, e.g. pricing.oci.tar); required",
    )
    pack.add_argument(
        "--out",
        dest="output_file",
        action=_Deprecated,
        instead="--output-file",
        help=argparse.SUPPRESS,
    )
    pack.set_defaults(func=cmd_pack)

    push = sub.add_parser(
        "push",
        parents=[verbosity, output, registry, meta],
        help="push a directory (or a packed file) to REF; prints the digest",
    )
    push.add_argument("source", help="a bundle directory or a file from `logicbundle pack`")
    push.add_argument("reference", metavar="REF", help="registry/repository:tag")
    push.set_defaults(func=cmd_push)

    sign = sub.add_parser(
        "sign",
        parents=[verbosity, output, registry],
        help="sign REF's digest (keyless by default, or --key) and attach it as cosign does",
    )
    sign.add_argument(
        "reference", metavar="REF", help="registry/repository:tag or …@sha256:… to sign"
    )
    sign.add_argument("--key", help="PEM private key (PKCS#8); without it, keyless")
    sign.add_argument(
        "--key-password-env",
        default="LOGICBUNDLE_KEY_PASSWORD",
        help="environment variable holding the key's password (default %(default)s, "
        "then COSIGN_PASSWORD)",
    )
    sign.add_argument("--legacy", action="store_true", help="cosign v2 `.sig` format (with --key)")
    sign.add_argument(
        "--identity-token",
        help="OIDC token for keyless signing; prefer $SIGSTORE_ID_TOKEN, since command-line "
        "arguments are visible to other users of the machine",
    )
    sign.add_argument("--signing-config", help="signing config JSON of a private sigstore instance")
    sign.add_argument("--trusted-root", help="trusted root JSON of a private sigstore instance")
    sign.set_defaults(func=cmd_sign)

    verify = sub.add_parser(
        "verify",
        parents=[verbosity, output, registry],
        help="verify REF's signature against keys or keyless identities",
    )
    verify.add_argument(
        "reference", metavar="REF", help="registry/repository:tag or …@sha256:… to verify"
    )
    verify.add_argument("--key", action="append", default=[], help="PEM public key (repeatable)")
    verify.add_argument("--identity", action="append", default=[], help="exact signer subject")
    verify.add_argument(
        "--identity-regex",
        action="append",
        default=[],
        help="signer subject regex, matched against the whole subject",
    )
    verify.add_argument("--issuer", help="OIDC issuer of the identities")
    verify.add_argument(
        "--trusted-root",
        help="trusted_root.json (default: sigstore's public-good root)",
    )
    verify.set_defaults(func=cmd_verify)

    inspect = sub.add_parser(
        "inspect",
        parents=[verbosity, output, registry],
        help="show a bundle (REF or packed FILE)",
    )
    inspect.add_argument(
        "target",
        metavar="REF|FILE",
        help="registry/repository:tag, …@sha256:…, or a packed file",
    )
    inspect.set_defaults(func=cmd_inspect)
