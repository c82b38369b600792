"""The media types of the bundle artifact, named once for the whole project.

Every other part (the registry client, the signer, the CLI, the agent) imports
these constants from :mod:`logicbundle.bundle`; a media type spelled anywhere
else is a bug.
"""

from __future__ import annotations

from typing import Final

ARTIFACT_TYPE: Final = "application/vnd.logicbundle.bundle.v1"
"""``artifactType`` of the OCI image manifest of a bundle."""

CONFIG_MEDIA_TYPE: Final = "application/vnd.logicbundle.bundle.config.v1+json"
"""Media type of the config blob, which holds the bundle manifest as JSON."""

LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
"""Media type of the single layer, the gzip-compressed tar of the bundle's files."""
