"""Content audit of Python bundles: an AST scan for constructs a logic bundle should not need.

**This is defence in depth, not a security boundary.**  The trust root of
logicbundle is the signature: only bundles signed by an identity the
LogicBundle's policy names ever reach a pod.  The audit catches the honest
mistake and the lazy attack (a rule file that shells out, opens sockets, or
unpickles data), and it makes a reviewer look twice.  It cannot catch a
determined author: Python is dynamic, and obfuscation (``getattr`` on computed
strings, ``codecs`` tricks, code hidden in data, aliases through other
modules) evades any static scan.  Treat a clean audit as "nothing obvious",
never as "safe".

What it reports, each as a :class:`Finding` (file, line, column, rule, message):

* ``denied-import``: importing a denied module (``subprocess``, ``socket``,
  ``ctypes``, ...), or a denied name from any module (``from os import
  system``), or ``from m import *`` where ``m`` has denied names.
* ``denied-name``: any use of a denied qualified name, called or not
  (``os.system``, ``os.exec*``, ``eval``, ``pickle.loads``,
  ``getattr(os, "system")``), resolved through import aliases.
* ``dynamic-import``: ``importlib.import_module`` of anything but a literal
  name of a module inside the bundle (a relative name, or one whose first
  component is a top-level module or package of the bundle).
* ``opaque-code``: files Python can load but the scan cannot read: ``.pyc``,
  ``.pyo``, and native extensions (``.so``, ``.pyd``).
* ``syntax-error``: a ``.py`` file that does not parse (so could not be scanned).

The deny-list is data (:class:`DenyList`), and a policy (:class:`AuditPolicy`)
decides what findings mean: ``warn`` reports them, ``reject`` raises
:class:`AuditRejectedError`.  Names are resolved flow-insensitively (any
binding of an alias anywhere in a file counts), which errs towards reporting.
"""

from __future__ import annotations

import ast
import enum
import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from logicbundle.bundle._errors import AuditRejectedError

RULE_DENIED_IMPORT: Final = "denied-import"
RULE_DENIED_NAME: Final = "denied-name"
RULE_DYNAMIC_IMPORT: Final = "dynamic-import"
RULE_OPAQUE_CODE: Final = "opaque-code"
RULE_SYNTAX_ERROR: Final = "syntax-error"

_OPAQUE_SUFFIXES: Final = (".pyc", ".pyo", ".so", ".pyd")


class AuditPolicy(enum.StrEnum):
    """What findings mean."""

    WARN = "warn"
    """Report findings; the bundle is still accepted."""
    REJECT = "reject"
    """Any finding rejects the bundle."""


@dataclass(frozen=True, kw_only=True)
class DenyList:
    """What the audit reports.

    ``modules`` are module names whose import (or the import of a submodule) is
    denied.  ``names`` are :func:`fnmatch.fnmatchcase` patterns over qualified
    names; builtins are qualified as ``builtins.<name>``.  ``dynamic_importers``
    are functions whose argument must be a literal module inside the bundle.
    """

    modules: frozenset[str] = field(default_factory=frozenset)
    names: frozenset[str] = field(default_factory=frozenset)
    dynamic_importers: frozenset[str] = field(default_factory=frozenset)

    def denies_module(self, module: str) -> bool:
        """True when importing ``module`` is denied."""
        return any(module == m or module.startswith(m + ".") for m in self.modules)

    def denies_name(self, qualified: str) -> bool:
        """True when using ``qualified`` is denied."""
        return self.denies_module(qualified) or any(
            fnmatch.fnmatchcase(qualified, pattern) for pattern in self.names
        )

    def extended(
        self,
        *,
        modules: Iterable[str] = (),
        names: Iterable[str] = (),
        dynamic_importers: Iterable[str] = (),
    ) -> DenyList:
        """A copy with more entries."""
        return DenyList(
            modules=self.modules | frozenset(modules),
            names=self.names | frozenset(names),
            dynamic_importers=self.dynamic_importers | frozenset(dynamic_importers),
        )


DEFAULT_DENY_LIST: Final = DenyList(
    modules=frozenset(
        {
            "subprocess",
            "_posixsubprocess",
            "asyncio.subprocess",
            "multiprocessing",
            "pty",
            "socket",
            "_socket",
            "socketserver",
            "ctypes",
            "_ctypes",
            "cffi",
            "posix",
            "nt",
        }
    ),
    names=frozenset(
        {
            "builtins.eval",
            "builtins.exec",
            "builtins.compile",
            "builtins.__import__",
            "importlib.__import__",
            "importlib.util.spec_from_file_location",
            "importlib.machinery.SourceFileLoader",
            "importlib.machinery.SourcelessFileLoader",
            "importlib.machinery.ExtensionFileLoader",
            "runpy.*",
            "os.system",
            "os.popen",
            "os.exec*",
            "os.spawn*",
            "os.posix_spawn*",
            "os.fork",
            "os.forkpty",
            "os.startfile",
            "pickle.load",
            "pickle.loads",
            "pickle.Unpickler",
            "_pickle.*",
            "marshal.load",
            "marshal.loads",
            "shelve.open",
            "dill.*",
            "code.interact",
            "code.InteractiveInterpreter",
            "code.InteractiveConsole",
        }
    ),
    dynamic_importers=frozenset({"importlib.import_module"}),
)
"""The default deny-list; extend it with :meth:`DenyList.extended`."""


@dataclass(frozen=True, order=True)
class Finding:
    """One thing the audit reports."""

    path: str
    line: int
    column: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class AuditReport:
    """The findings of one audit, sorted by file and position."""

    findings: tuple[Finding, ...]
    files_scanned: int

    @property
    def ok(self) -> bool:
        """True when there is nothing to report."""
        return not self.findings


def _bundle_top_levels(paths: Iterable[str]) -> frozenset[str]:
    tops: set[str] = set()
    for path in paths:
        if path.endswith(".py"):
            first = path.split("/", 1)[0]
            tops.add(first.removesuffix(".py"))
    return frozenset(tops)


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str, deny: DenyList, top_levels: frozenset[str]) -> None:
        self.path = path
        self.deny = deny
        self.top_levels = top_levels
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []
        self._handled: set[int] = set()

    def report(self, node: ast.AST, rule: str, message: str) -> None:
        self.findings.append(
            Finding(
                path=self.path,
                line=getattr(node, "lineno", 0),
                column=getattr(node, "col_offset", 0),
                rule=rule,
                message=message,
            )
        )

    # -- aliases: collected first, over the whole file ------------------------------------------

    def collect_aliases(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".", 1)[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    if alias.name != "*":
                        self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    # Relative imports stay inside the bundle; mark them so they never
                    # resolve to a builtin or a denied name.
                    self.aliases[alias.asname or alias.name] = f".{alias.name}"

    def resolve(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, f"builtins.{node.id}")
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    # -- imports --------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self.deny.denies_module(alias.name):
                self.report(node, RULE_DENIED_IMPORT, f"imports denied module {alias.name!r}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        module = node.module
        if self.deny.denies_module(module):
            self.report(node, RULE_DENIED_IMPORT, f"imports from denied module {module!r}")
            return
        for alias in node.names:
            if alias.name == "*":
                if any(p.startswith(f"{module}.") for p in self.deny.names):
                    self.report(
                        node,
                        RULE_DENIED_IMPORT,
                        f"'from {module} import *' may bind denied names; import what you use",
                    )
                continue
            qualified = f"{module}.{alias.name}"
            if self.deny.denies_name(qualified):
                self.report(node, RULE_DENIED_IMPORT, f"imports denied name {qualified!r}")

    # -- uses -----------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        target = self.resolve(node.func)
        if target is not None and target in self.deny.dynamic_importers:
            self._handled.add(id(node.func))
            self._check_dynamic_import(node, target)
        elif target == "builtins.getattr" and len(node.args) >= 2:
            owner = self.resolve(node.args[0])
            attr = node.args[1]
            if (
                owner is not None
                and isinstance(attr, ast.Constant)
                and isinstance(attr.value, str)
                and self.deny.denies_name(f"{owner}.{attr.value}")
            ):
                self.report(
                    node,
                    RULE_DENIED_NAME,
                    f"uses denied name '{owner}.{attr.value}' through getattr",
                )
        self.generic_visit(node)

    def _check_dynamic_import(self, node: ast.Call, target: str) -> None:
        arg = node.args[0] if node.args else None
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            self.report(
                node,
                RULE_DYNAMIC_IMPORT,
                f"{target}() with a computed module name; only literal names of modules "
                "inside the bundle are allowed",
            )
            return
        name = arg.value
        if name.startswith(".") or name.split(".", 1)[0] in self.top_levels:
            return
        detail = " (a denied module)" if self.deny.denies_module(name) else ""
        self.report(
            node,
            RULE_DYNAMIC_IMPORT,
            f"{target}({name!r}) imports a module outside the bundle{detail}",
        )

    def visit_Name(self, node: ast.Name) -> None:
        self._check_use(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not self._check_use(node):
            self.generic_visit(node)

    def _check_use(self, node: ast.Name | ast.Attribute) -> bool:
        if not isinstance(node.ctx, ast.Load) or id(node) in self._handled:
            return False
        qualified = self.resolve(node)
        if qualified is None:
            return False
        if qualified in self.deny.dynamic_importers:
            self.report(
                node,
                RULE_DYNAMIC_IMPORT,
                f"uses {qualified} indirectly; call it with a literal module name",
            )
            return True
        if self.deny.denies_name(qualified):
            shown = qualified.removeprefix("builtins.")
            self.report(node, RULE_DENIED_NAME, f"uses denied name {shown!r}")
            return True
        return False


def _scan_python(path: str, source: bytes, deny: DenyList, tops: frozenset[str]) -> list[Finding]:
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 0
        return [
            Finding(
                path=path,
                line=line,
                column=0,
                rule=RULE_SYNTAX_ERROR,
                message=f"cannot be parsed, so cannot be audited: {exc}",
            )
        ]
    scanner = _Scanner(path, deny, tops)
    scanner.collect_aliases(tree)
    scanner.visit(tree)
    return scanner.findings


def audit_sources(
    files: Mapping[str, bytes], *, deny_list: DenyList = DEFAULT_DENY_LIST
) -> AuditReport:
    """Audit a bundle given as a mapping of bundle path -> content.

    Every ``.py`` file is parsed and scanned; opaque code files are reported;
    other files are ignored.
    """
    tops = _bundle_top_levels(files)
    findings: list[Finding] = []
    scanned = 0
    for path in sorted(files):
        if path.endswith(_OPAQUE_SUFFIXES):
            scanned += 1
            findings.append(
                Finding(
                    path=path,
                    line=0,
                    column=0,
                    rule=RULE_OPAQUE_CODE,
                    message="compiled or native code cannot be audited; ship the source",
                )
            )
        elif path.endswith(".py"):
            scanned += 1
            findings.extend(_scan_python(path, files[path], deny_list, tops))
    return AuditReport(findings=tuple(sorted(findings)), files_scanned=scanned)


def audit_directory(root: Path, *, deny_list: DenyList = DEFAULT_DENY_LIST) -> AuditReport:
    """Audit the code files of an unpacked (or to-be-packed) bundle directory.

    Links are not followed.  Reads only the files the audit looks at.
    """
    files: dict[str, bytes] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(directory)
        for name in filenames:
            if not name.endswith((".py", *_OPAQUE_SUFFIXES)):
                continue
            full = base / name
            if full.is_symlink():
                continue
            files[full.relative_to(root).as_posix()] = full.read_bytes()
    return audit_sources(files, deny_list=deny_list)


def enforce_audit(report: AuditReport, *, policy: AuditPolicy) -> AuditReport:
    """Apply ``policy`` to ``report``: return it, or raise :class:`AuditRejectedError`."""
    if policy is AuditPolicy.REJECT and report.findings:
        shown = "\n".join(f"  {f}" for f in report.findings[:20])
        more = f"\n  ... and {len(report.findings) - 20} more" if len(report.findings) > 20 else ""
        raise AuditRejectedError(
            f"the content audit found {len(report.findings)} denied construct(s):\n{shown}{more}",
            findings=report.findings,
            hint="Remove the constructs, or set the LogicBundle's audit policy to 'warn' if "
            "the signer is trusted to use them. The signature, not the audit, is the trust root.",
        )
    return report
