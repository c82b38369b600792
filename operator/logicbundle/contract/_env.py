"""Environment variables the webhook sets and the in-pod code reads.

The webhook writes them into the containers it injects or amends; the agent
and the SDK read them.  Each name is defined here once and imported by all.
"""

from __future__ import annotations

from typing import Final

AGENT_CONFIG_ENV: Final = "LOGICBUNDLE_AGENT_CONFIG"
"""The agent container's configuration, as a JSON document (``docs/agent-config.md``)."""

SOCKET_ENV: Final = "LOGICBUNDLE_SOCKET"
"""The SDK socket's path, set in every application container that gets the socket volume."""

ROOT_ENV: Final = "LOGICBUNDLE_ROOT"
"""The shared volume's root, set in application containers whose bundles share one mount."""
