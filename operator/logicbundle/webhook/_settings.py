"""What the operator decides once and the webhook applies to every pod: image, paths, limits.

The paths are the contract with the agent (``docs/agent-config.md``); the
rest is deployment configuration the chart will set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from logicbundle import contract

AGENT_ROOT: Final = contract.DEFAULT_ROOT
"""Where the shared volume appears in the agent container (the config's ``root``)."""

TOKEN_DIR: Final = "/var/run/secrets/logicbundle"  # noqa: S105 - a path, not a secret
TOKEN_FILE: Final = f"{TOKEN_DIR}/token"
"""The projected service-account token (the config's ``tokenFile``)."""

PODINFO_DIR: Final = "/etc/logicbundle/podinfo"
ANNOTATIONS_FILE: Final = f"{PODINFO_DIR}/annotations"
"""The downward-API file of the pod's annotations (the config's ``annotationsFile``)."""

LABELS_FILE: Final = f"{PODINFO_DIR}/{contract.LABELS_FILE_NAME}"
"""The downward-API file of the pod's labels (the config's ``labelsFile``), for the slow path."""

STATE_DIR: Final = contract.STATE_DIR
"""Where the agent sees each bundle's published rollout state (the config's ``stateDir``)."""

DISTRIBUTOR_CA_FILE: Final = f"{PODINFO_DIR}/distributor-ca.crt"
"""The distributor's CA, projected from the pod annotation ``logicbundle.io/distributor-ca``."""

SOCKET_DIR: Final = "/var/run/logicbundle-sdk"
"""Where the socket volume appears, in the agent and in the application containers alike.

Its own small memory-backed emptyDir, mounted read-write: the bundles volume
is read-only to the application, and Linux refuses to bind a Unix socket on a
read-only mount (``EROFS``).  Outside every default bundle mount, so it is
never nested in the read-only one.
"""

SOCKET_FILE: Final = f"{SOCKET_DIR}/{contract.SOCKET_FILE_NAME}"
"""The SDK's socket (the agent config's ``socket``, the application's ``$LOGICBUNDLE_SOCKET``)."""

SOCKET_VOLUME_SIZE_LIMIT: Final = "1Mi"
"""The socket volume holds one socket file (no data), so its tmpfs stays tiny."""


DEFAULT_LISTEN_PORT: Final = 9901
DEFAULT_RUN_AS: Final = 65532
IMAGE_PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")
"""The non-root user and group of the logicbundle image (its Dockerfile's ``USER``)."""

INJECTION_VERSION: Final = "3"
"""Version of the injected pod shape, recorded in the ``logicbundle.io/injected`` annotation.

Bumped whenever the shape changes in a way the controller must know about
(it tells which pods to restart after an operator upgrade).  ``2``: the SDK
socket moved out of the read-only bundles volume into its own volume
(pods of version ``1`` cannot use the ``sdk`` notify mode).  ``3``: the
slow path evaluates the published rollout state (the state volume, the
labels file, the ``logicbundle.io/admitted-at`` annotation); pods of version
``2`` have none of these, so their agents follow the distributor only.
"""


POD_NAME_ENV: Final = "POD_NAME"
POD_NAMESPACE_ENV: Final = "POD_NAMESPACE"
"""The agent container's pod name and namespace, from the downward API."""

RESERVED_AGENT_ENV: Final = frozenset({contract.AGENT_CONFIG_ENV, POD_NAME_ENV, POD_NAMESPACE_ENV})
"""Environment variables of the agent container that the injection itself sets."""


def _default_resources() -> Mapping[str, Mapping[str, str]]:
    return {
        "requests": {"cpu": "10m", "memory": "32Mi"},
        "limits": {"cpu": "200m", "memory": "96Mi"},
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class InjectionSettings:
    """The operator-wide settings of the injection.

    ``distributor_url`` empty means the agents use only the slow path (the
    published rollout states mounted from ConfigMaps).  ``distributor_ca_pem``, when set, is written
    into each pod as the ``logicbundle.io/distributor-ca`` annotation and
    projected into the agent as a file, because a ConfigMap would have to
    exist in every tenant namespace; None means the system roots.
    """

    agent_image: str
    operator_namespace: str = "logicbundle-system"
    distributor_url: str = ""
    distributor_ca_pem: str | None = None
    listen_port: int = DEFAULT_LISTEN_PORT
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=_default_resources)
    run_as_user: int | None = DEFAULT_RUN_AS
    """The agent's ``runAsUser``; None leaves it to the platform (OpenShift's SCC
    assigns each namespace its own range and refuses other ids). ``runAsNonRoot``
    stays either way."""
    run_as_group: int | None = DEFAULT_RUN_AS
    """The agent's ``runAsGroup``; None leaves it to the platform, as ``run_as_user``."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """More ``(name, value)`` environment variables for the agent container (chart ``agent.env``).

    For settings the agent reads from its environment (``MALLOC_ARENA_MAX``, a proxy).
    A name the injection sets itself is refused.
    """
    token_expiration_seconds: int = 3600
    startup_failure_threshold: int = 300
    """With a one-second period: how long a pod may wait for its logic before the agent restarts."""

    def __post_init__(self) -> None:
        if not self.agent_image:
            raise ValueError("agent_image is required")
        if not 1 <= self.listen_port <= 65535:
            raise ValueError(f"listen_port {self.listen_port} is not a TCP port")
        if self.image_pull_policy not in IMAGE_PULL_POLICIES:
            raise ValueError(
                f"image_pull_policy {self.image_pull_policy!r} is not one of "
                f"{', '.join(IMAGE_PULL_POLICIES)}"
            )
        for kind, value in (("run_as_user", self.run_as_user), ("run_as_group", self.run_as_group)):
            if value is not None and value <= 0:
                raise ValueError(f"{kind} {value} is root or invalid: the agent never runs as root")
        for name, _ in self.extra_env:
            if not name or "=" in name or name in RESERVED_AGENT_ENV:
                raise ValueError(f"agent environment variable {name!r} is reserved or invalid")
        if self.token_expiration_seconds < 600:
            # The API server refuses projected tokens valid for less than ten minutes.
            raise ValueError("token_expiration_seconds must be at least 600")
