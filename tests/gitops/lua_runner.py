"""Run logicbundle's Argo CD Lua the way Argo CD runs it, for any ``LogicBundle`` object.

Reusable on purpose: the unit tests feed it statuses produced by the real
state machine, and the end-to-end suite feeds it objects captured from the
live API server (``kubectl get lb NAME -o json``), with the same calls::

    from tests.gitops.lua_runner import action, discovery, health

    status, message = health(obj)              # ("Healthy", "Succeeded: ...")
    patched = action("promote", obj)           # the object Argo CD would patch with
    offered = discovery(obj)                   # {"promote": {"disabled": False, ...}, ...}

This is the fast, in-process copy for the unit tests. The e2e suite runs the
same scripts in Argo CD's own ``util/lua`` (gopher-lua, ``e2e/harness/argolua``)
and checks that the two agree (``e2e/suites/test_argocd_gopher_lua.py``).

What is reproduced from Argo CD (``util/lua/lua.go``, gopher-lua, Lua 5.1):

* a fresh interpreter per call, Lua 5.1, with only the base, table and
  package libraries, and a "safe" ``os`` holding ``time`` and ``date`` that
  only ``require("os")`` reaches (the global ``os`` is nil, as in Argo CD's
  sandbox for argocd-cm scripts); no string library and no string methods,
  so a script that would fail in Argo CD fails here too;
* the object as the global ``obj``, JSON-shaped: objects become tables,
  arrays 1-based sequences, ``null`` is nil;
* the script's return value converted back as gopher-json does (a table
  with keys 1..n is an array; an empty table is an array, and an empty
  array where the input had an object is turned back into an object, as
  Argo CD's ``cleanReturnedObj`` does);
* a health status outside Argo CD's set becomes ``Unknown``.

``now`` (seconds since the epoch) pins ``os.time()`` and ``os.date()`` for
reproducible tokens; by default they read the real clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from lupa import lua51  # type: ignore[import-untyped]

from logicbundle.gitops import argocd

VALID_HEALTH: Final = ("Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing")
"""The health statuses Argo CD accepts from a Lua check."""

_SANDBOX: Final = """
local time, date, now = os.time, os.date, ...
debug.setmetatable("", nil)            -- no string methods: Argo CD opens no string library
string, math, io, debug, coroutine = nil, nil, nil, nil, nil
local safe = {}
if now == nil then
  safe.time, safe.date = time, date
else
  safe.time = function(t) if t == nil then return now end return time(t) end
  safe.date = function(f, t) return date(f, t or now) end
end
-- util/lua registers its safe os under the table library's name, so the global
-- os is nil and os.time/os.date are reached only through require("os").
os = nil
table.time, table.date = safe.time, safe.date
for name in pairs(package.loaded) do
  if name ~= "_G" and name ~= "table" and name ~= "package" then package.loaded[name] = nil end
end
package.loaded.os = safe
package.preload, package.loaders = {}, {function() return nil end}
"""


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        table = runtime.table()
        for key, item in value.items():
            if item is not None:
                table[str(key)] = _to_lua(runtime, item)
        return table
    if isinstance(value, list | tuple):
        table = runtime.table()
        for index, item in enumerate(value, start=1):
            table[index] = _to_lua(runtime, item)
        return table
    return value


def _from_lua(value: Any) -> Any:
    if lua51.lua_type(value) != "table":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value
    items = dict(value.items())
    if all(isinstance(key, int) for key in items) and sorted(items) == list(
        range(1, len(items) + 1)
    ):
        return [_from_lua(items[index]) for index in range(1, len(items) + 1)]
    return {str(key): _from_lua(item) for key, item in items.items()}


def _clean(new: Any, old: Any) -> Any:
    """Argo CD's ``cleanReturnedObj``: an empty table that was an object stays an object."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {key: _clean(item, old.get(key)) for key, item in new.items()}
    if isinstance(new, list) and isinstance(old, dict) and not new:
        return old
    if isinstance(new, list) and isinstance(old, list):
        return [_clean(item, old[i] if i < len(old) else None) for i, item in enumerate(new)]
    return new


def run(script: str, obj: Mapping[str, Any], *, now: int | None = None) -> Any:
    """Run ``script`` with ``obj`` as Argo CD does and return its value as JSON-shaped Python."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_SANDBOX, now)
    runtime.globals().obj = _to_lua(runtime, obj)
    return _from_lua(runtime.execute(script))


def health(
    obj: Mapping[str, Any], *, script: str | None = None, now: int | None = None
) -> tuple[str, str]:
    """The Argo CD health ``(status, message)`` of ``obj`` from ``health.lua`` (or ``script``)."""
    result = run(script if script is not None else argocd.health_script(), obj, now=now)
    if not isinstance(result, dict):
        raise TypeError(f"expect table output from Lua script, not {result!r}")
    status = result.get("status")
    if status not in VALID_HEALTH:
        return "Unknown", "Lua returned an invalid health status"
    return str(status), str(result.get("message", ""))


def discovery(obj: Mapping[str, Any], *, now: int | None = None) -> dict[str, dict[str, Any]]:
    """The actions ``actions/discovery.lua`` offers for ``obj``: name -> settings."""
    result = run(argocd.discovery_script(), obj, now=now)
    if result == []:
        return {}
    if not isinstance(result, dict):
        raise TypeError(f"expect table output from Lua script, not {result!r}")
    return {name: value if isinstance(value, dict) else {} for name, value in result.items()}


def action(name: str, obj: Mapping[str, Any], *, now: int | None = None) -> dict[str, Any]:
    """The object ``actions/<name>/action.lua`` returns for ``obj`` (what Argo CD patches with)."""
    result = run(argocd.action_script(name), obj, now=now)
    if not isinstance(result, dict):
        raise TypeError(f"expect an object from the action, not {result!r}")
    cleaned: dict[str, Any] = _clean(result, dict(obj))
    return cleaned


def load(path: Path) -> dict[str, Any]:
    """A captured object (``kubectl get lb NAME -o json`` or ``-o yaml``) from ``path``."""
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise TypeError(f"{path} does not hold one object")
    return data
