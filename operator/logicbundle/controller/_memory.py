"""What this process remembers of each LogicBundle between reconciles, and when it forgets.

One :class:`BundleMemory` per LogicBundle, created by its first reconcile and
dropped when its deletion is released (kopf's per-object memories are the
model): nothing about a bundle is kept anywhere else under its key, so
forgetting it is one call.  The restart ledger (:mod:`._restarts`) keeps its
charges by digest, and is told to forget at the same moment by
:meth:`~logicbundle.controller._reconcile.Runtime.forget`.

None of it is state: the resource's status is.  A memory only saves work
(a source checked a moment ago, a ConfigMap already holding the state) or
noise (a warning already logged), so a restarted operator starts with none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from logicbundle.controller._source import SourceOutcome
from logicbundle.rollout import SourceFailure

BundleKey = tuple[str, str]
"""A LogicBundle's namespace and name."""


@dataclass(frozen=True, kw_only=True)
class SourceCheck:
    """The last check of a bundle's source: for which generation, when, and what it found."""

    generation: int
    checked_at: float
    """On the runtime's (monotonic) clock."""
    outcome: SourceOutcome | None
    """What the last check that got an answer found (kept across failed checks)."""
    failure: SourceFailure | None = None
    """Why this check failed (a registry down, a missing Secret); None: it got an answer."""
    failures: int = 0
    """How many checks of this generation in a row failed (the backoff's exponent)."""


@dataclass
class BundleMemory:
    """What this process remembers of one LogicBundle."""

    source: SourceCheck | None = None
    """None: not checked since this process started."""
    warning: str | None = None
    """The last warning logged or posted, so that a repeated one is not."""
    written: Mapping[str, Any] | None = None
    """The object as our last status patch returned it (see ``_reconcile._freshest``)."""
    published: str | None = None
    """The state text its ConfigMap holds, as this process wrote it."""
    pod_reports: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """Per pod name, the snapshot the last reconcile read and the report it made of it
    (``_reconcile._pod_reports``)."""
    told_leaks: dict[tuple[str, str], None] = field(default_factory=dict)
    """``(LogicBundle uid, digest)`` of the leaks a ``VersionLeak`` event already named
    (insertion-ordered, bounded: :mod:`._leaks`)."""

    def note_warning(self, message: str) -> bool:
        """Remember ``message`` as the last warning; True when it differs from the one before."""
        if self.warning == message:
            return False
        self.warning = message
        return True


class BundleMemories:
    """Every LogicBundle's memory, by key: created on first use, dropped by :meth:`forget`."""

    def __init__(self) -> None:
        self._memories: dict[BundleKey, BundleMemory] = {}

    def get(self, key: BundleKey) -> BundleMemory:
        """The bundle's memory, empty when it is the first time it is asked for."""
        memory = self._memories.get(key)
        if memory is None:
            memory = self._memories[key] = BundleMemory()
        return memory

    def forget(self, key: BundleKey) -> None:
        """The LogicBundle is gone: drop its memory (nothing when there is none)."""
        self._memories.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._memories

    def referenced_digests(self) -> set[str]:
        """Every digest a remembered bundle may still assign: what the cache must keep.

        Stable, candidate, the last resolved digest and every digest of the
        history (a rollback's target), from the status as last written, and
        the digest the last source check found.
        """
        found: set[str] = set()
        for memory in self._memories.values():
            if memory.source is not None and memory.source.outcome is not None:
                found.add(memory.source.outcome.digest)
            status = (memory.written or {}).get("status") or {}
            for field_name in ("stableDigest", "candidateDigest", "resolvedDigest"):
                if isinstance(status.get(field_name), str):
                    found.add(status[field_name])
            for entry in status.get("history") or ():
                if isinstance(entry, Mapping) and isinstance(entry.get("digest"), str):
                    found.add(entry["digest"])
        return found

    def __len__(self) -> int:
        return len(self._memories)
