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
packages, and it answers from the version directory's compiled tree
(:mod:`logicbundle.sdk._compile`): the list of source files and directories
the compile worker found, and their bytecode, compiled out of process so that
request threads keep the GIL during a swap.  Finding a module touches no file
system, and the finder is the last word for a registered package: a name it
does not find is a ``ModuleNotFoundError``, never passed on to the path
finder, which would run a stray ``.pyc`` or extension module from the version
directory.  No ``__pycache__`` is ever read or written: a verified version
directory stays byte-for-byte what the agent checked.

Every module of a version gets the version's :class:`~logicbundle.sdk._leaks.Marker`
as a global before its code runs (the package too), so the host can tell,
with one weak reference, whether any namespace of a retired version is still
alive (:mod:`logicbundle.sdk._leaks`).
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

from logicbundle.sdk import _compile
from logicbundle.sdk._leaks import MARKER_NAME, Marker

PACKAGE_PREFIX: Final = "_logicbundle_"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_]")


class _PrecompiledLoader(importlib.machinery.SourceFileLoader):
    """Runs the code the worker compiled; never compiles, never touches bytecode caches.

    Everything else (``get_source`` for tracebacks, resource readers) is the
    plain source loader's, reading the version directory only.
    """

    def __init__(self, fullname: str, path: str, tree: _compile.CompiledTree) -> None:
        super().__init__(fullname, path)
        self.tree = tree

    def get_code(self, fullname: str) -> types.CodeType:
        return self.tree.code(self.get_filename(fullname))

    def exec_module(self, module: types.ModuleType) -> None:
        marker = _FINDER.markers.get(module.__name__.partition(".")[0])
        if marker is not None:
            module.__dict__[MARKER_NAME] = marker
        super().exec_module(module)


class _BundleFinder(importlib.abc.MetaPathFinder):
    """Finds modules inside registered bundle packages, and nothing else."""

    def __init__(self) -> None:
        self.roots: dict[str, str] = {}
        self.trees: dict[str, _compile.CompiledTree] = {}
        self.markers: dict[str, Marker] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE_PREFIX) or path is None:
            return None
        top = fullname.partition(".")[0]
        if top not in self.roots:
            return None
        tree = self.trees.get(top)
        name = fullname.rpartition(".")[2]
        for entry in path:
            if tree is None or entry not in tree.dirs:
                continue  # reserved but not registered yet, or not a directory of this version
            spec = _spec_in(tree, fullname, f"{entry}/{name}")
            if spec is not None:
                return spec
        raise ModuleNotFoundError(
            f"No module named {fullname!r} in the version directory", name=fullname
        )


def _spec_in(
    tree: _compile.CompiledTree, fullname: str, base: str
) -> importlib.machinery.ModuleSpec | None:
    # The precedence of importlib's FileFinder: a package, then a module, then a
    # directory without __init__.py (a namespace package inside the bundle).
    is_dir = base in tree.dirs
    for origin, locations in ((f"{base}/__init__.py", [base]), (f"{base}.py", None)):
        if (locations is None or is_dir) and tree.has_source(origin):
            loader = _PrecompiledLoader(fullname, origin, tree)
            return importlib.util.spec_from_file_location(
                fullname, origin, loader=loader, submodule_search_locations=locations
            )
    if is_dir:
        namespace = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
        namespace.submodule_search_locations = [base]
        return namespace
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


def compile_version(root: Path, *, digest: str) -> _compile.CompiledTree:
    """The bytecode of every source file under ``root``, from the compile worker or its cache.

    Raises :class:`~logicbundle.sdk.CompilerUnavailableError` when it cannot
    be had; nothing is compiled in this process instead.
    """
    return _compile.code_source().tree(digest=digest, root=str(root))


def import_entrypoint(
    package: str, tree: _compile.CompiledTree, module: str, *, marker: Marker | None = None
) -> types.ModuleType:
    """Create ``package`` over the compiled version ``tree`` and import ``package.module``.

    ``marker`` becomes a global of every module of the package.
    """
    _install_finder()
    root_str = tree.root
    pkg = types.ModuleType(package, f"logic bundle code from {root_str}")
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [root_str]
    pkg.__spec__ = spec
    pkg.__path__ = [root_str]
    pkg.__package__ = package
    if marker is not None:
        pkg.__dict__[MARKER_NAME] = marker
    with _finder_lock:
        _FINDER.roots[package] = root_str
        _FINDER.trees[package] = tree
        if marker is not None:
            _FINDER.markers[package] = marker
        sys.modules[package] = pkg
    return importlib.import_module(f"{package}.{module}")


def unload(package: str) -> None:
    """Forget every module of ``package``; its objects live on while referenced."""
    with _finder_lock:
        _FINDER.roots.pop(package, None)
        _FINDER.trees.pop(package, None)
        _FINDER.markers.pop(package, None)
        prefix = package + "."
        for name in [n for n in sys.modules if n == package or n.startswith(prefix)]:
            sys.modules.pop(name, None)
