"""Test seams: named points in a reconcile where an end-to-end test can stop the operator.

For tests only; nothing in production sets them (the chart never does, and a
unit test checks it).  ``LOGICBUNDLE_OPERATOR_TEST_PAUSE`` is a
comma-separated list of point names and ``LOGICBUNDLE_OPERATOR_TEST_PAUSE_DIR``
a directory, both read once from the process's environment at import: reaching
a listed point, the reconcile writes ``<dir>/<point>`` (holding
``namespace/name`` of the LogicBundle, written whole through a rename) and
then waits for good, so the test can ``kill -9`` the operator at exactly that
point.  Only that bundle's reconcile waits: the event loop, the distributor
and the other bundles go on, as they would in a process killed a moment later.
A waiting reconcile is cancelled like any other when the operator stops.

Unset (production), a point costs one look-up in an empty set.  The directory
must exist for a point to stop (as with the agent's seams,
:mod:`logicbundle.agent._seams`); an unknown point name is refused at import,
so a misspelt test cannot pass without ever pausing.

Points, in the order of a reconcile (:mod:`._reconcile`):

``analysis``
    the analysis was queried and judged; its verdict is not written yet.
``rollback``
    the rollout core decided a rollback (or abort); nothing of it is written
    yet: the stored status still has the candidate in flight.
``status-written``
    a status that changes the published state is stored; the state is not
    yet published by this reconcile: the state ConfigMap (the agents' slow
    path) is behind the status.  (This process's distributor follows the
    stored status through the watch as well, as every replica does.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Final

PAUSE_ENV: Final = "LOGICBUNDLE_OPERATOR_TEST_PAUSE"
PAUSE_DIR_ENV: Final = "LOGICBUNDLE_OPERATOR_TEST_PAUSE_DIR"
POINTS: Final = ("analysis", "rollback", "status-written")


def _points(value: str) -> frozenset[str]:
    points = frozenset(p.strip() for p in value.split(",") if p.strip())
    unknown = sorted(points - set(POINTS))
    if unknown:
        raise ValueError(
            f"{PAUSE_ENV} names unknown points {', '.join(unknown)} (known: {', '.join(POINTS)})"
        )
    return points


_PAUSE: Final = _points(os.environ.get(PAUSE_ENV, ""))
_PAUSE_DIR: Final = os.environ.get(PAUSE_DIR_ENV)


def enabled() -> tuple[str, ...]:
    """The points this process stops at (empty in production), for a warning at start-up."""
    return tuple(p for p in POINTS if p in _PAUSE) if _PAUSE_DIR else ()


async def reached(point: str, *, namespace: str, name: str) -> None:
    """Stop here for good when ``point`` is listed (tests only); return at once otherwise."""
    if point in _PAUSE and _leave_marker(point, f"{namespace}/{name}"):
        await asyncio.Event().wait()


def _leave_marker(point: str, bundle: str) -> bool:
    """Write ``<dir>/<point>`` whole (a rename); False when there is no pause directory."""
    if not _PAUSE_DIR or not Path(_PAUSE_DIR).is_dir():
        return False
    marker = Path(_PAUSE_DIR, point)
    partial = marker.with_name(f".{point}.partial")
    partial.write_text(bundle)
    partial.replace(marker)
    return True
