"""Registry credentials and the auth challenge grammar.

Credentials come from a dockerconfigjson document (a Kubernetes
``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson`` value, or a
``config.json`` file) because that is what every registry and Kubernetes
pull secret already uses.  Credential helpers (``credsStore``) are not run:
the operator and the agents never execute external programs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from logicbundle.oci._errors import AuthenticationError


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or access token) for one registry.

    ``repr`` never shows the password, so credentials can sit in objects that
    end up in logs or tracebacks.
    """

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _normalise_host(key: str) -> str:
    """Reduce a dockerconfig ``auths`` key (often a URL) to ``host[:port]``."""
    host = key.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    return host.rpartition("@")[2].lower()


@dataclass(frozen=True)
class DockerConfig:
    """Credentials per registry host, read from a dockerconfigjson document."""

    auths: Mapping[str, Credentials] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, content: str | bytes) -> DockerConfig:
        """Read a dockerconfigjson document (the Secret's ``.dockerconfigjson`` value)."""
        try:
            document = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            # Never echo the content: it is a secret.
            raise AuthenticationError(
                "the registry credentials are not valid JSON",
                hint="The pull secret must be of type kubernetes.io/dockerconfigjson "
                "holding a {'auths': {...}} document.",
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("auths", {}), dict):
            raise AuthenticationError(
                "the registry credentials have no 'auths' object",
                hint="Create the secret with `kubectl create secret docker-registry`.",
            )
        auths: dict[str, Credentials] = {}
        for key, entry in document.get("auths", {}).items():
            if not isinstance(key, str) or not isinstance(entry, dict):
                continue
            credentials = _entry_credentials(key, entry)
            if credentials is not None:
                auths[_normalise_host(key)] = credentials
        return cls(auths=auths)

    @classmethod
    def from_file(cls, path: str | Path) -> DockerConfig:
        """Read a dockerconfigjson file such as ``~/.docker/config.json``."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise AuthenticationError(
                f"cannot read registry credentials from {path}: {exc.strerror}",
                hint="Check the path and the file's permissions.",
            ) from None
        return cls.from_json(content)

    def credentials_for(self, registry: str) -> Credentials | None:
        """The credentials for *registry* (``host[:port]``), if any."""
        return self.auths.get(registry.lower())


def _entry_credentials(key: str, entry: Mapping[str, object]) -> Credentials | None:
    username = entry.get("username")
    password = entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError(
                f"the 'auth' field for registry {_normalise_host(key)} is not base64 "
                "of user:password",
                hint="Recreate the pull secret.",
            ) from None
        user, colon, secret = decoded.partition(":")
        if not colon:
            raise AuthenticationError(
                f"the 'auth' field for registry {_normalise_host(key)} has no ':' "
                "between user and password",
                hint="Recreate the pull secret.",
            )
        return Credentials(user, secret)
    return None


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header."""

    scheme: str
    params: Mapping[str, str]


_PARAM_RE: Final = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?'
)


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` (or ``Basic realm=...``)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if not match or match.end() == position:
            break
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return Challenge(scheme=scheme.lower(), params=params)
