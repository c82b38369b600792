"""The compile worker: a child process of the application's own interpreter.

:mod:`logicbundle.sdk._compile` starts this file's source with
``sys.executable -I -S -c`` and keeps the process for the application's
lifetime.  Compiling a module holds the GIL for as long as it takes, so doing
it in the application would stall every request thread during a swap; here it
stalls nobody.  The worker imports nothing of ours (``-I -S``: no site, no
environment, no current directory on the path) and writes nothing anywhere.

The protocol on stdin/stdout is a sequence of frames, each a 4-byte
big-endian length and a :mod:`marshal` payload:

* on start the worker sends ``("hello", cache_tag, magic, hexversion)``, so the
  parent can check that the child compiles for the same bytecode format;
* a request is ``(root, suffixes, optimize)``: compile every source file under
  ``root`` (not following symlinks, skipping ``__pycache__``);
* the answer is ``("tree", dirs, codes, failures)``: the directories, and per
  source file either its marshaled code object or why it did not compile
  (``(type name, message, filename, lineno, offset, text, end_lineno,
  end_offset)``), or ``("error", message)`` when ``root`` cannot be read.

End of input ends the worker.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys

TYPE_CHECKING = False  # not typing's: importing typing would double the worker's memory
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Final

HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 1 << 30
SKIPPED_DIRS: Final = frozenset({"__pycache__"})

Failure = tuple[str, str, str | None, int | None, int | None, str | None, int | None, int | None]
"""Why a file did not compile: type name, message, filename, line, offset, text, end line
and end offset."""


def read_frame(stream: BinaryIO) -> Any:
    """The next frame's payload, or None at the end of input."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return marshal.loads(payload)  # noqa: S302 - the parent that started us


def write_frame(stream: BinaryIO, value: Any) -> None:
    payload = marshal.dumps(value)
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def compile_file(path: str, optimize: int) -> tuple[bytes | None, Failure | None]:
    """Compile ``path`` exactly as ``SourceLoader.source_to_code`` would."""
    try:
        with open(path, "rb") as source:  # noqa: PTH123 - the worker stays minimal
            data = source.read()
        code = compile(data, path, "exec", dont_inherit=True, optimize=optimize)
    except SyntaxError as exc:
        return None, (
            type(exc).__name__,
            str(exc.msg),
            exc.filename,
            exc.lineno,
            exc.offset,
            exc.text,
            exc.end_lineno,
            exc.end_offset,
        )
    except Exception as exc:  # ValueError (NUL bytes), RecursionError, MemoryError, OSError
        return None, (type(exc).__name__, str(exc), path, None, None, None, None, None)
    return marshal.dumps(code), None


def compile_tree(root: str, suffixes: tuple[str, ...], optimize: int) -> tuple[Any, ...]:
    dirs: list[str] = []
    codes: dict[str, bytes] = {}
    failures: dict[str, Failure] = {}
    errors: list[OSError] = []
    for here, subdirs, files in os.walk(root, onerror=errors.append, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS)
        dirs.append(here)
        for name in sorted(files):
            if not name.endswith(suffixes):
                continue
            path = os.path.join(here, name)  # noqa: PTH118 - the loader's own spelling
            code, failure = compile_file(path, optimize)
            if code is not None:
                codes[path] = code
            elif failure is not None:
                failures[path] = failure
    if errors:
        return ("error", f"cannot read {errors[0].filename}: {errors[0].strerror}")
    return ("tree", dirs, codes, failures)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the application's Ctrl-C is not ours
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    tag = sys.implementation.cache_tag or ""
    # importlib.util.MAGIC_NUMBER without importing importlib.util (memory, start-up time).
    bootstrap = sys.modules.get("_frozen_importlib_external")
    magic = getattr(bootstrap, "MAGIC_NUMBER", None)
    if magic is None:
        import importlib.util  # noqa: PLC0415 - only where the frozen bootstrap is absent

        magic = importlib.util.MAGIC_NUMBER
    write_frame(stdout, ("hello", tag, magic, sys.hexversion))
    while True:
        request = read_frame(stdin)
        if request is None:
            return
        root, suffixes, optimize = request
        write_frame(stdout, compile_tree(root, tuple(suffixes), optimize))


if __name__ == "__main__":
    main()
