"""The rollout history in ``status.history``: one entry per rollout, newest first, bounded.

The state machine records every transition here in the same step (and so the
same status write) that makes it: a rollout opens an entry, each stage it
enters and leaves is a stage record with its times and verdict, and the
outcome closes the entry.  Nothing is kept anywhere else, so an operator
restarted at any instant finds the history exactly as the last write left it.

The history stays small whatever happens: at most
:data:`~logicbundle.api.HISTORY_LIMIT` entries, texts capped, and at most
:data:`~logicbundle.api.HISTORY_MAX_BYTES` as JSON (the oldest entries go
first; the newest, which may be the rollout in flight, always stays).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from logicbundle.api import (
    HISTORY_LIMIT,
    HISTORY_MAX_BYTES,
    HistoryEntry,
    HistoryOutcome,
    HistoryStage,
)
from logicbundle.api.v1alpha1 import (
    HISTORY_MESSAGE_LIMIT,
    HISTORY_SIGNER_LIMIT,
    HISTORY_STAGE_LIMIT,
    StageVerdict,
)

History = list[HistoryEntry]


def capped(text: str, limit: int = HISTORY_MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _signer_text(text: str | None) -> str | None:
    return capped(text, HISTORY_SIGNER_LIMIT) if text else None


def size(history: Sequence[HistoryEntry]) -> int:
    """Bytes ``history`` takes in the status, as compact JSON."""
    body = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in history]
    return len(json.dumps(body, separators=(",", ":")))


def trimmed(history: Sequence[HistoryEntry]) -> History:
    """``history`` without the entries beyond the count or the byte limit (oldest first)."""
    kept = list(history[:HISTORY_LIMIT])
    while len(kept) > 1 and size(kept) > HISTORY_MAX_BYTES:
        kept.pop()
    return kept


def _current(history: Sequence[HistoryEntry], digest: str) -> HistoryEntry | None:
    """The open entry of ``digest``'s rollout: the newest entry, when it is open."""
    if history and history[0].digest == digest and history[0].open:
        return history[0]
    return None


def signer_of(history: Sequence[HistoryEntry], digest: str) -> tuple[str | None, str | None]:
    """The signer and issuer recorded for ``digest`` last, or ``(None, None)``."""
    for entry in history:
        if entry.digest == digest and entry.signer:
            return entry.signer, entry.issuer
    return None, None


def stable_digests(history: Sequence[HistoryEntry]) -> set[str]:
    """The digests that were stable in some entry: what a ``rollback`` action may name."""
    return {entry.digest for entry in history if entry.was_stable}


def opened(
    history: Sequence[HistoryEntry],
    *,
    digest: str,
    ref: str | None,
    signer: str | None,
    issuer: str | None,
    now: datetime,
) -> History:
    """``history`` with a new rollout of ``digest`` on top, in flight, with no stage yet.

    A rollout still open on top (a ``retry`` restarting the one in flight) ends
    ``Superseded`` first: only the newest entry is ever open.
    """
    if history and history[0].open:
        history = ended(
            history,
            digest=history[0].digest,
            outcome="Superseded",
            message=f"restarted from the first stage (retry) or replaced by {digest}",
            now=now,
        )
    entry = HistoryEntry(
        digest=digest,
        ref=capped(ref, 512) if ref else None,
        outcome="Progressing",
        signer=_signer_text(signer),
        issuer=_signer_text(issuer),
        started_at=now,
    )
    return trimmed([entry, *history])


def stage_started(
    history: Sequence[HistoryEntry], *, digest: str, name: str, now: datetime
) -> History:
    """The open rollout of ``digest`` entered stage ``name`` (again, after a freeze)."""
    entry = _current(history, digest)
    if entry is None:
        return list(history)
    stages = (*entry.stages, HistoryStage(name=name, started_at=now))[-HISTORY_STAGE_LIMIT:]
    updated = entry.model_copy(update={"stages": stages, "outcome": "Progressing"})
    return trimmed([updated, *history[1:]])


def _end_stage(
    entry: HistoryEntry, verdict: StageVerdict, message: str, now: datetime
) -> HistoryEntry:
    if not entry.stages or entry.stages[-1].verdict is not None:
        return entry
    last = entry.stages[-1].model_copy(
        update={"ended_at": now, "verdict": verdict, "message": capped(message)}
    )
    return entry.model_copy(update={"stages": (*entry.stages[:-1], last)})


def stage_ended(
    history: Sequence[HistoryEntry],
    *,
    digest: str,
    verdict: StageVerdict,
    message: str,
    now: datetime,
    outcome: HistoryOutcome | None = None,
) -> History:
    """The running stage of ``digest``'s open rollout ended with ``verdict``.

    ``outcome``: the rollout's new outcome as well (``Frozen``); None keeps it.
    """
    entry = _current(history, digest)
    if entry is None:
        return list(history)
    updated = _end_stage(entry, verdict, message, now)
    if outcome is not None:
        updated = updated.model_copy(update={"outcome": outcome})
    return trimmed([updated, *history[1:]])


def ended(
    history: Sequence[HistoryEntry],
    *,
    digest: str,
    outcome: HistoryOutcome,
    message: str,
    now: datetime,
    stage_verdict: StageVerdict = "Interrupted",
    stage_message: str = "",
    ref: str | None = None,
) -> History:
    """``digest``'s rollout reached ``outcome``; a stage still running ends with ``stage_verdict``.

    When no open entry records it (a rollout begun by an operator that kept no
    history of rollouts), a closed entry without stages is added, so the
    outcome is never lost.
    """
    entry = _current(history, digest)
    rest = list(history[1:]) if entry is not None else list(history)
    if entry is None:
        entry = HistoryEntry(digest=digest, ref=capped(ref, 512) if ref else None)
    # A failed stage says why it failed; an interrupted one leaves the why to the outcome.
    said = stage_message or (message if stage_verdict == "Failed" else "")
    entry = _end_stage(entry, stage_verdict, said, now)
    text = capped(message)
    if entry.stages and entry.stages[-1].ended_at == now and entry.stages[-1].message == text:
        text = ""  # the stage that just ended says it: written once
    update: dict[str, object] = {"outcome": outcome, "message": text, "ended_at": now}
    if outcome in ("Installed", "Promoted", "Restored"):
        update["promoted_at"] = now
    return trimmed([entry.model_copy(update=update), *rest])


def became_stable(
    history: Sequence[HistoryEntry],
    *,
    digest: str,
    outcome: HistoryOutcome,
    ref: str | None,
    message: str,
    now: datetime,
    signer: str | None = None,
    issuer: str | None = None,
) -> History:
    """``digest`` went to every pod at once (``Installed``, ``Restored``): a closed entry."""
    entry = HistoryEntry(
        digest=digest,
        ref=capped(ref, 512) if ref else None,
        outcome=outcome,
        message=capped(message),
        signer=_signer_text(signer),
        issuer=_signer_text(issuer),
        started_at=now,
        ended_at=now,
        promoted_at=now,
    )
    return trimmed([entry, *history])
