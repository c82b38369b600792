"""How the command line fails: one line on stderr, a documented exit code, no traceback.

kubectl and flux answer an expected failure (the API server down, no
kubeconfig, a registry that refuses the credentials, a missing file) with one
line saying what failed and, when we know, one ``Hint:`` line saying what to do;
``-v`` adds the detail (the traceback).  :func:`report` is that one place for
every sub-command of ``logicbundle`` and of the kubectl plugin.

Exit codes (docs/cli.md): 0 done, 1 failed, 2 usage (a flag or argument the
command cannot use), 3 verification failed (``verify``), 130 interrupted.

The errors the library raises carry hints for the operator's users (a CRD
field, a pull secret); :data:`CLI_HINTS` says the same to a command-line user
(a flag, ``docker login``).  Nothing printed here may hold a credential: the
library's messages never do, and what comes from elsewhere passes through
:func:`redact`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
from collections.abc import Callable
from typing import Final, TextIO

from logicbundle.errors import LogicBundleError

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_VERIFICATION_FAILED: Final = 3
EXIT_INTERRUPTED: Final = 130


class FlagError(LogicBundleError):
    """Flags that do not go together, or a flag's value the command cannot use (exit 2)."""

    reason = "InvalidUsage"


class ClusterUnreachableError(LogicBundleError):
    """The API server did not answer (down, unreachable, or TLS failed)."""

    reason = "ClusterUnreachable"


_REGISTRY_FLAGS: Final = (
    "a registry that speaks plain HTTP needs --insecure; a private CA needs --ca-file"
)
_REGISTRY_LOGIN: Final = (
    "Log in with `docker login HOST` (or podman/oras/helm registry login): credentials come "
    "from --registry-config, $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or "
    "~/.docker/config.json, with their credHelpers and credsStore."
)

CLI_HINTS: Final = {
    # Reasons of logicbundle.oci's errors, whose own hints speak of pull secrets
    # and CRD fields (spec.source.insecure) to the operator's users.
    "RegistryUnavailable": "Check the registry's address and that it is up; "
    + _REGISTRY_FLAGS
    + ".",
    "TLSVerificationFailed": "If the registry uses a private CA, pass its PEM bundle with "
    "--ca-file; if it speaks plain HTTP (WRONG_VERSION_NUMBER), pass --insecure.",
    "InsecureTransportRefused": "Plain HTTP needs --insecure, and covers the registry's own "
    "host only; a token service elsewhere must use HTTPS.",
    "AuthenticationFailed": _REGISTRY_LOGIN,
    "AccessDenied": "The registry knows the credentials but refuses this repository to them; "
    "check the account's permissions. " + _REGISTRY_LOGIN,
    "ArtifactNotFound": "Check the registry, repository, tag or digest "
    "(`logicbundle inspect REF`).",
}
"""What to do, said to a command-line user, by the error's ``reason``."""

CLI_WORDS: Final = (
    # The library's words for the operator's users -> the flags that do the same here.
    ("spec.verify.keyless.trustedRootRef", "--trusted-root"),
    ("spec.verify.trustedRoot", "--trusted-root"),
    ("spec.verify.keyless (issuer + subject or subjectRegex)", "--identity or --identity-regex "
     "with --issuer"),
    ("spec.verify.keyless", "--identity/--identity-regex with --issuer"),
    ("spec.verify.keys", "--key"),
    ("the ConfigMap/Secret volume that holds trusted_root.json", "the --trusted-root file"),
    ("spec.source.insecure", "--insecure"),
    ("insecure: true", "--insecure"),
    ("the pull secret (kubernetes.io/dockerconfigjson)", "your registry login"),
    ("the pull secret", "your registry login (docker login, or --registry-config)"),
    ("; this is retried later", ""),
    (" this is retried later.", ""),
)  # fmt: skip
"""Phrases of library messages and hints that name CRD fields, and their CLI equivalents."""


def speak_cli(text: str) -> str:
    """``text`` with the CRD's words for a setting replaced by the command line's flags."""
    for crd, cli in CLI_WORDS:
        text = text.replace(crd, cli)
    return text


def cli_hint(error: LogicBundleError) -> str | None:
    """What a command-line user should do about ``error`` (None: nothing to add)."""
    hint = CLI_HINTS.get(error.reason, error.hint)
    return speak_cli(hint) if hint else None


_SECRETS: Final = (
    # userinfo in URLs: https://user:password@host
    (re.compile(r"(?<=://)[^/@\s]+@"), "***@"),
    # query strings (signed URLs, tokens)
    (re.compile(r"\?[A-Za-z0-9_.~-]+=[^\s'\")]*"), "?***"),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    # JWTs (service-account and OIDC tokens)
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***"),
    # password=..., token: ...
    (
        re.compile(r"(?i)\b(password|passwd|secret|token)(\s*[=:]\s*)[^\s,;'\"]+"),
        r"\1\2***",
    ),
)


def redact(text: str) -> str:
    """``text`` without what looks like a credential (URL userinfo, query strings, tokens)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _connection_reason(reason: object) -> str:
    """The short cause of a connection failure: refused, timed out, TLS, name resolution."""
    text = str(reason)
    for marker, said in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate verification failed"),
        ("Name or service not known", "unknown host name"),
        ("nodename nor servname", "unknown host name"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
    ):
        if marker in text:
            return said
    return type(reason).__name__ if isinstance(reason, BaseException) else _one_line(text)


def _from_urllib3(exc: BaseException) -> LogicBundleError | None:
    """The Kubernetes client's connection errors (urllib3), as one sentence."""
    module = type(exc).__module__
    if not module.startswith("urllib3"):
        return None
    pool = getattr(exc, "pool", None)
    where = ""
    if pool is not None:
        where = f" at {getattr(pool, 'scheme', 'https')}://{pool.host}:{pool.port}"
    reason = getattr(exc, "reason", None) or exc
    return ClusterUnreachableError(
        f"cannot reach the API server{where}: {_connection_reason(reason)}",
        hint="Is the cluster up and is this the right one? Check --kubeconfig, --context "
        "and `kubectl cluster-info`.",
    )


def _from_kubernetes(exc: BaseException) -> LogicBundleError | None:
    """An ``ApiException`` a command did not expect, as the status line kubectl would print."""
    if type(exc).__name__ != "ApiException" or not type(exc).__module__.startswith("kubernetes"):
        return None
    status = getattr(exc, "status", None)
    hint = None
    if status in (401, 403):
        hint = "Check your credentials and RBAC (`kubectl auth can-i`)."
    reason = _one_line(str(getattr(exc, "reason", "") or ""))
    return LogicBundleError(f"the API server answered {status} {reason}".strip(), hint=hint)


def _from_kubeconfig(exc: BaseException) -> LogicBundleError | None:
    """The Kubernetes client's ``ConfigException``: no kubeconfig, and not in a pod."""
    if type(exc).__name__ != "ConfigException" or not type(exc).__module__.startswith("kubernetes"):
        return None
    return ClusterUnreachableError(
        f"no cluster to talk to: {_one_line(str(exc))}",
        hint="Set $KUBECONFIG (or write ~/.kube/config), or run it in a pod.",
    )


def _from_os(exc: BaseException) -> LogicBundleError | None:
    if not isinstance(exc, OSError) or exc.strerror is None:
        return None
    name = exc.filename
    if name is None:
        return LogicBundleError(exc.strerror)
    return LogicBundleError(f"{name}: {exc.strerror}")


def as_error(exc: BaseException) -> tuple[LogicBundleError, bool]:
    """``exc`` as the error to print, and whether it was expected (no ``-v`` suggestion)."""
    if isinstance(exc, LogicBundleError):
        return exc, True
    for convert in (_from_urllib3, _from_kubernetes, _from_kubeconfig, _from_os):
        converted = convert(exc)
        if converted is not None:
            return converted, True
    message = redact(_one_line(str(exc)))
    return LogicBundleError(
        f"unexpected {type(exc).__name__}" + (f": {message}" if message else "")
    ), False


def exit_code(exc: LogicBundleError) -> int:
    """The exit code the docs promise for ``exc``."""
    return EXIT_USAGE if isinstance(exc, FlagError) else EXIT_FAILURE


def report(exc: BaseException, *, verbose: bool, stream: TextIO | None = None) -> int:
    """Print ``exc`` as ``error: ...`` (and ``Hint: ...``); return its exit code.

    With ``verbose`` the traceback comes first, for the curious and for bug reports.
    """
    out = stream or sys.stderr
    error, expected = as_error(exc)
    if verbose:
        traceback.print_exception(exc, file=out)
    hint = cli_hint(error)
    if not expected and not verbose:
        hint = "Run again with -v for the traceback, and report it."
    print(f"error: {speak_cli(redact(error.message))}", file=out)
    if hint:
        print(f"Hint: {hint}", file=out)
    return exit_code(error)


def run(
    func: Callable[[argparse.Namespace], int], args: argparse.Namespace, *, verbose: bool
) -> int:
    """Run a sub-command; every failure becomes :func:`report`'s line and exit code."""
    try:
        return int(func(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # the one place every failure is reported
        return report(exc, verbose=verbose)


def verbosity_options() -> argparse.ArgumentParser:
    """``-v/--verbose`` as a parent parser, so it works after the sub-command too.

    Its default is left out of the namespace, so a sub-command's parser does not
    overwrite a ``-v`` the top-level parser read.
    """
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at debug level and show the traceback of a failure",
    )
    return parent


def configure_logging(*, verbose: bool, daemon: bool, fmt: str) -> None:
    """Debug with ``-v``; else info for the daemons, warnings for the user commands.

    A user command's failure is its one ``error:`` line: the HTTP library's own
    retry warnings (which print URLs) only show with ``-v``.
    """
    level = logging.DEBUG if verbose else logging.INFO if daemon else logging.WARNING
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    if not verbose and not daemon:
        logging.getLogger("urllib3").setLevel(logging.ERROR)
