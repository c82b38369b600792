"""Bytecode for a version directory, compiled off the request path.

``compile()`` holds the GIL from start to end, so compiling a new version's
modules inside the application stalls every request thread for as long as
it takes (the benchmark saw a call wait 120 ms during back-to-back swaps).
Here one long-lived child process of the application's *own* interpreter
(``sys.executable``; the agent's Python may be another version, so the agent
cannot compile for it) compiles a whole version directory per request and
answers with marshaled code objects (:mod:`logicbundle.sdk._compile_worker`).
While it works, the activating thread waits on a pipe, which releases the
GIL.  The answer is kept in memory per (digest, ``cache_tag``, optimization
level, directory), so activating a digest again (a rollback) compiles
nothing; it is never written to disk (the shared volume is read-only for the
application, and bytecode on disk is code that nobody verified).

The guarantees of the loader hold: the worker reads the version directory
and writes nothing (no ``__pycache__``), never looks at a ``.pyc``, and
compiles exactly the bytes it read, as ``SourceLoader.source_to_code`` would.
A file that does not compile is recorded with its error, which is raised when
(and only when) the module is imported, as before.

Fail closed: the worker is started lazily, restarted once when it dies, and
when it cannot answer (it died twice, ran past the deadline, or is another
Python) the activation is refused with :class:`CompilerUnavailableError`;
nothing is ever compiled in-process instead.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.machinery
import importlib.util
import inspect
import marshal
import os
import select
import subprocess
import sys
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol

from logicbundle.sdk import _compile_worker as _worker_module
from logicbundle.sdk._errors import CompilerUnavailableError

COMPILE_TIMEOUT: Final = 30.0
"""Seconds the worker may take to start or to compile one version directory."""

CACHE_SIZE: Final = 16
"""Version directories whose bytecode is kept in memory (most recently used)."""

_HEADER: Final = _worker_module.HEADER
_SYNTAX_ERRORS: Final[dict[str, type[SyntaxError]]] = {
    "SyntaxError": SyntaxError,
    "IndentationError": IndentationError,
    "TabError": TabError,
}


@dataclass(frozen=True)
class CompileFailure:
    """Why one source file did not compile, as the worker saw it."""

    kind: str
    """The exception's type name (``SyntaxError``, ``IndentationError``, ``ValueError``…)."""
    message: str
    filename: str | None = None
    lineno: int | None = None
    offset: int | None = None
    text: str | None = None
    end_lineno: int | None = None
    end_offset: int | None = None

    def exception(self, path: str) -> Exception:
        """The exception compiling in-process would have raised (another type: ImportError)."""
        syntax = _SYNTAX_ERRORS.get(self.kind)
        if syntax is not None:
            details = (
                self.filename,
                self.lineno,
                self.offset,
                self.text,
                self.end_lineno,
                self.end_offset,
            )
            return syntax(self.message, details)
        return ImportError(f"cannot compile {path}: {self.kind}: {self.message}", path=path)


@dataclass(frozen=True)
class CompiledTree:
    """Every source file of one version directory, compiled; read-only once built."""

    root: str
    dirs: frozenset[str]
    """The directories under ``root`` (``root`` included; ``__pycache__`` left out)."""
    codes: dict[str, bytes]
    """Absolute source path → marshaled code object."""
    failures: dict[str, CompileFailure]
    """Absolute source path → why it did not compile."""

    def has_source(self, path: str) -> bool:
        return path in self.codes or path in self.failures

    def code(self, path: str) -> types.CodeType:
        """A fresh code object for ``path``; raises what compiling it raised."""
        data = self.codes.get(path)
        if data is not None:
            code = marshal.loads(data)  # noqa: S302 - our own child compiled it
            if not isinstance(code, types.CodeType):  # the worker is ours; this is a bug
                raise ImportError(f"the compile worker sent no code object for {path}", path=path)
            return code
        failure = self.failures.get(path)
        if failure is not None:
            raise failure.exception(path)
        raise ImportError(f"{path} is not a source file of the version directory", path=path)


class CodeSource(Protocol):
    """Where the loader gets a version directory's bytecode from."""

    def tree(self, *, digest: str, root: str) -> CompiledTree: ...


@dataclass(frozen=True)
class CacheKey:
    digest: str
    cache_tag: str
    """``sys.implementation.cache_tag``: bytecode is only valid for the Python that made it."""
    optimize: int
    root: str


def cache_key(*, digest: str, root: str) -> CacheKey:
    """The key for ``digest`` in ``root`` compiled for this interpreter."""
    return CacheKey(
        digest=digest,
        cache_tag=sys.implementation.cache_tag or "",
        optimize=sys.flags.optimize,
        root=root,
    )


class BytecodeCache:
    """The compiled trees of the most recently used version directories, in memory."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._trees: OrderedDict[CacheKey, CompiledTree] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> CompiledTree | None:
        with self._lock:
            tree = self._trees.get(key)
            if tree is not None:
                self._trees.move_to_end(key)
            return tree

    def put(self, key: CacheKey, tree: CompiledTree) -> None:
        with self._lock:
            self._trees[key] = tree
            self._trees.move_to_end(key)
            while len(self._trees) > self.size:
                self._trees.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._trees.clear()

    def __len__(self) -> int:
        return len(self._trees)


class _WorkerDiedError(Exception):
    """The worker closed its end: it exited or was killed (restart and retry once)."""


class CompileWorker:
    """One child process of ``executable`` that compiles version directories on request.

    Started on first use; one request at a time (a lock), each answered
    within ``timeout`` seconds or the worker is killed.  A worker that dies is
    started again and the request sent once more; a second death refuses the
    request.  After ``fork()`` the child process starts its own worker.
    """

    def __init__(self, *, executable: str | None = None, timeout: float = COMPILE_TIMEOUT) -> None:
        self.executable = executable
        self.timeout = timeout
        self.requests = 0
        """Requests answered so far (for tests and the benchmark)."""
        self.starts = 0
        """Worker processes started so far."""
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()

    @property
    def pid(self) -> int | None:
        """The running worker's process id, if one was started by this process."""
        proc = self._proc
        return proc.pid if proc is not None and self._owner == os.getpid() else None

    def compile_tree(self, root: str) -> CompiledTree:
        """Compile every source file under ``root`` in the worker; raise when it cannot."""
        request = (root, tuple(importlib.machinery.SOURCE_SUFFIXES), sys.flags.optimize)
        with self._lock:
            for attempt in (1, 2):
                try:
                    reply = self._round_trip(request)
                except _WorkerDiedError as exc:
                    self._discard()
                    if attempt == 2:
                        raise CompilerUnavailableError(
                            f"the compile worker died twice while compiling {root}: {exc}",
                            hint="The previous version keeps serving. Look for the worker being "
                            "killed (memory limit, OOM killer); activating again starts a new one.",
                        ) from None
                    continue
                except CompilerUnavailableError:
                    raise  # the worker was discarded where the reason was found
                except BaseException:
                    # Interrupted halfway (KeyboardInterrupt, a signal handler's exception):
                    # an answer may still be on its way, so this worker cannot be trusted.
                    self._discard()
                    raise
                self.requests += 1
                return _parse_tree(root, reply)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self, timeout: float = 2.0) -> None:
        """Stop the worker (end of input, then kill when it does not exit)."""
        with self._lock:
            self._discard(timeout)

    def after_fork_in_child(self) -> None:
        """Forget the parent's worker (its pipes are the parent's; it is not our child)."""
        self._lock = threading.Lock()
        proc, self._proc = self._proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            proc.returncode = 0  # not ours to wait for; keeps Popen.__del__ quiet
        self._owner = os.getpid()

    # --- one request ------------------------------------------------------------------

    def _round_trip(self, request: tuple[Any, ...]) -> Any:
        proc = self._ensure()
        deadline = time.monotonic() + self.timeout
        assert proc.stdin is not None  # noqa: S101 - Popen was given PIPE
        assert proc.stdout is not None  # noqa: S101
        payload = marshal.dumps(request)
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise _WorkerDiedError(self._exit_status(proc) or str(exc)) from None
        return self._read_frame(proc, deadline, what=f"compiling {request[0]}")

    def _read_frame(self, proc: subprocess.Popen[bytes], deadline: float, *, what: str) -> Any:
        assert proc.stdout is not None  # noqa: S101
        fd = proc.stdout.fileno()
        header = self._read_exactly(proc, fd, _HEADER.size, deadline, what=what)
        (size,) = _HEADER.unpack(header)
        if size > _worker_module.MAX_FRAME:
            self._discard()
            raise CompilerUnavailableError(f"the compile worker sent a {size}-byte answer")
        payload = self._read_exactly(proc, fd, size, deadline, what=what)
        return marshal.loads(payload)  # noqa: S302 - our own child, same interpreter

    def _read_exactly(
        self, proc: subprocess.Popen[bytes], fd: int, size: int, deadline: float, *, what: str
    ) -> bytes:
        # poll() and read() release the GIL: request threads run while the worker compiles.
        chunks: list[bytes] = []
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                self._discard()
                raise CompilerUnavailableError(
                    f"the compile worker did not finish {what} within {self.timeout:g}s",
                    hint="The previous version keeps serving. A source file that takes this "
                    "long to compile is unusual: look for generated code of extreme size.",
                )
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise _WorkerDiedError(self._exit_status(proc))
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    # --- the process -------------------------------------------------------------------

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._owner != os.getpid():
            self.after_fork_in_child()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        if proc is not None:
            self._discard()
        return self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        executable = self.executable or sys.executable
        if not executable:
            raise CompilerUnavailableError(
                "cannot start the compile worker: sys.executable is empty (an embedded "
                "interpreter?), so there is no Python to compile the bundle's code with",
            )
        try:
            proc = subprocess.Popen(
                [executable, "-I", "-S", "-c", _worker_source()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            raise CompilerUnavailableError(
                f"cannot start the compile worker {executable}: {exc.strerror or exc}",
                hint="The previous version keeps serving; activating again tries again.",
            ) from None
        self._proc = proc
        self.starts += 1
        try:
            hello = self._read_frame(
                proc, time.monotonic() + self.timeout, what="starting (no greeting)"
            )
        except _WorkerDiedError as exc:
            raise _WorkerDiedError(f"{executable} exited on start: {exc}") from None
        self._check_hello(executable, hello)
        return proc

    def _check_hello(self, executable: str, hello: Any) -> None:
        mine = (sys.implementation.cache_tag or "", importlib.util.MAGIC_NUMBER)
        theirs = None
        if isinstance(hello, tuple) and len(hello) == 4 and hello[0] == "hello":
            theirs = (hello[1], hello[2])
        if theirs != mine:
            self._discard()
            raise CompilerUnavailableError(
                f"the compile worker {executable} compiles for {theirs!r}, but this process "
                f"runs {mine!r}: its bytecode cannot run here",
                hint="sys.executable must be the interpreter the application runs on.",
            )

    def _discard(self, timeout: float = 0.5) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    @staticmethod
    def _exit_status(proc: subprocess.Popen[bytes]) -> str:
        try:
            code = proc.wait(1.0)
        except subprocess.TimeoutExpired:
            return "it closed its output but is still running"
        if code < 0:
            return f"killed by signal {-code}"
        return f"exited with status {code}"


def _parse_tree(root: str, reply: Any) -> CompiledTree:
    if isinstance(reply, tuple) and reply[:1] == ("error",):
        raise CompilerUnavailableError(
            f"the compile worker cannot read the version directory: {reply[1]}",
            hint="The agent unpacks every version before it asks for it; was it deleted?",
        )
    if not (isinstance(reply, tuple) and len(reply) == 4 and reply[0] == "tree"):
        raise CompilerUnavailableError(f"the compile worker answered {type(reply).__name__}")
    _, dirs, codes, failures = reply
    return CompiledTree(
        root=root,
        dirs=frozenset(dirs),
        codes=dict(codes),
        failures={path: CompileFailure(*failure) for path, failure in failures.items()},
    )


_SOURCE: list[str] = []


def _worker_source() -> str:
    if not _SOURCE:
        _SOURCE.append(inspect.getsource(_worker_module))
    return _SOURCE[0]


class WorkerCodeSource:
    """The default :class:`CodeSource`: the cache, else the compile worker."""

    def __init__(self, *, worker: CompileWorker, cache: BytecodeCache) -> None:
        self.worker = worker
        self.cache = cache

    def tree(self, *, digest: str, root: str) -> CompiledTree:
        key = cache_key(digest=digest, root=root)
        tree = self.cache.get(key)
        if tree is None:
            tree = self.worker.compile_tree(root)
            self.cache.put(key, tree)
        return tree


WORKER: Final = CompileWorker()
CACHE: Final = BytecodeCache()
DEFAULT_SOURCE: Final = WorkerCodeSource(worker=WORKER, cache=CACHE)
_source: list[CodeSource] = [DEFAULT_SOURCE]


def code_source() -> CodeSource:
    """The code source the loader uses now."""
    return _source[0]


@contextlib.contextmanager
def using(source: CodeSource) -> Iterator[CodeSource]:
    """Use ``source`` instead of the worker within the block (tests and the benchmark)."""
    previous, _source[0] = _source[0], source
    try:
        yield source
    finally:
        _source[0] = previous


os.register_at_fork(after_in_child=WORKER.after_fork_in_child)
atexit.register(WORKER.close)
