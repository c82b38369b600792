"""logicbundle.agent: the in-pod reload agent (``logicbundle agent``).

It runs as a native sidecar in every opted-in pod, so it imports the standard
library only at rest (about 21 MiB of RSS without a distributor, 24 MiB with an
``https://`` one): no kopf, no Kubernetes client, no pydantic, no urllib3, no
asyncio, and no ``http.client`` or ``ssl`` unless a distributor or an HTTP hook
needs them.  It learns each bundle's target from the
distributor's long-poll (fast path) or, when the distributor cannot answer,
by evaluating the target rule of :mod:`logicbundle.contract` over the
bundle's published rollout state (a ConfigMap mounted in the agent) and the
pod's own downward-API annotations and labels (slow path).  It fetches the
digest (distributor, else the registry through ``logicbundle.oci``, imported
only then), checks every byte, unpacks with the bundle package's
hostile-input rules, swaps ``current`` with symlink + rename(2), tells the
application (SDK socket, HTTP hook, signal or nothing), confirms health and
flips back on failure.  It reports to the distributor and serves
``/healthz``, ``/readyz`` (the startup probe) and ``/metrics``.

The configuration is ``docs/agent-config.md``; the behaviour ``docs/agent.md``.
"""

from logicbundle.agent._agent import Agent, versions_from_stats
from logicbundle.agent._config import (
    AgentConfig,
    BundleSettings,
    HealthSettings,
    NotifySettings,
    load_config,
    parse_config,
)
from logicbundle.agent._errors import (
    AgentError,
    ArtifactInvalidError,
    ConfigError,
    DigestMismatchError,
    FetchError,
    NotCachedError,
    NotifyError,
    UnhealthyError,
)
from logicbundle.agent._main import main, run
from logicbundle.agent._store import BundleStore
from logicbundle.agent._targets import (
    Target,
    format_annotations,
    parse_annotations,
)
from logicbundle.agent._worker import BundleStatus
from logicbundle.contract import AGENT_CONFIG_ENV as CONFIG_ENV

__all__ = [
    "CONFIG_ENV",
    "Agent",
    "AgentConfig",
    "AgentError",
    "ArtifactInvalidError",
    "BundleSettings",
    "BundleStatus",
    "BundleStore",
    "ConfigError",
    "DigestMismatchError",
    "FetchError",
    "HealthSettings",
    "NotCachedError",
    "NotifyError",
    "NotifySettings",
    "Target",
    "UnhealthyError",
    "format_annotations",
    "load_config",
    "main",
    "parse_annotations",
    "parse_config",
    "run",
    "versions_from_stats",
]
