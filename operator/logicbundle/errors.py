"""The one error root of the project.

Every error the project raises on purpose derives from :class:`LogicBundleError`
and carries a message that says what failed and what to do next
(:meth:`LogicBundleError.diagnostics`).  ``retryable`` tells the controller
whether retrying can help (kopf's ``TemporaryError``) or not
(``PermanentError``), the way Flux separates waiting from stalling.
Messages must never contain secrets, tokens or credentials from URLs.
"""

from __future__ import annotations


class LogicBundleError(Exception):
    """Root of every error logicbundle raises on purpose."""

    retryable: bool = False
    """True when the same call may succeed later without a change of input."""

    reason: str = "Failed"
    """A CamelCase reason for status conditions and events."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """The message, and what to do about it when we know."""
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message

    def __str__(self) -> str:
        return self.diagnostics()
