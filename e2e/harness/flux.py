"""A real Flux sync on loopback: a Git server, source-controller and kustomize-controller.

* :class:`GitServer` serves bare repositories over Git's smart HTTP protocol:
  a small HTTP server on 127.0.0.1 runs ``git http-backend`` (the CGI program
  that ships with Git) for every request, so clones, fetches and pushes speak
  the same protocol as with any Git host.  Pushes are anonymous
  (``http.receivepack`` is on in each repository it creates).
* :class:`Checkout` is a working clone the tests commit to and push from.
* :class:`Flux` installs Flux's CRDs and runs source-controller and
  kustomize-controller (built from the Go module proxy by
  ``e2e/harness/build.py``, component ``flux``) as processes against the
  harness's API server, every address on 127.0.0.1, without leader election.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import yaml

from e2e.harness import build
from e2e.harness.cluster import Cluster
from e2e.harness.proc import Process, free_port, http_status, wait_for

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KUSTOMIZE_API = "kustomize.toolkit.fluxcd.io/v1"

_COPY_CHUNK = 64 * 1024


class _GitHandler(BaseHTTPRequestHandler):
    """One smart-HTTP request, handed to ``git http-backend`` as CGI (RFC 3875)."""

    server: _GitHTTPServer

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, format: str, *args: Any) -> None:
        with self.server.log_lock:
            self.server.log.write((format % args + "\n").encode())
            self.server.log.flush()

    def _environment(self) -> dict[str, str]:
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_SOFTWARE": "logicbundle-e2e-git",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": urllib.parse.unquote(path),
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        if self.headers.get("Content-Length"):
            env["CONTENT_LENGTH"] = self.headers["Content-Length"]
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                env[key] = value
        return env

    def _feed(self, stdin: IO[bytes]) -> None:
        """Copy the request body to the CGI's stdin (chunked or Content-Length)."""
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    stdin.write(self.rfile.read(size))
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    chunk = self.rfile.read(min(left, _COPY_CHUNK))
                    if not chunk:
                        break
                    stdin.write(chunk)
                    left -= len(chunk)
        finally:
            stdin.close()

    def _cgi(self) -> None:
        with self.server.log_lock:
            stderr = os.dup(self.server.log.fileno())
        with subprocess.Popen(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=self._environment(),
        ) as proc:
            os.close(stderr)
            assert proc.stdin is not None and proc.stdout is not None
            feeder = threading.Thread(target=self._feed, args=(proc.stdin,), daemon=True)
            feeder.start()
            status, headers = 200, []
            while True:
                line = proc.stdout.readline().rstrip(b"\r\n")
                if not line:
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                else:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()  # HTTP/1.0: the body ends when the connection closes
            shutil.copyfileobj(proc.stdout, self.wfile, _COPY_CHUNK)
            feeder.join()


class _GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, log: IO[bytes]) -> None:
        super().__init__(address, _GitHandler)
        self.root = root
        self.log = log
        self.log_lock = threading.Lock()


class GitServer:
    """Bare repositories under ``run_dir/repos`` served over smart HTTP on 127.0.0.1."""

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / "repos"
        self.root.mkdir(parents=True, exist_ok=True)
        self._log = (run_dir / "git-http.log").open("ab")
        self._server = _GitHTTPServer(("127.0.0.1", 0), self.root, self._log)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def create(self, name: str, *, branch: str = "main") -> str:
        """A new empty bare repository ``<name>.git`` that accepts pushes; its URL."""
        path = self.root / f"{name}.git"
        _git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(path))
        _git("config", "http.receivepack", "true", cwd=path)
        return f"{self.url}/{name}.git"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._log.close()


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@logicbundle.invalid",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@logicbundle.invalid",
        "GIT_TERMINAL_PROMPT": "0",
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout


@dataclass
class Checkout:
    """A working clone of one repository: write files, commit, push over HTTP."""

    path: Path
    branch: str = "main"

    @classmethod
    def clone(cls, url: str, path: Path, *, branch: str = "main") -> Checkout:
        _git("clone", "--quiet", url, str(path))
        _git("checkout", "--quiet", "-B", branch, cwd=path)
        return cls(path=path, branch=branch)

    def commit_and_push(self, files: dict[str, str], message: str) -> str:
        """Write ``files`` (relative path -> text), commit them, push; the new commit's SHA."""
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _git("add", "--", *files, cwd=self.path)
        _git("commit", "--quiet", "-m", message, cwd=self.path)
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.path)
        return _git("rev-parse", "HEAD", cwd=self.path).strip()


def kustomization_files(
    objects: list[dict[str, Any]], name: str = "resources.yaml"
) -> dict[str, str]:
    """A kustomize directory: ``objects`` in one file and a kustomization.yaml naming it."""
    return {
        name: yaml.safe_dump_all(objects, sort_keys=False),
        "kustomization.yaml": yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [name],
            }
        ),
    }


def install_crds(cluster: Cluster) -> list[str]:
    """Apply the CRDs of the built source-controller and kustomize-controller; their names."""
    crds = build.flux_crds()
    cluster.kubectl("apply", "--server-side", *(f"--filename={path}" for path in crds))
    names = []
    for path in crds:  # source.toolkit.fluxcd.io_gitrepositories.yaml
        group, plural = path.stem.split("_", 1)
        names.append(f"{plural}.{group}")
    cluster.wait_established(*names)
    return names


@dataclass
class Flux:
    """source-controller and kustomize-controller, running against one cluster."""

    source_controller: Process
    kustomize_controller: Process

    @property
    def processes(self) -> tuple[Process, Process]:
        return (self.source_controller, self.kustomize_controller)

    @classmethod
    def start(cls, cluster: Cluster, run_dir: Path, *, timeout: float = 180) -> Flux:
        """Install Flux's CRDs and start both controllers; wait until both are ready.

        ``timeout`` is generous: on two loaded cores the controllers' first
        informer sync can take a while.
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = build.FLUX.ensure()
        install_crds(cluster)
        env = cluster.env()
        storage_port, sc_health, kc_health = free_port(), free_port(), free_port()
        storage = run_dir / "storage"
        storage.mkdir(exist_ok=True)
        common = ["--log-level=info", "--log-encoding=console", "--enable-leader-election=false"]
        source = Process(
            "source-controller",
            [
                bin_dir / "source-controller",
                *common,
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-addr=127.0.0.1:{sc_health}",
                f"--storage-path={storage}",
                f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}",
            ],
            run_dir=run_dir,
            env=env,
        )
        kustomize = Process(
            "kustomize-controller",
            [
                bin_dir / "kustomize-controller",
                *common,
                f"--metrics-addr=127.0.0.1:{free_port()}",
                f"--health-addr=127.0.0.1:{kc_health}",
            ],
            run_dir=run_dir,
            env=env,
        )
        flux = cls(source_controller=source, kustomize_controller=kustomize)
        try:
            for port, proc in ((sc_health, source), (kc_health, kustomize)):
                url = f"http://127.0.0.1:{port}/readyz"
                wait_for(
                    lambda url=url: http_status(url) == 200,  # type: ignore[misc]
                    what=f"{proc.name} {url}",
                    timeout=timeout,
                    watch=[proc],
                )
        except BaseException:
            flux.stop()
            raise
        return flux

    def stop(self) -> None:
        for proc in self.processes:
            proc.stop()


def git_repository(name: str, namespace: str, url: str, *, interval: str = "2s") -> dict[str, Any]:
    """A GitRepository following the ``main`` branch of ``url``."""
    return {
        "apiVersion": SOURCE_API,
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"interval": interval, "timeout": "60s", "url": url, "ref": {"branch": "main"}},
    }


def kustomization(
    name: str, namespace: str, *, source: str, timeout: str, interval: str = "10m"
) -> dict[str, Any]:
    """A Kustomization applying the repository's root and waiting for what it applied."""
    return {
        "apiVersion": KUSTOMIZE_API,
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "interval": interval,
            "path": "./",
            "prune": True,
            "wait": True,
            "timeout": timeout,
            "sourceRef": {"kind": "GitRepository", "name": source},
        },
    }
