"""Errors of the in-application SDK.

Every refusal says what was refused and what to do next, because the agent
copies the message verbatim into its report and from there into the
``LogicBundle`` status.  ``reason`` is the CamelCase word the agent and the
operator use for events and conditions.
"""

from __future__ import annotations

from logicbundle.errors import LogicBundleError


class SdkError(LogicBundleError):
    """Root of every error the SDK raises on purpose."""

    reason = "SdkError"


class NoBundleLoadedError(SdkError):
    """A bundle function was called before any version was activated."""

    reason = "NoBundleLoaded"
    retryable = True


class ActivationRefusedError(SdkError):
    """A version was not activated; the previous one keeps serving."""

    reason = "ActivationRefused"


class ManifestError(ActivationRefusedError):
    """The bundle manifest is missing, unreadable or not a Python bundle."""

    reason = "ManifestInvalid"


class InterfaceMismatchError(ActivationRefusedError):
    """The bundle was built against another interface than the application declares."""

    reason = "InterfaceMismatch"


class EntrypointError(ActivationRefusedError):
    """The entrypoint could not be imported, or lacks a declared function."""

    reason = "EntrypointFailed"


class CompilerUnavailableError(EntrypointError):
    """The bundle's code could not be compiled out of process (the worker failed or is missing).

    Nothing is compiled in the application instead: the version is refused.  The
    reason on the agent socket stays ``EntrypointFailed``.
    """


class SelfTestFailedError(ActivationRefusedError):
    """The bundle's ``selftest()`` raised, returned False or ran past its deadline."""

    reason = "SelfTestFailed"


class StateImportError(ActivationRefusedError):
    """``import_state`` raised: the new version's state is unknown, so it is refused."""

    reason = "StateImportFailed"


class ProtocolError(SdkError):
    """A request on the agent socket is malformed."""

    reason = "BadRequest"
