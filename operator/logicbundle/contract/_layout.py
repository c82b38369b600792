"""The shared volume's layout: the names the agent writes and the SDK reads.

One bundle's directory, under the root the webhook mounts (the agent's
config ``root``, the application's ``$LOGICBUNDLE_ROOT``)::

    <root>/<bundle>/.versions/<digest>/                 one unpacked, checked version
    <root>/<bundle>/.versions/<digest>.manifest.json    its bundle manifest (config blob)
    <root>/<bundle>/current -> .versions/<digest>       swapped with rename(2)
    <root>/<bundle>/split.json                          the request split, while one is on

The agent's store (``logicbundle.agent``) owns the order of the writes; the
SDK (``logicbundle.sdk``) reads ``current``, the manifest beside it and the
split descriptor.  Each name is defined here once and imported by both.
"""

from __future__ import annotations

from typing import Final

DEFAULT_ROOT: Final = "/var/run/logicbundle"
"""Where the shared volume appears when nothing else is said (agent and SDK alike)."""

VERSIONS_DIR: Final = ".versions"
"""The directory, in a bundle's directory, of the unpacked versions, one ``<digest>/`` each."""

CURRENT_LINK: Final = "current"
"""The symlink, in a bundle's directory, to the version in force (``.versions/<digest>``)."""

SPLIT_FILE: Final = "split.json"
"""The split descriptor beside ``current``, while a request split is on.

``{"digest": <primary>, "candidate": <digest>, "weight": <0-100>}``; it counts
only while its ``digest`` is the one ``current`` names (``docs/sdk-protocol.md``).
"""

MANIFEST_SUFFIX: Final = ".manifest.json"
"""The bundle manifest beside each version: ``.versions/<digest>.manifest.json``."""

SOCKET_FILE_NAME: Final = "sdk.sock"
"""The SDK socket's file name, in the socket volume (or in the root outside a pod)."""
