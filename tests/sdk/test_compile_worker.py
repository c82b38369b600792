"""Compiling out of process: the worker's code is what runs, and nothing else ever does."""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import os
import py_compile
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from logicbundle.sdk import (
    CompilerUnavailableError,
    EntrypointError,
    LogicHost,
    _compile,
)
from tests.sdk.conftest import BUNDLE, SIMPLE, WriteBundle, relative, simple

# A stand-in for the interpreter: a shell script that runs FAKE (a Python
# program) with the worker's own arguments (-I -S -c <worker source>).
FAKE_PRELUDE = """
import importlib.util, os, signal, sys
worker = {"__name__": "not-main"}
exec(sys.argv[-1], worker)
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
here = os.path.dirname(os.path.abspath(__file__))
def hello(tag=sys.implementation.cache_tag):
    worker["write_frame"](stdout, ("hello", tag, importlib.util.MAGIC_NUMBER, sys.hexversion))
def die_mid_compile():
    hello()
    worker["read_frame"](stdin)  # the request has arrived: the worker is compiling
    os.kill(os.getpid(), signal.SIGKILL)
"""
DIES_ONCE = """
try:
    os.mkdir(os.path.join(here, "died-once"))
except FileExistsError:
    worker["main"]()
else:
    die_mid_compile()
"""
DIES_ALWAYS = "die_mid_compile()\n"
ANOTHER_PYTHON = "hello(tag='cpython-299')\nworker['main']()\n"
NEVER_ANSWERS = "hello()\nworker['read_frame'](stdin)\nstdin.read()\n"


@pytest.fixture
def make_python(tmp_path: Path) -> Callable[[str], str]:
    def make(body: str) -> str:
        fake = tmp_path / "fake_worker.py"
        fake.write_text(FAKE_PRELUDE + body)
        wrapper = tmp_path / "python-wrapper"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    return make


@pytest.fixture
def use_worker() -> Iterator[Callable[..., _compile.CompileWorker]]:
    """A worker and cache of the test's own, used by the loader within the test."""
    workers: list[_compile.CompileWorker] = []
    with contextlib.ExitStack() as stack:

        def use(**kwargs: Any) -> _compile.CompileWorker:
            worker = _compile.CompileWorker(**kwargs)
            workers.append(worker)
            source = _compile.WorkerCodeSource(worker=worker, cache=_compile.BytecodeCache())
            stack.enter_context(_compile.using(source))
            return worker

        yield use
    for worker in workers:
        worker.close()


def bundle_modules(digest: str) -> list[str]:
    return [m for m in sys.modules if m.startswith(f"_logicbundle_{BUNDLE}_{digest[7:19]}")]


def snapshot(directory: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


def test_the_code_that_runs_is_the_workers_and_equals_compiling_the_same_bytes_in_process(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = use_worker()
    one = write_bundle(relative("one"))
    version_dir = str(one.path.resolve())
    real_compile = builtins.compile
    compiled_here: list[str] = []

    def watching_compile(source: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        if str(filename).startswith(version_dir):
            compiled_here.append(str(filename))
        return real_compile(source, filename, *args, **kwargs)

    monkeypatch.setattr(builtins, "compile", watching_compile)
    host.activate(one.digest, one.path)
    monkeypatch.undo()

    assert host.function("ident")() == "one/deep"
    assert compiled_here == [], "bundle code was compiled inside the application"
    assert worker.requests == 1
    modules = {m: sys.modules[m] for m in bundle_modules(one.digest)}
    checked = 0
    for name, module in modules.items():
        origin = getattr(module, "__file__", None)
        if origin is None:
            continue  # the synthetic package itself
        ran = module.__spec__.loader.get_code(name)
        here = compile(Path(origin).read_bytes(), origin, "exec", dont_inherit=True)
        assert ran == here, f"{name}: the worker's code differs from compiling in process"
        assert ran.co_filename == here.co_filename == origin
        checked += 1
    assert checked == 4  # logic, table, sub, sub.deep
    logic = modules[f"{next(iter(modules))}.logic"]
    assert logic.Logic.ident.__code__.co_filename == str(one.path.resolve() / "logic.py")


def test_a_syntax_error_refuses_the_activation_with_the_file_and_line(
    host: LogicHost, write_bundle: WriteBundle, use_worker: Callable[..., _compile.CompileWorker]
) -> None:
    use_worker()
    good = write_bundle(simple("good"))
    host.activate(good.digest, good.path)
    bad = write_bundle(
        {
            "logic.py": "from . import broken\n" + SIMPLE.format(name="bad"),
            "broken.py": "X = 1\n\ndef oops(:\n    pass\n",
        }
    )
    with pytest.raises(EntrypointError, match=r"SyntaxError: .*\(broken\.py, line 3\)") as info:
        host.activate(bad.digest, bad.path)
    assert not isinstance(info.value, CompilerUnavailableError)
    assert info.value.reason == "EntrypointFailed"
    cause = info.value.__cause__
    assert isinstance(cause, SyntaxError)
    assert cause.filename == str(bad.path.resolve() / "broken.py")
    assert cause.lineno == 3
    assert host.function("ident")() == "good"
    assert bundle_modules(bad.digest) == []


def test_a_file_that_does_not_compile_but_is_never_imported_does_not_refuse_the_version(
    host: LogicHost, write_bundle: WriteBundle, use_worker: Callable[..., _compile.CompileWorker]
) -> None:
    use_worker()
    one = write_bundle({**simple("one"), "unused.py": "def oops(:\n"})
    host.activate(one.digest, one.path)
    assert host.function("ident")() == "one"


def test_a_worker_that_dies_mid_compile_is_restarted_and_the_activation_succeeds(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    make_python: Callable[[str], str],
) -> None:
    worker = use_worker(executable=make_python(DIES_ONCE))
    one = write_bundle(relative("one"))
    host.activate(one.digest, one.path)
    assert host.function("ident")() == "one/deep"
    assert worker.starts == 2
    assert worker.requests == 1


def test_a_worker_that_dies_every_time_refuses_the_version_and_loads_nothing(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    make_python: Callable[[str], str],
) -> None:
    good = write_bundle(simple("good"))
    use_worker()
    host.activate(good.digest, good.path)
    worker = use_worker(executable=make_python(DIES_ALWAYS))
    bad = write_bundle(relative("one"))
    with pytest.raises(CompilerUnavailableError, match=r"died twice.*killed by signal 9") as info:
        host.activate(bad.digest, bad.path)
    assert info.value.reason == "EntrypointFailed"
    assert "previous version keeps serving" in info.value.diagnostics()
    assert worker.starts == 2
    assert worker.pid is None
    assert host.function("ident")() == "good"
    assert host.active_digest == good.digest
    assert bundle_modules(bad.digest) == []
    assert host.stats()["activations"] == {"ok": 1, "refused": 1}


def test_a_worker_of_another_python_is_refused_not_trusted(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    make_python: Callable[[str], str],
) -> None:
    use_worker(executable=make_python(ANOTHER_PYTHON))
    one = write_bundle(simple("one"))
    with pytest.raises(CompilerUnavailableError, match=r"cpython-299.*cannot run here"):
        host.activate(one.digest, one.path)
    assert host.active_digest is None


def test_a_worker_that_cannot_start_refuses_the_version(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    tmp_path: Path,
) -> None:
    use_worker(executable=str(tmp_path / "no-such-python"))
    one = write_bundle(simple("one"))
    with pytest.raises(CompilerUnavailableError, match="cannot start the compile worker"):
        host.activate(one.digest, one.path)


def test_a_worker_that_exits_on_start_refuses_the_version(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    make_python: Callable[[str], str],
) -> None:
    worker = use_worker(executable=make_python("sys.exit(3)\n"))
    one = write_bundle(simple("one"))
    with pytest.raises(CompilerUnavailableError, match=r"died twice.*exited on start.*status 3"):
        host.activate(one.digest, one.path)
    assert worker.starts == 2


def test_a_worker_past_its_deadline_is_killed_and_the_version_refused(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    make_python: Callable[[str], str],
) -> None:
    worker = use_worker(executable=make_python(NEVER_ANSWERS), timeout=0.3)
    one = write_bundle(simple("one"))
    with pytest.raises(CompilerUnavailableError, match="did not finish compiling"):
        host.activate(one.digest, one.path)
    assert worker.pid is None


def test_a_stray_pyc_in_the_version_directory_is_never_run(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    tmp_path: Path,
) -> None:
    use_worker()
    source = SIMPLE.format(name="source").replace(
        "    def ident(self):\n        return NAME\n",
        "    def ident(self):\n"
        "        try:\n"
        "            from . import stray\n"
        "        except ImportError:\n"
        "            return NAME\n"
        "        return stray.NAME\n",
    )
    one = write_bundle({"logic.py": source})
    # Bytecode from other sources: next to logic.py as its cached bytecode (unchecked,
    # so a standard loader would run it), and a sourceless stray.pyc.
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text(SIMPLE.format(name="pyc"))
    cached = importlib.util.cache_from_source(str(one.path / "logic.py"))
    py_compile.compile(
        str(elsewhere),
        cfile=cached,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    stray = tmp_path / "stray.py"
    stray.write_text("NAME = 'pyc'\n")
    py_compile.compile(str(stray), cfile=str(one.path / "stray.pyc"), doraise=True)

    host.activate(one.digest, one.path)
    assert host.function("ident")() == "source"
    tree = _compile.code_source().tree(digest=one.digest, root=str(one.path.resolve()))
    assert list(tree.codes) == [str(one.path.resolve() / "logic.py")]
    assert not any("__pycache__" in d for d in tree.dirs)


def test_nothing_is_written_into_a_read_only_version_directory(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_worker()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as in production
    one = write_bundle(relative("one"))
    before = snapshot(one.path)
    directories = [one.path, *(p for p in one.path.rglob("*") if p.is_dir())]
    files = [p for p in one.path.rglob("*") if p.is_file()]
    for path in files:
        path.chmod(0o444)
    for path in directories:
        path.chmod(0o555)
    try:
        host.activate(one.digest, one.path)
        assert host.function("ident")() == "one/deep"
        # Root ignores the modes: the snapshot is the check that holds for every user.
        assert snapshot(one.path) == before
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o555 for p in directories)
    finally:
        for path in directories:
            path.chmod(0o755)


def test_the_cache_is_keyed_by_digest_and_cache_tag(
    host: LogicHost,
    write_bundle: WriteBundle,
    use_worker: Callable[..., _compile.CompileWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = use_worker()
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    for version in (one, two, one, two):
        host.activate(version.digest, version.path)
        assert host.function("ident")() == ("one" if version is one else "two")
    assert worker.requests == 2, "a digest compiled once is served from the cache"

    source = _compile.code_source()
    root = str(one.path.resolve())
    cached = source.tree(digest=one.digest, root=root)
    assert source.tree(digest=one.digest, root=root) is cached
    assert worker.requests == 2
    assert source.tree(digest=two.digest, root=root) is not cached  # another digest
    assert worker.requests == 3
    monkeypatch.setattr(sys.implementation, "cache_tag", "cpython-299")
    assert source.tree(digest=one.digest, root=root) is not cached  # another Python
    assert worker.requests == 4
    assert _compile.cache_key(digest=one.digest, root=root).cache_tag == "cpython-299"


def test_the_cache_keeps_only_the_most_recently_used_trees() -> None:
    cache = _compile.BytecodeCache(size=2)
    trees = [
        _compile.CompiledTree(root=f"/v{i}", dirs=frozenset(), codes={}, failures={})
        for i in range(3)
    ]
    keys = [_compile.cache_key(digest=f"sha256:{i}", root=f"/v{i}") for i in range(3)]
    cache.put(keys[0], trees[0])
    cache.put(keys[1], trees[1])
    assert cache.get(keys[0]) is trees[0]  # now the most recent
    cache.put(keys[2], trees[2])
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is trees[0]
    assert len(cache) == 2


FORKS = """
import os, sys
from pathlib import Path
from logicbundle.sdk import _compile
root = sys.argv[1]
worker = _compile.WORKER
assert worker.compile_tree(root).codes
parent_worker = worker.pid
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    tree = worker.compile_tree(root)
    ok = worker.pid not in (None, parent_worker) and bool(tree.codes)
    os.write(write_end, b"ok" if ok else b"no")
    worker.close()
    os._exit(0)
os.close(write_end)
answer = os.read(read_end, 2)
assert os.waitpid(child, 0)[1] == 0
assert worker.pid == parent_worker, "the child touched the parent's worker"
assert worker.compile_tree(root).codes
print(answer.decode())
"""


def test_a_forked_child_starts_its_own_worker_and_leaves_the_parents_alone(
    tmp_path: Path,
) -> None:
    # In a fresh interpreter: forking this test process, with its threads, is not safe.
    (tmp_path / "mod.py").write_text("X = 1\n")
    here = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{here / 'operator'}{os.pathsep}{here}"}
    done = subprocess.run(
        [sys.executable, "-c", FORKS, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_an_activation_reports_the_compile_and_the_pauses_apart_from_loading(
    host: LogicHost, write_bundle: WriteBundle, use_worker: Callable[..., _compile.CompileWorker]
) -> None:
    use_worker()
    one, two = write_bundle(simple("one")), write_bundle(simple("two"))
    first = host.activate(one.digest, one.path).timings
    assert set(first) == {"compile", "load", "pause", "selftest", "state", "swap", "total"}
    host.activate(two.digest, two.path)
    again = host.activate(one.digest, one.path).timings  # compiled before: from the cache
    assert again["compile"] < first["compile"]
    parts = sum(v for k, v in again.items() if k != "total")
    assert parts <= again["total"] + 0.01  # each figure is rounded to 1 µs
