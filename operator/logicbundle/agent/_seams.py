"""Test seams: named points in a swap where a test can stop the agent (to kill it there).

``LOGICBUNDLE_AGENT_TEST_PAUSE`` is a comma-separated list of step names and
``LOGICBUNDLE_AGENT_TEST_PAUSE_DIR`` a directory: reaching a listed step, the
agent creates ``<dir>/<step>`` and blocks that thread for good, so an
end-to-end test can ``kill -9`` it at exactly that step.  In-process tests
set :data:`hook` instead.  Unset (production), a step costs one set look-up.

Steps, in swap order: ``manifest-written``, ``layer-half-read``, ``unpacked``,
``symlink-created``, ``swapped``, ``acked``, ``deleting``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

PAUSE_ENV: Final = "LOGICBUNDLE_AGENT_TEST_PAUSE"
PAUSE_DIR_ENV: Final = "LOGICBUNDLE_AGENT_TEST_PAUSE_DIR"
STEPS: Final = (
    "manifest-written",
    "layer-half-read",
    "unpacked",
    "symlink-created",
    "swapped",
    "acked",
    "deleting",
)

_PAUSE: Final = frozenset(s for s in os.environ.get(PAUSE_ENV, "").split(",") if s)
_PAUSE_DIR: Final = os.environ.get(PAUSE_DIR_ENV)

hook: Callable[[str], None] | None = None
"""Called at every step when set (unit tests)."""


def step(name: str) -> None:
    if hook is not None:
        hook(name)
    if name in _PAUSE and _PAUSE_DIR:
        Path(_PAUSE_DIR, name).write_text(str(os.getpid()))
        threading.Event().wait()
