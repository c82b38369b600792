"""The agent's errors: each one names a CamelCase reason that lands in the agent's reports."""

from __future__ import annotations

from logicbundle.errors import LogicBundleError


class AgentError(LogicBundleError):
    """Root of the agent's errors."""

    reason = "AgentFailed"


class ConfigError(AgentError):
    """The configuration document is missing or wrong; the agent does not start."""

    reason = "InvalidAgentConfig"


class FetchError(AgentError):
    """The bytes of a digest could not be fetched (network, 404, 5xx); worth a retry later."""

    reason = "FetchFailed"
    retryable = True


class NotCachedError(FetchError):
    """The distributor does not hold the digest; fetch it from the registry instead."""

    reason = "NotCached"


class DigestMismatchError(AgentError):
    """Bytes did not hash to the digest they were fetched by: never used."""

    reason = "DigestMismatch"


class ArtifactInvalidError(AgentError):
    """The OCI manifest or the bundle manifest (config blob) breaks the format."""

    reason = "ArtifactInvalid"


class NotifyError(AgentError):
    """The application could not be told (socket, HTTP hook, signal)."""

    reason = "NotifyFailed"


class UnhealthyError(AgentError):
    """The application refused the version or did not report healthy in time."""

    reason = "Unhealthy"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
