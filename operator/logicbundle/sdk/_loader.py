"""Import a bundle's code into a namespace of its own.

Each loaded version gets a synthetic package named
``_logicbundle_<bundle>_<digest12>`` whose ``__path__`` is the version
directory; the entrypoint module and everything it imports relatively live
under that package (``_logicbundle_pricing_0123456789ab.pricing``).  Two
digests of the same bundle therefore coexist, module globals and all, and
nothing is ever reloaded in place: a new digest is a new package.  No plain
module name (``pricing``) is ever put in ``sys.modules``, so bundles import
their own modules relatively (``from . import rates``).

A meta-path finder, installed once, answers only for the registered synthetic
packages.  Its loader compiles the sources itself and never reads or writes
``__pycache__``: a verified version directory stays byte-for-byte what the
agent checked, and a stray ``.pyc`` in it is never executed.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Final

PACKAGE_PREFIX: Final = "_logicbundle_"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_]")


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compile from source every time; never consult or write bytecode caches."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds modules inside registered bundle packages, and nothing else."""

    def __init__(self) -> None:
        self.roots: dict[str, str] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE_PREFIX) or path is None:
            return None
        root = self.roots.get(fullname.partition(".")[0])
        if root is None:
            return None
        for entry in path:
            if entry != root and not entry.startswith(root + "/"):
                continue
            finder = importlib.machinery.FileFinder(
                entry, (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES)
            )
            spec = finder.find_spec(fullname, target)
            if spec is None:
                continue
            if spec.loader is None and spec.submodule_search_locations:
                # A directory without __init__.py: a namespace package inside the bundle.
                namespace = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
                namespace.submodule_search_locations = list(spec.submodule_search_locations)
                return namespace
            return spec
        return None


_FINDER: Final = _BundleFinder()
_finder_lock = threading.Lock()


def _install_finder() -> None:
    with _finder_lock:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def package_name(bundle: str, digest: str) -> str:
    """The synthetic package name for ``digest`` of ``bundle``, unique in this process."""
    hexpart = digest.rpartition(":")[2].rpartition("-")[2]
    base = f"{PACKAGE_PREFIX}{_UNSAFE.sub('_', bundle)}_{_UNSAFE.sub('_', hexpart)[:12]}"
    name, generation = base, 1
    with _finder_lock:
        while name in sys.modules or name in _FINDER.roots:
            generation += 1
            name = f"{base}_g{generation}"
        _FINDER.roots[name] = ""  # reserved until registered
    return name


def import_entrypoint(package: str, root: Path, module: str) -> types.ModuleType:
    """Create ``package`` over ``root`` and import ``package.module`` from it."""
    _install_finder()
    root_str = str(root)
    pkg = types.ModuleType(package, f"logic bundle code from {root_str}")
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [root_str]
    pkg.__spec__ = spec
    pkg.__path__ = [root_str]
    pkg.__package__ = package
    with _finder_lock:
        _FINDER.roots[package] = root_str
        sys.modules[package] = pkg
    return importlib.import_module(f"{package}.{module}")


def unload(package: str) -> None:
    """Forget every module of ``package``; its objects live on while referenced."""
    with _finder_lock:
        _FINDER.roots.pop(package, None)
        prefix = package + "."
        for name in [n for n in sys.modules if n == package or n.startswith(prefix)]:
            sys.modules.pop(name, None)
