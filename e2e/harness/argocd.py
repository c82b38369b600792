"""logicbundle's Argo CD health check and actions, run by Argo CD's own Lua code.

``e2e/harness/argolua`` is a small Go program on
``github.com/argoproj/argo-cd/v3/util/lua`` (gopher-lua, the VM Argo CD
embeds): it is handed the ``data`` of the argocd-cm patch logicbundle ships
(``logicbundle.gitops.argocd.configmap_patch``), reads the
``resource.customizations.*`` keys into Argo CD's ``ResourceOverride`` as
Argo CD's settings do, and calls ``GetResourceHealth``,
``GetResourceActionDiscovery``/``ExecuteResourceActionDiscovery`` and
``GetResourceAction``/``ExecuteResourceAction`` on one object. So a script
that would fail in Argo CD (a library its sandbox does not open, a result it
refuses) fails here.

:func:`checked_health` also runs the in-process copy the unit tests use
(``tests/gitops/lua_runner.py``, lupa) and fails when the two disagree.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from e2e.harness import build
from logicbundle.gitops import argocd
from tests.gitops import lua_runner


class ArgoLuaError(RuntimeError):
    """Argo CD's Lua code refused the script or its result (the reason is the message)."""


def _call(args: list[str], obj: Mapping[str, Any], data: Mapping[str, str] | None = None) -> Any:
    if data is None:
        data = argocd.configmap_patch()["data"]
    proc = subprocess.run(
        [str(build.ARGOLUA.path("argolua")), *args],
        input=json.dumps({"data": data, "object": obj}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ArgoLuaError(
            proc.stderr.strip() or f"argolua {' '.join(args)}: exit {proc.returncode}"
        )
    return json.loads(proc.stdout)


def health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Argo CD's health ``(status, message)`` of ``obj``."""
    result = _call(["health"], obj)
    return str(result.get("status", "")), str(result.get("message", ""))


def discovery(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The actions Argo CD offers for ``obj``: name -> its ``ResourceAction`` fields."""
    return {item["name"]: item for item in _call(["discovery"], obj)}


def action(
    name: str, obj: Mapping[str, Any], *, data: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The object Argo CD patches ``obj`` with when action ``name`` runs.

    ``data`` replaces the argocd-cm data logicbundle ships (a test's own scripts).
    """
    impacted = _call(["action", name], obj, data)
    if len(impacted) != 1 or impacted[0].get("operation") != "patch":
        raise ArgoLuaError(f"action {name} did not return one object to patch: {impacted!r}")
    resource: dict[str, Any] = impacted[0]["resource"]
    return resource


def checked_health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """:func:`health`, after checking that the unit tests' lupa copy says the same."""
    real = health(obj)
    copy = lua_runner.health(obj)
    if real != copy:
        raise AssertionError(f"Argo CD's Lua says {real!r}, the lupa copy says {copy!r}")
    return real
