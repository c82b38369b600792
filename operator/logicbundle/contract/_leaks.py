"""A leaked version as it crosses the pod boundary: SDK -> agent -> distributor -> operator.

The SDK finds a retired version still alive after its grace period and names
what holds it (:mod:`logicbundle.sdk._leaks`); the agent passes the leaks on
in its report, and the operator posts one ``VersionLeak`` event per digest.
The application is not trusted to keep these small: the agent keeps what
:func:`leaks_of` returns (a bounded list, known kinds, clipped printable
details) and the distributor refuses a report beyond the same bounds.
"""

from __future__ import annotations

import re
from typing import Any, Final

LEAK_REFERRER_KINDS: Final = ("thread", "module-global", "closure", "other")
"""What keeps a retired version alive, coarsely (anything else is reported as ``other``)."""
MAX_LEAKS_PER_BUNDLE: Final = 8
"""Leaked versions one bundle's report lists (the oldest first)."""
MAX_LEAK_REFERRERS: Final = 3
"""Referrers named per leaked version."""
MAX_LEAK_DETAIL: Final = 160
"""Characters of a referrer's detail (a thread's name, a module, a function)."""

_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


def leaks_of(raw: object) -> list[dict[str, Any]]:
    """The SDK's ``leaks`` of one bundle, bounded and cleaned for the agent's report.

    An entry whose digest is not ``sha256:<64 hex>`` is dropped; an unknown
    kind becomes ``other``; a detail loses what is not printable ASCII and is
    clipped to :data:`MAX_LEAK_DETAIL`.  Never raises.
    """
    if not isinstance(raw, list):
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in raw:
        if len(out) >= MAX_LEAKS_PER_BUNDLE:
            break
        if not isinstance(entry, dict):
            continue
        digest = entry.get("digest")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest) or digest in seen:
            continue
        seen.add(digest)
        referrers: list[dict[str, str]] = []
        found = entry.get("referrers")
        for referrer in found if isinstance(found, list) else []:
            if len(referrers) >= MAX_LEAK_REFERRERS:
                break
            if not isinstance(referrer, dict):
                continue
            kind = referrer.get("kind")
            detail = referrer.get("detail")
            referrers.append(
                {
                    "kind": kind if kind in LEAK_REFERRER_KINDS else "other",
                    "detail": _UNPRINTABLE.sub("?", detail)[:MAX_LEAK_DETAIL]
                    if isinstance(detail, str)
                    else "",
                }
            )
        out.append({"digest": digest, "referrers": referrers})
    return out
