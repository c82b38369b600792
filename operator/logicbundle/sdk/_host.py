"""The host: one reference to the active version(s) of a bundle, swapped atomically.

Calls go through small proxy functions (:meth:`LogicHost.function`) that read
``host._route`` once -- a tuple ``(primary, candidate, threshold, seed)`` that
is replaced whole, never mutated -- and run the version it names to the end,
whatever happens to the route meanwhile.  The call path takes no lock.

Draining without a lock rests on one ordering, safe under the GIL: a call
first counts itself in flight on its version, *then* checks the version's
``retired`` flag; an activation first publishes the new route, *then* sets
``retired`` on the old version, *then* reads the in-flight count.  A call that
counted itself before the flag was set is seen by the drainer; one that counted
itself after sees the flag, uncounts itself and re-reads the route.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import threading
import time
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from types import ModuleType
from typing import Any, Final, Protocol, cast

from logicbundle.contract import CURRENT_LINK, MAX_LEAK_DETAIL, SPLIT_FILE
from logicbundle.sdk import _leaks, _loader, _tracing
from logicbundle.sdk._calls import make_async_proxies, make_proxies
from logicbundle.sdk._errors import (
    ActivationRefusedError,
    EntrypointError,
    InterfaceMismatchError,
    NoBundleLoadedError,
    SelfTestFailedError,
    StateImportError,
)
from logicbundle.sdk._interface import interface_hash, normalize_interface
from logicbundle.sdk._manifest import ManifestInfo, manifest_path_for, read_manifest_once
from logicbundle.sdk._stats import StatsSnapshot, VersionStats

logger = logging.getLogger("logicbundle.sdk")

SPLIT_RESOLUTION: Final = 10_000
"""Keys hash into this many slots; a weight of ``w`` percent routes ``w * 100`` of them."""

_MAX_SPLIT_BYTES: Final = 4096

STEP_PAUSE_SECONDS: Final = 20e-6
"""A real sleep before each step of an activation, so that the request threads
waiting for the GIL get it: none waits behind more than one step (at most about
0.3 ms of Python).  Without it the activating thread keeps the GIL through its
short system calls (each hands the GIL over too briefly for a waiting thread to
wake up, and restarts that thread's 5 ms switch-interval wait), and during
back-to-back swaps requests and the drainer waited up to 100 ms (``docs/benchmarks.md``,
"Swaps without a stall").  On Linux the sleep lasts about 0.1 ms (the kernel's timer
slack); one per activation and two per version it loads."""

DEFAULT_DRAIN_TIMEOUT: Final = 30.0
DEFAULT_SELFTEST_TIMEOUT: Final = 5.0
DEFAULT_LEAK_GRACE: Final = 60.0
"""Seconds after its release within which a retired version must have been collected."""
_RETAINED_RELEASED: Final = 8
_MAX_WATCHED: Final = 256
"""Released versions whose collection is followed at once; beyond it the oldest is forgotten."""
MAX_REPORTED_LEAKS: Final = 16
"""Leaked versions listed in ``stats`` (oldest first; ``retiredAlive`` counts them all), so
that the reply stays well within the protocol's line limit."""
MAX_REFERRER_DETAIL: Final = MAX_LEAK_DETAIL
"""Characters of a referrer's ``detail`` in ``stats`` (a long qualified name is clipped)."""

HOOK_SELFTEST: Final = "selftest"
HOOK_TEARDOWN: Final = "teardown"
HOOK_EXPORT: Final = "export_state"
HOOK_IMPORT: Final = "import_state"

Event = dict[str, Any]
"""A notification for listeners (the socket pushes it to subscribed agents)."""


@dataclass(frozen=True)
class Split:
    """Route ``weight`` percent of keyed calls to ``candidate``; the rest stay on the primary."""

    candidate: str
    """The candidate's digest (``sha256:<hex>``)."""
    weight: float
    """Percentage of keys (0-100) routed to the candidate."""
    path: Path | None = None
    """The candidate's version directory; default ``<primary's .versions>/<candidate>``."""
    manifest: Path | None = None
    """The candidate's manifest; default next to its version directory."""

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 100:
            raise ValueError(f"split weight {self.weight} is not a percentage (0-100)")


@dataclass(frozen=True)
class StateHandover:
    """What happened to the state when a version was loaded."""

    outcome: str
    """``imported``, ``fresh`` (the new version declined the schema or takes no state) or
    ``none`` (nothing to hand over)."""
    schema: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Activation:
    """The result of :meth:`LogicHost.activate`: what serves now, and what it cost."""

    digest: str
    candidate: str | None
    weight: float
    changed: bool
    """False when the request asked for exactly what was already serving."""
    timings: dict[str, float]
    """Milliseconds per phase: ``compile`` (waiting for the compile worker; about 0 for a
    digest compiled before), ``load`` (manifest, import, binding), ``selftest``,
    ``state``, ``swap``, ``pause`` (the sleeps that let request threads run between
    steps), and ``total``."""
    state: dict[str, StateHandover] = field(default_factory=dict)
    """State handover per newly loaded digest."""


class _Version:
    """One loaded digest: its code, its counters, its drain state."""

    def __init__(
        self,
        *,
        digest: str,
        funcs: dict[str, Callable[..., Any]],
        obj: Any = None,
        package: str | None = None,
        path: Path | None = None,
        manifest: ManifestInfo | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self.digest = digest
        self.funcs = funcs
        self.obj = obj
        self.package = package
        self.path = path
        self.manifest = manifest
        self.stats = VersionStats()
        self.local = self.stats.local
        self.retired = False
        self.wake = wake or threading.Event()
        """Set by calls that finish on a retired version; shared with the host's drainer."""
        self.released = threading.Event()
        self.deadline = 0.0
        self.retired_at = 0.0
        self.loaded_at = time.time()
        self.released_at: float | None = None
        self.release_detail: dict[str, Any] = {}
        self.marker: weakref.ref[_leaks.Marker] | None = None
        """Alive while any module namespace of this version is (see :mod:`._leaks`)."""

    @property
    def placeholder(self) -> bool:
        return self.package is None

    def hook(self, name: str) -> Callable[..., Any] | None:
        found = getattr(self.obj, name, None)
        return found if callable(found) else None


_Route = tuple[_Version, _Version | None, int, int]


def _not_loaded(bundle: str, name: str) -> Callable[..., Any]:
    def raiser(*_args: Any, **_kwargs: Any) -> Any:
        raise NoBundleLoadedError(
            f"{bundle}.{name} was called before any version of bundle {bundle!r} was activated",
            hint="Activate a version first (LogicHost.load_current() at start-up, or wait for "
            "the agent's activation).",
        )

    return raiser


def _resolve(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _param_names(fn: Callable[..., Any]) -> list[str] | None:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _let_requests_run(timings: dict[str, float]) -> float:
    """Hand the GIL to the threads waiting for it (see :data:`STEP_PAUSE_SECONDS`)."""
    start = perf_counter_ns()
    time.sleep(STEP_PAUSE_SECONDS)
    took = _ms(start)
    timings["pause"] = round(timings.get("pause", 0.0) + took, 3)
    return took


def _ms(start_ns: int) -> float:
    return round((perf_counter_ns() - start_ns) / 1e6, 3)


class BundleFunction(Protocol):
    """A declared function of the bundle, routed to the serving version on every call.

    ``f(*args)`` runs the primary version; ``f.by_key(key, *args)`` runs the
    candidate for the sticky share of keys a split assigns to it.  Both are
    synchronous and cheap: call them from threads, or directly inside a
    coroutine (wrap slow logic in :func:`asyncio.to_thread`).
    """

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def by_key(self, key: str | bytes, /, *args: Any, **kwargs: Any) -> Any: ...


class AsyncBundleFunction(Protocol):
    """A declared ``async def`` function: ``await f(...)``, ``await f.by_key(key, ...)``.

    The call stays in flight (its version undrained) until the awaited
    coroutine finishes.  Counters are per thread: the coroutine must finish on
    the thread that started it, which is what an event loop does.
    """

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]: ...

    def by_key(
        self, key: str | bytes, /, *args: Any, **kwargs: Any
    ) -> Coroutine[Any, Any, Any]: ...


def _proxy(call: Callable[..., Any], by_key: Callable[..., Any], name: str) -> Any:
    # A plain function object with attributes: calling it costs no extra frame
    # (an instance's __call__ would).
    call.__dict__.update(by_key=by_key, name=name)
    return call


class LogicHost:
    """Hosts the versions of one Python bundle inside the application.

    ``interface`` is the interface the application was written against, in the
    manifest's JSON shape (``{"functions": {"price": {"params": [...],
    "returns": "float"}}}``); a bundle whose ``interfaceHash`` differs is
    refused.  ``root`` is the shared volume (``<root>/<name>/current`` is
    loaded by :meth:`load_current`).
    """

    def __init__(
        self,
        *,
        name: str,
        interface: Mapping[str, Any],
        root: Path | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        selftest_timeout: float = DEFAULT_SELFTEST_TIMEOUT,
        leak_grace: float = DEFAULT_LEAK_GRACE,
    ) -> None:
        self.name = name
        self.interface = dict(interface)
        self.interface_hash = interface_hash(interface)
        self._normalized = normalize_interface(interface)
        self.split_resolution = SPLIT_RESOLUTION
        self.function_names: tuple[str, ...] = tuple(self.interface.get("functions") or {})
        self.root = root
        self.drain_timeout = drain_timeout
        self.selftest_timeout = selftest_timeout
        self.leak_grace = leak_grace
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self._draining: dict[int, _Version] = {}
        self._released: deque[_Version] = deque(maxlen=_RETAINED_RELEASED)
        self._watches: deque[_leaks.Watch] = deque(maxlen=_MAX_WATCHED)
        self._counts = {"ok": 0, "refused": 0}
        self._wake = threading.Event()
        self._drainer: threading.Thread | None = None
        self._stopping = False
        self._route: _Route = (self._placeholder(), None, 0, 0)
        self._functions: dict[str, BundleFunction] = {}

    # --- calling ------------------------------------------------------------------

    def function(self, name: str) -> BundleFunction:
        """The routed proxy for the declared function ``name`` (cached; cheap to call)."""
        proxy = self._functions.get(name)
        if proxy is None:
            self._check_declared(name)
            params = self._normalized["functions"][name]["params"]
            call, by_key = make_proxies(self, name, params, SPLIT_RESOLUTION)
            proxy = cast(BundleFunction, _proxy(call, by_key, name))
            self._functions[name] = proxy
        return proxy

    def async_function(self, name: str) -> AsyncBundleFunction:
        """The routed proxy for a declared ``async def`` function ``name``."""
        self._check_declared(name)
        call, by_key = make_async_proxies(self, name)
        return cast(AsyncBundleFunction, _proxy(call, by_key, name))

    def _check_declared(self, name: str) -> None:
        if name not in self.function_names:
            raise KeyError(
                f"{name!r} is not a function of the declared interface of bundle {self.name!r} "
                f"(it declares {', '.join(self.function_names) or 'none'})"
            )

    @property
    def active_digest(self) -> str | None:
        """The digest serving unkeyed calls (and keyed calls outside the split)."""
        primary = self._route[0]
        return None if primary.placeholder else primary.digest

    @property
    def candidate_digest(self) -> str | None:
        candidate = self._route[1]
        return None if candidate is None else candidate.digest

    @property
    def weight(self) -> float:
        return self._route[2] / (SPLIT_RESOLUTION / 100)

    def route_for(self, key: str | bytes) -> str | None:
        """The digest a keyed call with ``key`` would run on now."""
        version, candidate, threshold, seed = self._route
        if candidate is not None:
            raw = key.encode() if isinstance(key, str) else key
            if zlib.crc32(raw, seed) % SPLIT_RESOLUTION < threshold:
                return candidate.digest
        return None if version.placeholder else version.digest

    # --- activation ---------------------------------------------------------------

    def load_current(self) -> Activation:
        """Activate what the agent made current (start-up, before the agent calls).

        ``<root>/<name>/current`` names the primary; while a request split is
        on, the agent's descriptor ``<root>/<name>/split.json`` names the
        candidate and its weight, and the split is restored with it -- so an
        application that restarts mid-split serves the split at once, with
        no word from the agent.  A descriptor written for another primary
        (the agent is between its two renames), or unreadable, is ignored.  A
        candidate that is refused costs the split, not the start: the primary
        alone is activated (and a refused primary raises as always).
        """
        if self.root is None:
            raise ValueError("load_current() needs the host's root (the shared volume)")
        bundle_dir = self.root / self.name
        current = (bundle_dir / CURRENT_LINK).resolve(strict=True)
        digest = digest_from_dirname(current.name)
        split = read_split_descriptor(bundle_dir, primary=digest)
        if split is not None:
            try:
                return self.activate(digest, current, split=split)
            except ActivationRefusedError as exc:
                logger.warning(
                    "bundle %s: the split to candidate %s could not be restored; serving %s "
                    "alone: %s",
                    self.name,
                    split.candidate,
                    digest,
                    exc.message,
                )
        return self.activate(digest, current)

    def activate(
        self,
        digest: str,
        path: Path | None = None,
        *,
        manifest: Path | None = None,
        split: Split | None = None,
    ) -> Activation:
        """Serve ``digest`` (and ``split.candidate`` for a share of keyed calls), or raise.

        New digests are loaded, checked against the interface, self-tested and
        given the primary's state before the route is swapped; any failure
        raises :class:`ActivationRefusedError` and leaves the route as it was.
        Versions that leave the route are drained and torn down in the
        background (see :meth:`wait_released`).
        """
        total_start = perf_counter_ns()
        timings: dict[str, float] = {}
        self._ensure_drainer()
        _let_requests_run(timings)
        with self._lock:
            old = self._route
            current = {v.digest: v for v in (old[0], old[1]) if v is not None and not v.placeholder}
            wanted: list[tuple[str, Path | None, Path | None]] = [(digest, path, manifest)]
            if split is not None and split.weight > 0 and split.candidate != digest:
                candidate_path = split.path
                if candidate_path is None and path is not None:
                    candidate_path = path.resolve().parent / split.candidate
                wanted.append((split.candidate, candidate_path, split.manifest))
            loaded: dict[str, _Version] = {}
            handovers: dict[str, StateHandover] = {}
            try:
                self._load_wanted(
                    wanted,
                    current=current,
                    serving=old[0],
                    loaded=loaded,
                    handovers=handovers,
                    timings=timings,
                )
            except ActivationRefusedError as exc:
                for version in loaded.values():
                    if version.digest not in current:
                        self._teardown(version)
                self._counts["refused"] += 1
                self._emit({"event": "refused", "digest": digest, "error": exc.diagnostics()})
                raise
            primary = loaded[digest]
            candidate = loaded.get(split.candidate) if split is not None else None
            threshold = 0
            seed = 0
            if candidate is not None and split is not None:
                threshold = round(split.weight * SPLIT_RESOLUTION / 100)
                seed = zlib.crc32(candidate.digest.encode())
            new: _Route = (primary, candidate, threshold, seed)
            changed = new[:3] != old[:3]
            swap_start = perf_counter_ns()
            if changed:
                self._route = new
                keep = {id(primary), id(candidate)}
                for gone in (old[0], old[1]):
                    if gone is not None and id(gone) not in keep:
                        self._retire(gone)
            timings["swap"] = _ms(swap_start)
            self._counts["ok"] += 1
        timings["total"] = _ms(total_start)
        result = Activation(
            digest=primary.digest,
            candidate=None if candidate is None else candidate.digest,
            weight=threshold / (SPLIT_RESOLUTION / 100),
            changed=changed,
            timings=timings,
            state=handovers,
        )
        self._emit(
            {
                "event": "activated",
                "digest": result.digest,
                "candidate": result.candidate,
                "weight": result.weight,
            }
        )
        if changed:
            _tracing.record_activation(
                bundle=self.name,
                digest=result.digest,
                candidate=result.candidate,
                packages=[v.package for v in (primary, candidate) if v is not None and v.package],
            )
        return result

    def _load_wanted(
        self,
        wanted: list[tuple[str, Path | None, Path | None]],
        *,
        current: dict[str, _Version],
        serving: _Version,
        loaded: dict[str, _Version],
        handovers: dict[str, StateHandover],
        timings: dict[str, float],
    ) -> None:
        for want_digest, want_path, want_manifest in wanted:
            if want_digest in current:
                loaded[want_digest] = current[want_digest]
                continue
            if want_path is None:
                raise ActivationRefusedError(
                    f"digest {want_digest} of bundle {self.name!r} is not loaded and "
                    "the request names no directory to load it from"
                )
            version = self._load(want_digest, want_path, want_manifest, timings)
            loaded[want_digest] = version
            start = perf_counter_ns()
            handovers[want_digest] = self._hand_over(serving, version)
            timings["state"] = timings.get("state", 0.0) + _ms(start)

    def _placeholder(self) -> _Version:
        funcs = {name: _not_loaded(self.name, name) for name in self.function_names}
        return _Version(digest="", funcs=funcs, wake=self._wake)

    def _load(
        self, digest: str, path: Path, manifest_path: Path | None, timings: dict[str, float]
    ) -> _Version:
        start = perf_counter_ns()
        directory = path.resolve()
        info = read_manifest_once(manifest_path or manifest_path_for(directory))
        if info.interface_hash != self.interface_hash:
            raise InterfaceMismatchError(
                f"bundle {self.name!r} digest {digest} implements interface "
                f"{info.interface_hash}, but the application declares {self.interface_hash}",
                hint="Build the bundle against the application's interface, or roll out the "
                "application version that declares the bundle's interface first.",
            )
        compile_start = perf_counter_ns()
        tree = _loader.compile_version(directory, digest=digest)
        compile_ms = _ms(compile_start)
        timings["compile"] = timings.get("compile", 0.0) + compile_ms
        not_load_ms = compile_ms + _let_requests_run(timings)
        package = _loader.package_name(self.name, digest)
        marker = _leaks.Marker(digest)
        try:
            module = _loader.import_entrypoint(package, tree, info.module, marker=marker)
            obj = _resolve(module, info.attribute)
        except Exception as exc:
            _loader.unload(package)
            raise EntrypointError(
                f"cannot load the entrypoint {info.module}:{info.attribute} of bundle "
                f"{self.name!r} digest {digest}: {type(exc).__name__}: {exc}",
                hint="Bundles import their own modules relatively (`from . import rates`).",
            ) from exc
        version = _Version(
            digest=digest,
            funcs={},
            obj=obj,
            package=package,
            path=directory,
            manifest=info,
            wake=self._wake,
        )
        version.marker = weakref.ref(marker)
        del marker  # only the version's namespaces hold it
        try:
            version.funcs.update(self._bind(version, module))
        except EntrypointError:
            _loader.unload(package)
            raise
        timings["load"] = timings.get("load", 0.0) + round(_ms(start) - not_load_ms, 3)
        _let_requests_run(timings)
        start = perf_counter_ns()
        try:
            self._selftest(version)
        except SelfTestFailedError:
            self._teardown(version)
            raise
        timings["selftest"] = timings.get("selftest", 0.0) + _ms(start)
        return version

    def _bind(self, version: _Version, module: ModuleType) -> dict[str, Callable[..., Any]]:
        funcs: dict[str, Callable[..., Any]] = {}
        declared = self.interface.get("functions") or {}
        for name in self.function_names:
            try:
                fn = _resolve(version.obj, name)
            except AttributeError:
                fn = None
            if not callable(fn):
                raise EntrypointError(
                    f"bundle {self.name!r} digest {version.digest} does not provide the declared "
                    f"function {name!r} on its entrypoint {module.__name__}"
                )
            expected = [p["name"] for p in (declared.get(name) or {}).get("params", ())]
            actual = _param_names(fn)
            if actual is not None and actual != expected:
                raise EntrypointError(
                    f"bundle {self.name!r} digest {version.digest}: {name}({', '.join(actual)}) "
                    f"does not match the declared parameters ({', '.join(expected)})"
                )
            funcs[name] = fn
        return funcs

    def _selftest(self, version: _Version) -> None:
        test = version.hook(HOOK_SELFTEST)
        if test is None:
            return
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(test())
            except BaseException as exc:  # reported, never propagated out of the thread
                outcome.append(exc)

        thread = threading.Thread(target=run, name=f"logicbundle-selftest-{self.name}", daemon=True)
        thread.start()
        thread.join(self.selftest_timeout)
        where = f"bundle {self.name!r} digest {version.digest}"
        if not outcome:
            raise SelfTestFailedError(
                f"the self-test of {where} did not finish within {self.selftest_timeout}s"
            )
        result = outcome[0]
        if isinstance(result, BaseException):
            raise SelfTestFailedError(
                f"the self-test of {where} failed: {type(result).__name__}: {result}",
                hint="The previous version keeps serving; fix the bundle and publish a new digest.",
            )
        if result is False:
            raise SelfTestFailedError(f"the self-test of {where} returned False")

    def _hand_over(self, source: _Version, target: _Version) -> StateHandover:
        export = None if source.placeholder else source.hook(HOOK_EXPORT)
        importer = target.hook(HOOK_IMPORT)
        if export is None:
            return StateHandover("none", detail="the serving version exports no state")
        if importer is None:
            return StateHandover("fresh", detail="the new version takes no state")
        try:
            schema, data = export()
        except Exception as exc:
            logger.warning("export_state of %s failed; starting fresh: %s", source.digest, exc)
            return StateHandover("fresh", detail=f"export_state raised {type(exc).__name__}: {exc}")
        try:
            accepted = importer(schema, data)
        except Exception as exc:
            raise StateImportError(
                f"import_state of bundle {self.name!r} digest {target.digest} raised "
                f"{type(exc).__name__}: {exc} (schema {schema})",
                hint="import_state must return False for a schema it does not understand, "
                "before changing anything.",
            ) from exc
        if accepted is False:
            return StateHandover(
                "fresh", schema=schema, detail=f"the new version declined state schema {schema}"
            )
        return StateHandover("imported", schema=schema)

    # --- retirement -----------------------------------------------------------------

    def _retire(self, version: _Version) -> None:
        version.retired = True  # after the route swap; see the module docstring
        if version.placeholder:
            return
        version.deadline = time.monotonic() + self.drain_timeout
        version.retired_at = time.monotonic()
        self._draining[id(version)] = version
        self._wake.set()

    def _ensure_drainer(self) -> None:
        if self._drainer is None or not self._drainer.is_alive():
            self._stopping = False
            self._drainer = threading.Thread(
                target=self._drain_loop, name=f"logicbundle-drain-{self.name}", daemon=True
            )
            self._drainer.start()

    def _drain_loop(self) -> None:
        """Finish retired versions as their calls end (woken by the calls) or at their deadline."""
        while True:
            self._wake.clear()
            with self._lock:
                pending = list(self._draining.values())
            now = time.monotonic()
            next_deadline: float | None = None
            for version in pending:
                inflight = version.stats.inflight()
                if inflight == 0 or now >= version.deadline:
                    self._release(version, inflight)
                elif next_deadline is None or version.deadline < next_deadline:
                    next_deadline = version.deadline
            if self._stopping and not self._draining:
                return
            due = self._check_leaks()
            if due is not None and (next_deadline is None or due < next_deadline):
                next_deadline = due
            timeout = None if next_deadline is None else max(0.0, next_deadline - now)
            self._wake.wait(timeout)

    def _release(self, version: _Version, inflight: int) -> None:
        drain_ms = round((time.monotonic() - version.retired_at) * 1000, 3)
        if inflight:
            logger.warning(
                "bundle %s digest %s: %d call(s) still in flight after %.1fs; tearing down anyway",
                self.name,
                version.digest,
                inflight,
                self.drain_timeout,
            )
        teardown_error = self._teardown(version)
        version.release_detail = {
            "drainMs": drain_ms,
            "forced": bool(inflight),
            "inflight": inflight,
            "teardownError": teardown_error,
        }
        version.released_at = time.time()
        # Keep the counters and the manifest, let go of the code: from now on only
        # something outside the SDK can keep the version alive.  (A call still in
        # flight after a forced release already holds its function.)
        version.obj = None
        version.funcs = {}
        with self._lock:
            self._draining.pop(id(version), None)
            self._released.append(version)
            if version.marker is not None and version.package is not None:
                now = time.monotonic()
                self._watches.append(
                    _leaks.Watch(
                        digest=version.digest,
                        package=version.package,
                        marker=version.marker,
                        released=now,
                        due=now + self.leak_grace,
                    )
                )
        version.released.set()
        self._emit({"event": "released", "digest": version.digest, **version.release_detail})

    def _teardown(self, version: _Version) -> str | None:
        error = None
        hook = version.hook(HOOK_TEARDOWN)
        if hook is not None:
            try:
                hook()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                logger.warning("teardown of %s digest %s: %s", self.name, version.digest, error)
        if version.package is not None:
            _loader.unload(version.package)
        return error

    def _check_leaks(self) -> float | None:
        """Judge the released versions whose grace is over; when to look next (monotonic)."""
        with self._lock:
            watches = list(self._watches)
        next_due: float | None = None
        for watch in watches:
            if watch.due <= time.monotonic():
                self._judge(watch)
            if watch.alive and (next_due is None or watch.due < next_due):
                next_due = watch.due
        with self._lock:
            for watch in [w for w in self._watches if not w.alive]:
                self._watches.remove(watch)
        return next_due

    def _judge(self, watch: _leaks.Watch) -> None:
        now = time.monotonic()
        watch.due = now + self.leak_grace
        if not watch.alive or watch.leaked:
            return
        wait = _leaks.COLLECTIONS.since(watch.released, min_interval=_leaks.MIN_COLLECT_INTERVAL)
        if wait is not None:
            watch.due = wait  # a full collection may run then
            return
        marker = watch.marker()
        if marker is None:
            return
        try:
            found = _leaks.referrers(marker, watch.package)
        except Exception as exc:  # the leak is still reported, without its referrer
            logger.exception("bundle %s: cannot tell what holds %s", self.name, watch.digest)
            found = (_leaks.Referrer(_leaks.REFERRER_OTHER, f"unknown ({type(exc).__name__})"),)
        del marker
        watch.referrers = found
        watch.leaked = True
        kinds = ", ".join(f"{r.kind} ({r.detail})" for r in found)
        logger.warning(
            "bundle %s digest %s: the retired version is still alive %.0fs after its release; "
            "held by: %s",
            self.name,
            watch.digest,
            now - watch.released,
            kinds,
        )
        self._emit(
            {
                "event": "leaked",
                "digest": watch.digest,
                "referrers": [r.to_json() for r in found],
            }
        )

    def watched(self) -> int:
        """Released versions not yet seen collected (leaked or still within their grace)."""
        with self._lock:
            return sum(1 for w in self._watches if w.alive)

    def leaks(self) -> list[_leaks.Watch]:
        """Retired versions still alive after their grace period (oldest first)."""
        with self._lock:
            return [w for w in self._watches if w.leaked and w.alive]

    def wait_released(self, digest: str, timeout: float | None = None) -> bool:
        """Wait until no version with ``digest`` is draining; False if it is still serving.

        True once every retired instance of ``digest`` is torn down (the agent
        may then delete its directory), also when it was never loaded.
        """
        with self._lock:
            route = self._route
            if any(v is not None and v.digest == digest for v in route[:2]):
                return False
            draining = [v for v in self._draining.values() if v.digest == digest]
        deadline = None if timeout is None else time.monotonic() + timeout
        for version in draining:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not version.released.wait(remaining):
                return False
        return True

    def close(self, timeout: float | None = None) -> None:
        """Retire every version (calls then raise :class:`NoBundleLoadedError`) and wait."""
        self._ensure_drainer()
        with self._lock:
            old = self._route
            self._route = (self._placeholder(), None, 0, 0)
            for version in (old[0], old[1]):
                if version is not None:
                    self._retire(version)
            draining = list(self._draining.values())
            self._stopping = True
        self._wake.set()
        for version in draining:
            version.released.wait(timeout)

    # --- reporting -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener`` with each event (activated, refused, released); returns an undo."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def _emit(self, event: Event) -> None:
        event = {"bundle": self.name, **event}
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a logicbundle listener failed on %s", event.get("event"))

    def stats_counts(self) -> dict[str, int]:
        """Activation requests so far, by result (``ok``, ``refused``)."""
        return dict(self._counts)

    def versions(self) -> list[tuple[str, str, StatsSnapshot, _Version]]:
        """``(digest, role, counters, version)`` for every version known, serving first."""
        with self._lock:
            primary, candidate, _, _ = self._route
            rows: list[tuple[str, _Version]] = []
            if not primary.placeholder:
                rows.append(("primary", primary))
            if candidate is not None:
                rows.append(("candidate", candidate))
            rows.extend(("draining", v) for v in self._draining.values())
            rows.extend(("released", v) for v in self._released)
        return [(v.digest, role, v.stats.snapshot(), v) for role, v in rows]

    def stats(self) -> dict[str, Any]:
        """A JSON-ready report of every version's counters (for the agent and for tests)."""
        versions = []
        for digest, role, snap, version in self.versions():
            entry: dict[str, Any] = {
                "digest": digest,
                "role": role,
                "version": version.manifest.version if version.manifest else None,
                "calls": snap.calls,
                "errors": snap.errors,
                "inflight": snap.inflight,
                "latency": {
                    "sumNs": snap.total_ns,
                    "p50Ns": snap.quantile_ns(0.5),
                    "p99Ns": snap.quantile_ns(0.99),
                    "buckets": [[le, n] for le, n in snap.cumulative()],
                },
                "loadedAt": version.loaded_at,
            }
            if version.released_at is not None:
                entry["releasedAt"] = version.released_at
                entry.update(version.release_detail)
            versions.append(entry)
        leaks = self.leaks()
        return {
            "bundle": self.name,
            "interfaceHash": self.interface_hash,
            "active": self.active_digest,
            "candidate": self.candidate_digest,
            "weight": self.weight,
            "activations": dict(self._counts),
            "versions": versions,
            "retiredAlive": len(leaks),
            "leaks": [
                {
                    "digest": w.digest,
                    "aliveSeconds": round(time.monotonic() - w.released, 1),
                    "referrers": [
                        {"kind": r.kind, "detail": r.detail[:MAX_REFERRER_DETAIL]}
                        for r in w.referrers
                    ],
                }
                for w in leaks[:MAX_REPORTED_LEAKS]
            ],
        }


def read_split_descriptor(bundle_dir: Path, *, primary: str) -> Split | None:
    """The split the agent described in ``<bundle_dir>/split.json`` for ``primary``, if any."""
    try:
        fd = os.open(bundle_dir / SPLIT_FILE, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as src:
            data = src.read(_MAX_SPLIT_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning(
            "bundle directory %s: the split descriptor is unreadable: %s", bundle_dir, exc
        )
        return None
    try:
        raw = json.loads(data) if len(data) <= _MAX_SPLIT_BYTES else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        logger.warning("bundle directory %s: the split descriptor is not a JSON object", bundle_dir)
        return None
    candidate, weight = raw.get("candidate"), raw.get("weight")
    if raw.get("digest") != primary:
        return None  # written for another primary: the agent is mid-swap and will tell us
    if (
        not isinstance(candidate, str)
        or not candidate.startswith("sha256:")
        or "/" in candidate
        or isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not 0 <= weight <= 100
    ):
        logger.warning(
            "bundle directory %s: the split descriptor is malformed: %r", bundle_dir, raw
        )
        return None
    return Split(candidate=candidate, weight=float(weight))


def digest_from_dirname(name: str) -> str:
    """``sha256:<hex>`` from a version directory name (``sha256:<hex>``, ``sha256-<hex>``, hex)."""
    if ":" in name:
        return name
    algorithm, dash, hexpart = name.partition("-")
    if dash:
        return f"{algorithm}:{hexpart}"
    return f"sha256:{name}"
