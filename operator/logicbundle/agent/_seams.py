"""Test seams: named points in a swap where a test can stop the agent (to kill it there).

``LOGICBUNDLE_AGENT_TEST_PAUSE`` is a comma-separated list of step names and
``LOGICBUNDLE_AGENT_TEST_PAUSE_DIR`` a directory: reaching a listed step, the
agent creates ``<dir>/<step>`` and blocks that thread for good, so an
end-to-end test can ``kill -9`` it at exactly that step.  In-process tests
set :data:`hook` instead.  Unset (production), a step costs one set look-up.

The directory must exist for a step to stop: an agent whose pause directory
is missing goes on, so one pod of many can be chosen by creating the
directory in its volume.  With ``LOGICBUNDLE_AGENT_TEST_PAUSE_ONCE`` set
(non-empty), a step whose file already exists is passed: a container
restarted by its kubelet, with the same environment, then goes on instead of
stopping at the same step again (the pause directory is on a volume that
outlives the container).

Steps, in swap order: ``manifest-written``, ``layer-half-read``, ``unpacked``,
``symlink-created``, ``swapped``, ``notifying`` (the notification is out --
the SDK's ``activate`` sent, the HTTP hook's request sent, the signal sent --
and its answer not yet read), ``acked`` (told and healthy, before the agent
records and reports it), ``deleting`` (an old version renamed aside and half
deleted).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

PAUSE_ENV: Final = "LOGICBUNDLE_AGENT_TEST_PAUSE"
PAUSE_DIR_ENV: Final = "LOGICBUNDLE_AGENT_TEST_PAUSE_DIR"
PAUSE_ONCE_ENV: Final = "LOGICBUNDLE_AGENT_TEST_PAUSE_ONCE"
STEPS: Final = (
    "manifest-written",
    "layer-half-read",
    "unpacked",
    "symlink-created",
    "swapped",
    "notifying",
    "acked",
    "deleting",
)

_PAUSE: Final = frozenset(s for s in os.environ.get(PAUSE_ENV, "").split(",") if s)
_PAUSE_DIR: Final = os.environ.get(PAUSE_DIR_ENV)
_PAUSE_ONCE: Final = bool(os.environ.get(PAUSE_ONCE_ENV))

hook: Callable[[str], None] | None = None
"""Called at every step when set (unit tests)."""


def step(name: str) -> None:
    if hook is not None:
        hook(name)
    if name in _PAUSE and _PAUSE_DIR and Path(_PAUSE_DIR).is_dir():
        marker = Path(_PAUSE_DIR, name)
        if _PAUSE_ONCE and marker.exists():
            return
        marker.write_text(str(os.getpid()))
        threading.Event().wait()
