"""The content audit: what it reports, how policies act on it, and what it cannot see."""

from __future__ import annotations

from pathlib import Path

import pytest

from logicbundle.bundle import (
    DEFAULT_DENY_LIST,
    RULE_DENIED_IMPORT,
    RULE_DENIED_NAME,
    RULE_DYNAMIC_IMPORT,
    RULE_OPAQUE_CODE,
    RULE_SYNTAX_ERROR,
    AuditPolicy,
    AuditRejectedError,
    AuditReport,
    DenyList,
    Finding,
    audit_directory,
    audit_sources,
    enforce_audit,
)

from .conftest import write_tree

CLEAN = b"""\
import json
import math
import os.path
import re
from collections import OrderedDict

from . import helpers
from .tables import LIMITS


def decide(request):
    path = os.path.join("a", "b")
    return bool(re.match("x", json.dumps(request))) and math.isfinite(LIMITS) and path
"""


def audit_one(source: str, *, deny_list: DenyList = DEFAULT_DENY_LIST) -> list[tuple[str, int]]:
    report = audit_sources(
        {"mybundle/__init__.py": b"", "mybundle/rules.py": source.encode()}, deny_list=deny_list
    )
    return [(f.rule, f.line) for f in report.findings]


def test_clean_code_has_no_findings() -> None:
    report = audit_sources({"mybundle/rules.py": CLEAN, "tables.json": b"{not python"})
    assert report.ok
    assert report.files_scanned == 1


@pytest.mark.parametrize(
    "source",
    [
        "import subprocess",
        "import subprocess as sp",
        "from subprocess import run",
        "import socket",
        "from socket import create_connection",
        "import ctypes",
        "import ctypes.util",
        "import multiprocessing.pool",
        "from os import system",
        "from os import execv as go",
        "from pickle import loads",
        "from importlib import __import__",
    ],
)
def test_importing_a_denied_module_or_name_is_reported(source: str) -> None:
    assert audit_one(source) == [(RULE_DENIED_IMPORT, 1)]


def test_a_star_import_from_a_module_with_denied_names_is_reported() -> None:
    assert audit_one("from os import *") == [(RULE_DENIED_IMPORT, 1)]
    assert audit_one("from math import *") == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nos.system('id')",
        "import os\nos.popen('id')",
        "import os\nos.execv('/bin/sh', [])",
        "import os\nos.execlpe('sh', 'sh', {})",
        "import os\nos.spawnl(0, '/bin/sh')",
        "import os\nos.posix_spawn('/bin/sh', [], {})",
        "import os\nos.fork()",
        "import os as o\no.system('id')",
        "import os\nrun = os.system",
        "import os\ngetattr(os, 'system')('id')",
        "import pickle\npickle.loads(b'')",
        "import marshal\nmarshal.loads(b'')",
        "import shelve\nshelve.open('x')",
        "import builtins\nbuiltins.eval('1')",
        "import importlib.util\nimportlib.util.spec_from_file_location('m', '/x.py')",
        "import runpy\nrunpy.run_path('/x.py')",
    ],
)
def test_using_a_denied_name_is_reported_where_it_is_used(source: str) -> None:
    assert audit_one(source) == [(RULE_DENIED_NAME, 2)]


@pytest.mark.parametrize(
    "source", ["eval('1')", "exec('x = 1')", "compile('1', 'f', 'eval')", "__import__('os')"]
)
def test_dangerous_builtins_are_reported(source: str) -> None:
    assert audit_one(source) == [(RULE_DENIED_NAME, 1)]


def test_findings_name_the_file_line_rule_and_what_to_look_at() -> None:
    report = audit_sources({"pkg/run.py": b"import json\n\n\nx = eval(input())\n"})
    assert report.findings == (
        Finding(
            path="pkg/run.py",
            line=4,
            column=4,
            rule=RULE_DENIED_NAME,
            message="uses denied name 'eval'",
        ),
    )
    assert str(report.findings[0]) == "pkg/run.py:4:4: denied-name: uses denied name 'eval'"


def test_importing_a_module_of_the_bundle_dynamically_is_allowed() -> None:
    source = (
        "import importlib\n"
        "importlib.import_module('mybundle.rules')\n"
        "importlib.import_module('.rules', __package__)\n"
    )
    assert audit_one(source) == []


def test_importing_a_module_outside_the_bundle_dynamically_is_reported() -> None:
    source = (
        "import importlib\n"
        "from importlib import import_module\n"
        "importlib.import_module('subprocess')\n"
        "import_module('json')\n"
        "importlib.import_module(name)\n"
        "loader = importlib.import_module\n"
    )
    assert audit_one(source) == [
        (RULE_DYNAMIC_IMPORT, 3),
        (RULE_DYNAMIC_IMPORT, 4),
        (RULE_DYNAMIC_IMPORT, 5),
        (RULE_DYNAMIC_IMPORT, 6),
    ]


def test_relative_imports_never_resolve_to_denied_names() -> None:
    assert audit_one("from . import eval\nfrom .os import system\neval(1)\nsystem('x')") == []


def test_compiled_and_native_code_is_reported_as_opaque() -> None:
    report = audit_sources(
        {"m.py": b"", "m.cpython-311.pyc": b"\0", "fast.so": b"\0", "fast.pyd": b"\0"}
    )
    assert sorted((f.path, f.rule) for f in report.findings) == [
        ("fast.pyd", RULE_OPAQUE_CODE),
        ("fast.so", RULE_OPAQUE_CODE),
        ("m.cpython-311.pyc", RULE_OPAQUE_CODE),
    ]


def test_a_file_that_does_not_parse_is_reported_because_it_could_not_be_audited() -> None:
    report = audit_sources({"broken.py": b"def f(:\n    pass\n"})
    assert [(f.rule, f.line) for f in report.findings] == [(RULE_SYNTAX_ERROR, 1)]


def test_the_deny_list_can_be_extended() -> None:
    stricter = DEFAULT_DENY_LIST.extended(modules=["requests"], names=["os.remove"])
    assert audit_one("import requests", deny_list=stricter) == [(RULE_DENIED_IMPORT, 1)]
    assert audit_one("import os\nos.remove('x')", deny_list=stricter) == [(RULE_DENIED_NAME, 2)]
    assert audit_one("import requests") == []


def test_an_empty_deny_list_reports_only_what_cannot_be_read() -> None:
    empty = DenyList()
    assert audit_one("import subprocess\nimport os\nos.system('x')", deny_list=empty) == []
    assert audit_sources({"x.pyc": b""}, deny_list=empty).findings[0].rule == RULE_OPAQUE_CODE


def test_the_warn_policy_returns_the_findings() -> None:
    report = audit_sources({"a.py": b"import subprocess\n"})
    assert enforce_audit(report, policy=AuditPolicy.WARN) is report
    assert not report.ok


def test_the_reject_policy_raises_with_every_finding() -> None:
    report = audit_sources({"a.py": b"import subprocess\nimport socket\n"})
    with pytest.raises(AuditRejectedError) as caught:
        enforce_audit(report, policy=AuditPolicy.REJECT)
    assert caught.value.findings == report.findings
    assert caught.value.reason == "AuditRejected"
    message = str(caught.value)
    assert "a.py:1:0: denied-import" in message
    assert "a.py:2:0: denied-import" in message
    assert "trust root" in message


def test_the_reject_policy_accepts_a_clean_report() -> None:
    clean = AuditReport(findings=(), files_scanned=3)
    assert enforce_audit(clean, policy=AuditPolicy.REJECT) is clean


def test_policies_are_spelled_as_in_the_resource() -> None:
    assert AuditPolicy("warn") is AuditPolicy.WARN
    assert AuditPolicy("reject") is AuditPolicy.REJECT


def test_auditing_a_directory_matches_auditing_its_files(tmp_path: Path) -> None:
    files = {
        "mybundle/__init__.py": b"",
        "mybundle/rules.py": b"import os\nos.system('x')\n",
        "mybundle/data.json": b"{}",
        "mybundle/old.pyc": b"\0",
    }
    root = write_tree(tmp_path / "b", files, executables=frozenset())
    (root / "mybundle" / "link.py").symlink_to(root / "mybundle" / "rules.py")
    assert audit_directory(root) == audit_sources(files)


def test_obfuscated_code_evades_the_audit_which_is_why_the_signature_is_the_trust_root() -> None:
    # A documented limitation, pinned so nobody mistakes the audit for a sandbox.
    sneaky = "f = getattr(__builtins__, 'ev' + 'al')\nf('1')\n"
    assert audit_one(sneaky) == []
