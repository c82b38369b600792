"""Manual actions requested through an annotation, and their one-line format.

Promote, abort, retry and rollback are requests, not desired state: putting
them in ``spec`` would make every GitOps tool see drift and undo them.  As in
Flux (``reconcile.fluxcd.io/requestedAt``), a request is an annotation whose
*value changes* for every new request::

    logicbundle.io/requested-action: promote@2025-05-01T12:00:00Z
    logicbundle.io/requested-action: rollback=sha256:1f2e...@1714564800

The value is ``<action>[=<argument>]@<token>``; the token (a timestamp or
any unique string) makes two identical requests distinct.  The operator acts
once per distinct value and copies it to ``status.lastHandledAction``.  The
CLI, the kubectl plugin and the Argo CD resource actions all write this
format with :func:`format_action`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from logicbundle.api.formats import DIGEST_PATTERN

ActionName = Literal["promote", "abort", "retry", "rollback"]
ACTIONS: Final[tuple[ActionName, ...]] = get_args(ActionName)

PROMOTE: Final = "promote"
"""End the current wait (a pause or a manual gate) and advance to the next stage."""

ABORT: Final = "abort"
"""Roll every pod back to the stable digest and hold (``Stalled``, reason ``Aborted``)."""

RETRY: Final = "retry"
"""Start the rollout of the current (or last rolled-back) candidate again from the first stage."""

ROLLBACK: Final = "rollback"
"""Roll every pod back to a previous stable digest (the argument, from ``status.history``)."""

_BY_NAME: Final[dict[str, ActionName]] = {name: name for name in ACTIONS}
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9:._+-]{1,64}$")
_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)


@dataclass(frozen=True, slots=True)
class RequestedAction:
    """A parsed ``logicbundle.io/requested-action`` value."""

    action: ActionName
    token: str
    argument: str | None = None

    def __str__(self) -> str:
        return format_action(self.action, token=self.token, argument=self.argument)


class InvalidActionError(ValueError):
    """The annotation's value is not ``<action>[=<argument>]@<token>``."""


def format_action(action: ActionName, *, token: str, argument: str | None = None) -> str:
    """The annotation value requesting ``action``; ``token`` makes it unique."""
    value = action if argument is None else f"{action}={argument}"
    value = f"{value}@{token}"
    parse_action(value)  # refuse to write what the operator would refuse to read
    return value


def parse_action(value: str) -> RequestedAction:
    """Parse an annotation value, or raise :class:`InvalidActionError` saying what is wrong."""
    head, sep, token = value.strip().rpartition("@")
    if not sep or not _TOKEN_RE.fullmatch(token):
        raise InvalidActionError(
            f"requested action {value!r} has no valid '@<token>' suffix; write e.g. "
            "'promote@2025-05-01T12:00:00Z' (the token makes each request unique)"
        )
    name, _, argument = head.partition("=")
    action = _BY_NAME.get(name)
    if action is None:
        raise InvalidActionError(f"unknown action {name!r}; use one of {', '.join(ACTIONS)}")
    if action == ROLLBACK:
        if not _DIGEST_RE.fullmatch(argument):
            raise InvalidActionError(
                "rollback needs a digest from status.history: 'rollback=sha256:<64 hex>@<token>'"
            )
        return RequestedAction(action=action, token=token, argument=argument)
    if argument:
        raise InvalidActionError(f"action {action!r} takes no argument")
    return RequestedAction(action=action, token=token)
