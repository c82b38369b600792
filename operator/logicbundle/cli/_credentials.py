"""Registry credentials from the user's docker config, as docker, podman and oras find them.

The file, first found of:

1. ``--registry-config FILE``, then ``$LOGICBUNDLE_REGISTRY_CONFIG`` (must exist);
2. ``$REGISTRY_AUTH_FILE`` (podman, skopeo, buildah; must exist);
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (may be absent:
   anonymous).

For a registry host, as docker decides: ``credHelpers[host]`` names a helper
for that host; else ``credsStore`` names one for every host; else the
``auths`` entry.  A helper is the program ``docker-credential-<name>``, run
with ``get`` and the server on stdin; it answers ``{"Username", "Secret"}``
(the credential-helper protocol of docker/docker-credential-helpers).  When
the helper has nothing for the host, an inline ``auths`` entry still counts.

Only the command line runs helpers: the operator and the agents never execute
programs (:mod:`logicbundle.oci._auth`).  Nothing a helper says, and no part of
a credential, reaches a message or a log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from logicbundle.oci import AuthenticationError, Credentials, DockerConfig

logger = logging.getLogger("logicbundle.cli.credentials")

HELPER_TIMEOUT: Final = 30.0
"""Seconds a credential helper may take (one may ask the user to unlock a keychain)."""

_HELPER_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DOCKER_HUB: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DOCKER_HUB_SERVER: Final = "https://index.docker.io/v1/"
_NOT_FOUND: Final = "credentials not found"

Runner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class CredentialHelperError(AuthenticationError):
    """A credential helper is missing, failed, or answered something unreadable."""

    reason = "CredentialHelperFailed"


def config_file(
    *, explicit: str | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The config file to read (see the module), or None when there is none."""
    env = os.environ if environ is None else environ
    for named in (
        explicit,
        env.get("LOGICBUNDLE_REGISTRY_CONFIG"),
        env.get("REGISTRY_AUTH_FILE"),
    ):
        if named:
            return Path(named)  # named on purpose: a missing file is an error, said later
    docker = env.get("DOCKER_CONFIG")
    home = Path(env.get("HOME") or Path.home())
    candidate = Path(docker) / "config.json" if docker else home / ".docker" / "config.json"
    return candidate if candidate.is_file() else None


def _lookup_keys(host: str) -> tuple[str, str]:
    """The key of ``host`` in the config's maps, and the server name given to a helper."""
    host = host.lower()
    if host in _DOCKER_HUB:
        return "index.docker.io", _DOCKER_HUB_SERVER
    return host, host


def _entry(mapping: object, key: str) -> Any:
    """``mapping``'s value for ``key``, its keys read as docker does (URL or host)."""
    if not isinstance(mapping, dict):
        return None
    for name, value in mapping.items():
        if not isinstance(name, str):
            continue
        host = name.strip().split("://", 1)[-1].split("/", 1)[0].rpartition("@")[2].lower()
        if host == key:
            return value
    return None


def run_helper(
    helper: str, server: str, *, source: Path, run: Runner = subprocess.run
) -> Credentials | None:
    """``docker-credential-<helper> get`` for ``server``; None when it has nothing for it."""
    if not _HELPER_NAME.match(helper):
        raise CredentialHelperError(
            f"{source}: {helper!r} is not a credential helper name",
            hint="credHelpers and credsStore name a program docker-credential-<name> on PATH.",
        )
    program = f"docker-credential-{helper}"
    try:
        done = run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise CredentialHelperError(
            f"the credential helper {program} (named in {source}) is not on PATH",
            hint=f"Install {program}, or remove it from {source}.",
        ) from None
    except subprocess.TimeoutExpired:
        raise CredentialHelperError(
            f"the credential helper {program} did not answer within {HELPER_TIMEOUT:g}s"
        ) from None
    if done.returncode != 0:
        # Helpers say "credentials not found in native keychain" on stdout; nothing else
        # of what they print is repeated (it is theirs, and could hold anything).
        if _NOT_FOUND in done.stdout.decode(errors="replace").lower():
            return None
        raise CredentialHelperError(
            f"the credential helper {program} failed for {server} (exit {done.returncode})",
            hint=f"Run `echo {server} | {program} get` to see why, or log in again.",
        )
    try:
        answer = json.loads(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise CredentialHelperError(
            f"the credential helper {program} answered something other than credentials "
            f"for {server}"
        ) from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialHelperError(
            f"the credential helper {program} answered something other than credentials "
            f"for {server}"
        )
    if username == "<token>":
        raise CredentialHelperError(
            f"the credential helper {program} holds an identity token for {server}, which "
            "logicbundle does not exchange",
            hint="Log in with a user name and a password or access token, or pass "
            "--registry-config with such an entry.",
        )
    if not username and not secret:
        return None
    logger.debug("credentials for %s from %s", server, program)
    return Credentials(username, secret)


def registry_auth(
    host: str,
    *,
    explicit: str | None = None,
    environ: Mapping[str, str] | None = None,
    run: Runner = subprocess.run,
) -> DockerConfig:
    """The credentials the user configured for ``host`` (``registry[:port]``), maybe none."""
    path = config_file(explicit=explicit, environ=environ)
    if path is None:
        return DockerConfig()
    config = DockerConfig.from_file(path)  # says which file, never what is in it
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):  # pragma: no cover - from_file read and parsed it
        document = {}
    key, server = _lookup_keys(host)
    helper = _entry(document.get("credHelpers"), key)
    store = document.get("credsStore")
    if helper is None and isinstance(store, str) and store:
        helper = store
    credentials = None
    if isinstance(helper, str) and helper:
        credentials = run_helper(helper, server, source=path, run=run)
    if credentials is None:
        credentials = config.credentials_for(key)
    if credentials is None:
        return config
    return DockerConfig(auths={**config.auths, host.lower(): credentials})
