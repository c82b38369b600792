"""Start, watch and stop the harness's processes, each by its own process id.

Every process runs in its own session (so its process group id is its pid)
with its output in a log file of the run directory.  Stopping sends SIGTERM
to that group, waits, then SIGKILLs it: processes are never found by name.
Waiting is always on a condition with a deadline; when a start fails the
error carries the tail of the process's log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


class HarnessError(RuntimeError):
    """A harness process failed to start or a condition was not met in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str) -> int:
    """The HTTP status of a GET of ``url`` (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """One started process: its Popen, its log and its name for messages."""

    def __init__(
        self,
        name: str,
        args: Sequence[str | os.PathLike[str]],
        *,
        run_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self.args = [str(a) for a in args]
        self._run_dir = run_dir
        self._env = {**os.environ, **(env or {})}
        self._log, self.popen = self._spawn()

    def _spawn(self) -> tuple[BinaryIO, subprocess.Popen[bytes]]:
        log = self.log_path.open("ab")
        popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._run_dir,
            env=self._env,
            start_new_session=True,
        )
        return log, popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise HarnessError(
                f"{self.name} exited with code {self.popen.returncode}; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Children that outlived the leader still carry its process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()

    def restart(self, grace: float = 10.0) -> None:
        """:meth:`stop` it, then start it again: the same arguments, environment and log.

        The new process has a new pid; the log goes on in the same file.
        """
        self.stop(grace)
        self._log, self.popen = self._spawn()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` names a process that is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Pids of live processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def wait_for(
    condition: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.1,
    watch: Sequence[Process] = (),
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``.

    A watched process that exits meanwhile fails the wait at once, with its log.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        for proc in watch:
            proc.check_alive()
        try:
            result = condition()
        except Exception as exc:  # the condition is not met yet
            last_error = exc
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {p.name} ({p.log_path}):\n{log_tail(p.log_path)}" for p in watch)
            detail = f" (last error: {last_error})" if last_error else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval)
