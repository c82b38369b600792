"""The authors' sub-commands: pack, push, sign, verify, inspect.

A bundle directory describes itself in ``logicbundle.yaml`` (name, version,
entrypoint, interface, labels, minAgentVersion); ``--name`` and
``--version`` win over the file.  Exit codes: 0 done, 1 failed, 2 usage,
3 verification failed.  ``--output json`` prints one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from logicbundle.errors import LogicBundleError

EXIT_VERIFICATION_FAILED = 3
DESCRIPTOR = "logicbundle.yaml"


class UsageError(LogicBundleError):
    """The command line or the bundle descriptor is wrong."""

    reason = "InvalidUsage"


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if args.output == "json":
        print(json.dumps(data, sort_keys=True))
    else:
        print(text)


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
    if args.version:
        data["version"] = args.version
    missing = [k for k in ("name", "version", "interface") if not data.get(k)]
    if missing:
        raise UsageError(
            f"the bundle has no {', '.join(missing)}",
            hint=f"Write them in {path} (or pass --name/--version).",
        )
    return {
        "name": str(data["name"]),
        "version": str(data["version"]),
        "interface": data["interface"],
        "entrypoint": data.get("entrypoint"),
        "labels": {str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        "min_agent_version": str(data.get("minAgentVersion", "0.0.0")),
    }


def _client(args: argparse.Namespace) -> Any:
    from logicbundle.oci import DockerConfig, RegistryClient

    auth = None
    config = args.registry_config or os.environ.get("LOGICBUNDLE_REGISTRY_CONFIG")
    if config:
        auth = DockerConfig.from_file(config)
    return RegistryClient(
        auth=auth,
        insecure=args.insecure,
        ca_bundle=Path(args.ca_file) if args.ca_file else None,
    )


def _reference(text: str) -> Any:
    from logicbundle.oci import Reference

    return Reference.parse(text)


def cmd_pack(args: argparse.Namespace) -> int:
    from logicbundle.artifact import write_layout

    source = Path(args.directory)
    digest, manifest = write_layout(Path(args.output_file), source, **_descriptor(source, args))
    _emit(
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
    with _client(args) as client:
        if source.is_file():
            pushed = push_layout(client, source, target)
        else:
            pushed = push_directory(client, target, source, **_descriptor(source, args))
    _emit(
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
    with _client(args) as client:
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
                raise UsageError("--legacy signs with --key only")
            token = args.identity_token or os.environ.get("SIGSTORE_ID_TOKEN")
            if not token:
                raise UsageError(
                    "keyless signing needs an OIDC identity token",
                    hint="Pass --identity-token or set SIGSTORE_ID_TOKEN (in CI, the "
                    "workflow's OIDC token with audience 'sigstore'); or sign with --key.",
                )
            context = None
            if args.signing_config or args.trusted_root:
                if not (args.signing_config and args.trusted_root):
                    raise UsageError("--signing-config and --trusted-root go together")
                context = trust.signing_context_from_config(
                    signing_config=_read_secret_file(args.signing_config, "signing config"),
                    trusted_root=_read_secret_file(args.trusted_root, "trusted root"),
                )
            artifact = trust.sign_keyless(
                digest=digest, identity_token=token, signing_context=context
            )
            method = "keyless"
        descriptor = attach_signature(client, pinned, artifact)
    _emit(
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
            raise UsageError("--identity and --identity-regex need --issuer")
        identities += [KeylessIdentity(issuer=args.issuer, subject=s) for s in args.identity]
        identities += [
            KeylessIdentity(issuer=args.issuer, subject_regex=r) for r in args.identity_regex
        ]
    elif args.issuer:
        raise UsageError("--issuer needs --identity or --identity-regex")
    if not keys and not identities:
        raise UsageError(
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
        with _client(args) as client:
            verified = verify_reference(
                client=client, reference=ref, policy=policy, verifier=verifier
            )
    except VerificationError as exc:
        _emit(
            args,
            {"verified": False, "reference": str(ref), "error": exc.message},
            f"verification failed: {exc.diagnostics()}",
        )
        return EXIT_VERIFICATION_FAILED
    _emit(
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

        with _client(args) as client:
            remote = fetch_bundle(client, _reference(target))
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
    _emit(args, data, "\n".join(lines))
    return 0


def add_parsers(sub: Any) -> None:
    """Add pack, push, sign, verify and inspect to the top-level sub-parsers."""
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="text for people (default) or json for scripts",
    )
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
        help="dockerconfigjson file with credentials ($LOGICBUNDLE_REGISTRY_CONFIG)",
    )
    meta = argparse.ArgumentParser(add_help=False)
    meta.add_argument("--name", help=f"bundle name (wins over {DESCRIPTOR})")
    meta.add_argument("--version", dest="version", help=f"bundle version (wins over {DESCRIPTOR})")

    pack = sub.add_parser(
        "pack",
        parents=[output, meta],
        help="pack a directory into an OCI layout file",
    )
    pack.add_argument("directory")
    pack.add_argument(
        "-o", "--out", dest="output_file", required=True, help="the OCI layout file to write"
    )
    pack.set_defaults(func=cmd_pack)

    push = sub.add_parser(
        "push",
        parents=[output, registry, meta],
        help="push a directory (or a packed file) to REF; prints the digest",
    )
    push.add_argument("source", help="a bundle directory or a file from `logicbundle pack`")
    push.add_argument("reference", help="registry/repository:tag")
    push.set_defaults(func=cmd_push)

    sign = sub.add_parser(
        "sign",
        parents=[output, registry],
        help="sign REF's digest (keyless by default, or --key) and attach it as cosign does",
    )
    sign.add_argument("reference")
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
        parents=[output, registry],
        help="verify REF's signature against keys or keyless identities",
    )
    verify.add_argument("reference")
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
        parents=[output, registry],
        help="show a bundle (REF or packed FILE)",
    )
    inspect.add_argument("target", help="registry/repository:tag, …@sha256:…, or a packed file")
    inspect.set_defaults(func=cmd_inspect)
