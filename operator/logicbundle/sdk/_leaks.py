"""Whether a retired version's code is really gone, and if not, what holds it.

Hot swapping leaks when something outside a version keeps a reference into
it: a function of v1 stored in another module's registry, a thread still
running v1's code, a closure of the application that captured it.  Every
module namespace of a version holds one small :class:`Marker` (put there by
the loader before the module's code runs); the host keeps only a weak
reference to it.  The marker dies when the last namespace of the version
dies, so "is the version collected?" is one weak-reference read, whatever
the version's size.

Module namespaces sit in reference cycles with their functions, so only the
cyclic collector frees them.  After a version is released the drainer waits
a grace period; if the marker is still alive and no full collection has run
since the release, it runs one -- at most once per :data:`MIN_COLLECT_INTERVAL`
process-wide, in the drainer thread, never on a call -- and looks again.  A
version alive after that is leaked; :func:`referrers` then walks
``gc.get_referrers`` back from the marker (a few heap scans, once per leaked
version) to name the kind of referrer: ``thread``, ``module-global``,
``closure`` or ``other``.
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any, Final

MARKER_NAME: Final = "__logicbundle_version__"
"""The global every module of a loaded version holds (the version's :class:`Marker`)."""

MIN_COLLECT_INTERVAL = 30.0
"""Seconds between two full collections the SDK runs (process-wide; tests lower it)."""

_MAX_DEPTH: Final = 10
_MAX_FRONTIER: Final = 256
_MAX_REFERRERS: Final = 3
_LOOK_THROUGH: Final = (
    types.ModuleType,
    type,
    types.GeneratorType,
    types.CoroutineType,
    types.TracebackType,
    dict,
    list,
    tuple,
    set,
    frozenset,
    types.CellType,
    types.MethodType,
    staticmethod,
    classmethod,
    property,
    functools.partial,
)

REFERRER_THREAD: Final = "thread"
REFERRER_MODULE_GLOBAL: Final = "module-global"
REFERRER_CLOSURE: Final = "closure"
REFERRER_OTHER: Final = "other"


class Marker:
    """Lives exactly as long as some module namespace of one version."""

    __slots__ = ("__weakref__", "digest")

    def __init__(self, digest: str) -> None:
        self.digest = digest

    def __repr__(self) -> str:
        return f"<logicbundle version {self.digest}>"


@dataclass(frozen=True)
class Referrer:
    """What keeps a retired version alive, coarsely."""

    kind: str
    """``thread``, ``module-global``, ``closure`` or ``other``."""
    detail: str
    """Which one: the thread's name, the module, the function."""

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


class _Collections:
    """The SDK's full collections, shared by every host of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last = float("-inf")
        self.count = 0

    def since(self, moment: float, *, min_interval: float) -> float | None:
        """None once a full collection has run after ``moment`` (running one now if allowed).

        Otherwise the monotonic time at which one may run.
        """
        with self._lock:
            if self.last >= moment:
                return None
            now = time.monotonic()
            if now - self.last < min_interval:
                return self.last + min_interval
            gc.collect()
            self.last = time.monotonic()
            self.count += 1
            return None


COLLECTIONS: Final = _Collections()


@dataclass
class Watch:
    """One released version whose collection is being checked."""

    digest: str
    package: str
    marker: weakref.ref[Marker]
    released: float
    """Monotonic time of the release."""
    due: float
    """When to look next (monotonic)."""
    leaked: bool = False
    referrers: tuple[Referrer, ...] = ()

    @property
    def alive(self) -> bool:
        return self.marker() is not None


def referrers(marker: Marker, package: str) -> tuple[Referrer, ...]:
    """The outside objects that keep ``marker``'s version alive (at most three kinds)."""
    own = sys._getframe()
    live = _live_frames()
    modules = {
        id(vars(m)): name
        for name, m in list(sys.modules.items())
        if isinstance(m, types.ModuleType)
        and not (name == package or name.startswith(package + "."))
    }
    seen: set[int] = {id(marker)}
    found: dict[tuple[str, str], Referrer] = {}
    frontier: list[Any] = [marker]
    for _ in range(_MAX_DEPTH):
        if not frontier or len(found) >= _MAX_REFERRERS:
            break
        holders = gc.get_referrers(*frontier)
        following: list[Any] = []
        for obj in holders:
            if id(obj) in seen or obj is frontier or obj is following or obj is own:
                continue
            seen.add(id(obj))
            referrer = _root(obj, package=package, modules=modules, live=live)
            if referrer is not None:
                found.setdefault((referrer.kind, referrer.detail), referrer)
            elif len(following) < _MAX_FRONTIER:
                following.append(obj)
        del holders
        frontier = following
    del frontier
    if not found:
        return (Referrer(REFERRER_OTHER, f"nothing found within {_MAX_DEPTH} steps"),)
    return tuple(list(found.values())[:_MAX_REFERRERS])


def _inside(obj: Any, package: str) -> bool:
    name = getattr(obj, "__module__", None)
    return isinstance(name, str) and (name == package or name.startswith(package + "."))


def _root(
    obj: Any, *, package: str, modules: dict[int, str], live: dict[int, str]
) -> Referrer | None:
    """``obj`` as a referrer of the version, or None to look further back through it."""
    kind, detail = REFERRER_OTHER, ""
    if isinstance(obj, dict) and id(obj) in modules:
        kind, detail = REFERRER_MODULE_GLOBAL, f"a global of module {modules[id(obj)]}"
    elif isinstance(obj, types.FrameType):
        # A frame off every running stack belongs to a generator or a traceback:
        # what holds that says more.
        if id(obj) in live:
            kind, detail = REFERRER_THREAD, f"the stack of thread {live[id(obj)]}"
    elif isinstance(obj, threading.Thread):
        kind, detail = REFERRER_THREAD, f"thread {obj.name}"
    elif isinstance(obj, types.FunctionType):
        if not _inside(obj, package):
            kind, detail = REFERRER_CLOSURE, f"function {obj.__module__}.{obj.__qualname__}"
    elif not (
        isinstance(obj, _LOOK_THROUGH)
        or _inside(type(obj), package)
        or getattr(obj, "__objclass__", None) is not None  # a class's slot or descriptor
        or type(obj).__module__ != "builtins"  # an instance of some class
    ):
        detail = f"a {type(obj).__name__} object"
    return Referrer(kind, detail) if detail else None


def _live_frames() -> dict[int, str]:
    """Frame id -> thread name, for every frame on a running thread's stack."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out: dict[int, str] = {}
    me = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        name = names.get(ident, str(ident))
        current: types.FrameType | None = frame
        while current is not None:
            out[id(current)] = name
            current = current.f_back
    return out
