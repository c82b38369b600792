"""The call path: generated proxies that route, count and time each call.

This is the only code paid on every call, so it is written for CPython's
sake.  For each declared function a proxy is generated with the declared
parameter list (``def price(item, qty)``), because forwarding ``*args,
**kwargs`` costs more than the rest of the accounting together (about 200 ns
on the reference machine); parameters with defaults, which the interface does
not spell out, fall back to the generic ``*args, **kwargs`` form.  The body
reads the route once, counts the call as started on the version it picked
(in the calling thread's own counters), runs it, and files the duration in a
power-of-two bucket (:data:`logicbundle.contract.bucket_of`, a C call).  The
retired check after ``started += 1`` is what makes draining safe without a
lock (see :mod:`logicbundle.sdk._host`).

The generated source is built only from names the interface validation has
checked against ``[A-Za-z_][A-Za-z0-9_]*``.
"""

from __future__ import annotations

import inspect
import keyword
import zlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final

from logicbundle.contract import bucket_of

if TYPE_CHECKING:
    from logicbundle.sdk._host import LogicHost, _Version
    from logicbundle.sdk._stats import ThreadStats

KEY_PARAM: Final = "_logicbundle_key"

_TEMPLATE: Final = """
def {fn}({params}):
    version = host._route[0]
    try:
        stats = version.local.stats
    except AttributeError:
        stats = version.stats.register()
    stats.started += 1
    if version.retired:
        stats.started -= 1
        version.wake.set()
        return {fn}({forward})
    start = perf_counter_ns()
    try:
        return version.funcs[name]({forward})
    except Exception:
        stats.errors += 1
        raise
    finally:
        elapsed = perf_counter_ns() - start
        stats.buckets[bucket_of(elapsed)] += 1
        stats.total_ns += elapsed
        if version.retired:
            version.wake.set()


def by_key({key}, /, {params}):
    version, candidate, threshold, seed = host._route
    if candidate is not None:
        raw = {key}.encode() if {key}.__class__ is str else {key}
        if crc32(raw, seed) % resolution < threshold:
            version = candidate
    try:
        stats = version.local.stats
    except AttributeError:
        stats = version.stats.register()
    stats.started += 1
    if version.retired:
        stats.started -= 1
        version.wake.set()
        return by_key({key}, {forward})
    start = perf_counter_ns()
    try:
        return version.funcs[name]({forward})
    except Exception:
        stats.errors += 1
        raise
    finally:
        elapsed = perf_counter_ns() - start
        stats.buckets[bucket_of(elapsed)] += 1
        stats.total_ns += elapsed
        if version.retired:
            version.wake.set()
"""

_GENERIC: Final = ("*args, **kwargs", "*args, **kwargs")


def _signature(params: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """``(parameter list, forwarding argument list)`` for the declared parameters."""
    declared: list[str] = []
    forward: list[str] = []
    positional_only_done = False
    star_done = False
    for param in params:
        name, kind = param["name"], param["kind"]
        if not param["required"] or keyword.iskeyword(name) or name == KEY_PARAM:
            return _GENERIC  # a default we do not know: forward whatever was passed
        if kind != "positional-only" and not positional_only_done:
            if declared:
                declared.append("/")
            positional_only_done = True
        if kind in ("positional-only", "positional-or-keyword"):
            declared.append(name)
            forward.append(name)
        elif kind == "var-positional":
            declared.append(f"*{name}")
            forward.append(f"*{name}")
            star_done = True
        elif kind == "keyword-only":
            if not star_done:
                declared.append("*")
                star_done = True
            declared.append(name)
            forward.append(f"{name}={name}")
        else:
            declared.append(f"**{name}")
            forward.append(f"**{name}")
    if declared and not positional_only_done:
        declared.append("/")
    return ", ".join(declared), ", ".join(forward)


def make_proxies(
    host: LogicHost, name: str, params: Sequence[Mapping[str, Any]], resolution: int
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The plain and the keyed proxy for the declared function ``name``."""
    for declared, forward in (_signature(params), _GENERIC):
        fn = "call_" + name.replace(".", "_")
        source = _TEMPLATE.format(
            fn=fn,
            params=declared or "",
            forward=forward or "",
            key=KEY_PARAM,
        ).replace(", /, )", ", /)")
        namespace: dict[str, Any] = {
            "host": host,
            "name": name,
            "perf_counter_ns": perf_counter_ns,
            "crc32": zlib.crc32,
            "bucket_of": bucket_of,
            "resolution": resolution,
        }
        try:
            code = compile(source, f"<logicbundle proxy {name}>", "exec")
        except SyntaxError:
            continue  # an unusual parameter list: use the generic form
        exec(code, namespace)  # noqa: S102 - source built from validated identifiers only
        return namespace[fn], namespace["by_key"]
    raise AssertionError("the generic proxy always compiles")  # pragma: no cover


def _enter(host: LogicHost, key: str | bytes | None) -> tuple[_Version, ThreadStats]:
    """Pick the version for one call and count it as started (the async path)."""
    while True:
        version, candidate, threshold, seed = host._route
        if key is not None and candidate is not None:
            raw = key.encode() if isinstance(key, str) else key
            if zlib.crc32(raw, seed) % host.split_resolution < threshold:
                version = candidate
        try:
            stats: ThreadStats = version.local.stats
        except AttributeError:
            stats = version.stats.register()
        stats.started += 1
        if not version.retired:
            return version, stats
        stats.started -= 1
        version.wake.set()


def _leave(version: _Version, stats: ThreadStats, start: int) -> None:
    elapsed = perf_counter_ns() - start
    stats.buckets[bucket_of(elapsed)] += 1
    stats.total_ns += elapsed
    if version.retired:
        version.wake.set()


def make_async_proxies(
    host: LogicHost, name: str
) -> tuple[Callable[..., Coroutine[Any, Any, Any]], Callable[..., Coroutine[Any, Any, Any]]]:
    """Proxies for an ``async def`` function: the call is in flight until the await ends."""

    async def run(version: _Version, stats: ThreadStats, args: Any, kwargs: Any) -> Any:
        start = perf_counter_ns()
        try:
            result = version.funcs[name](*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception:
            stats.errors += 1
            raise
        finally:
            _leave(version, stats, start)

    async def call(*args: Any, **kwargs: Any) -> Any:
        version, stats = _enter(host, None)
        return await run(version, stats, args, kwargs)

    async def by_key(key: str | bytes, /, *args: Any, **kwargs: Any) -> Any:
        version, stats = _enter(host, key)
        return await run(version, stats, args, kwargs)

    return call, by_key
