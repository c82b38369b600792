"""The other real services the e2e suites use: an OCI registry, Prometheus, and client tools.

Started only when a test asks for them, each on 127.0.0.1 on a free port, in
a directory of the caller's, stopped by its own process id.

- The registry is Debian's ``docker-registry`` (distribution 2.8).  It has no
  referrers API, so it is also what proves the ``sha256-<digest>`` tag
  fallback works.
- Prometheus is Debian's ``prometheus``, run with the configuration the caller
  passes.
- cosign (v3), oras and helm are built from the Go module proxy through the
  same cache as the control plane (:mod:`e2e.harness.build`).
"""

from __future__ import annotations

import base64
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from e2e.harness import build
from e2e.harness.proc import HarnessError, Process, free_port, http_status, wait_for

APT_HINT = "install Debian's packages first: apt-get install -y docker-registry prometheus"


def _debian_binary(name: str) -> Path:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if not found:
        raise HarnessError(f"{name} is not installed; {APT_HINT}")
    return Path(found)


class _Service:
    process: Process

    def stop(self) -> None:
        self.process.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Registry(_Service):
    """A running OCI registry: push to ``{host}/<repo>:<tag>`` over plain HTTP."""

    host: str
    process: Process

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @classmethod
    def start(
        cls, run_dir: Path, *, htpasswd: Path | None = None, address: str = "127.0.0.1"
    ) -> Registry:
        """Start a registry storing into ``run_dir``; ``htpasswd`` turns on basic auth.

        ``address`` is where it listens: loopback, or (the real node) an address of the
        harness's own network namespace that pods and containerd both reach.
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(run_dir / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"{address}:{port}"},
        }
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "logicbundle-e2e", "path": str(htpasswd)}}
        config_path = run_dir / "registry.yml"
        config_path.write_text(yaml.safe_dump(config))
        process = Process(
            "registry", [_debian_binary("docker-registry"), "serve", config_path], run_dir=run_dir
        )
        registry = cls(host=f"{address}:{port}", process=process)
        try:
            expected = {401} if htpasswd else {200}
            wait_for(
                lambda: http_status(f"{registry.url}/v2/") in expected,
                what="registry /v2/",
                timeout=30,
                watch=[process],
            )
        except BaseException:
            process.stop()
            raise
        return registry


@dataclass
class Prometheus(_Service):
    """A running Prometheus; ``query()`` runs an instant PromQL query."""

    url: str
    process: Process
    basic_auth: tuple[str, str] | None = None
    """(user, password) every request needs, when started with ``basic_auth``."""

    @classmethod
    def start(
        cls,
        run_dir: Path,
        *,
        config: dict[str, Any],
        port: int | None = None,
        basic_auth: tuple[str, str] | None = None,
    ) -> Prometheus:
        """Start Prometheus with ``config`` (the parsed prometheus.yml) storing into ``run_dir``.

        ``port``: listen there (a restart at the same address); default a free port.
        ``basic_auth``: (user, password) Prometheus demands of every request, through
        its ``--web.config.file`` (``basic_auth_users``, a bcrypt hash).
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        config_path = run_dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        web: list[str] = []
        if basic_auth is not None:
            web_path = run_dir / "web.yml"
            user, password = basic_auth
            web_path.write_text(yaml.safe_dump({"basic_auth_users": {user: _bcrypt(password)}}))
            web = [f"--web.config.file={web_path}"]
        process = Process(
            "prometheus",
            [
                _debian_binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={run_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
                *web,
            ],
            run_dir=run_dir,
        )
        prometheus = cls(url=f"http://127.0.0.1:{port}", process=process, basic_auth=basic_auth)
        try:
            wait_for(
                lambda: prometheus._status("/-/ready") == 200,
                what="prometheus /-/ready",
                timeout=60,
                watch=[process],
            )
        except BaseException:
            process.stop()
            raise
        return prometheus

    def restart(self) -> Prometheus:
        """The same Prometheus (address, configuration, data) started again after ``stop()``."""
        run_dir = self.process.log_path.parent
        config = yaml.safe_load((run_dir / "prometheus.yml").read_text())
        port = int(self.url.rsplit(":", 1)[1])
        return Prometheus.start(run_dir, config=config, port=port, basic_auth=self.basic_auth)

    def _request(self, path: str) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path)
        if self.basic_auth is not None:
            pair = ":".join(self.basic_auth).encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        return request

    def _status(self, path: str) -> int:
        """The HTTP status of a GET of ``path`` with the credentials (0: nothing answers)."""
        try:
            with urllib.request.urlopen(self._request(path), timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def query(self, promql: str) -> Any:
        """The ``data`` of an instant query; raises when Prometheus reports an error."""
        import json

        request = self._request("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise HarnessError(f"prometheus query {promql!r} failed: {body}")
        return body["data"]


def _bcrypt(password: str) -> str:
    """A bcrypt hash of ``password``, as Prometheus' ``basic_auth_users`` wants.

    The C library's crypt(3) (libxcrypt) through the standard ``crypt`` module,
    deprecated but present in this Python; no bcrypt package is needed.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    method = crypt.METHOD_BLOWFISH
    hashed = crypt.crypt(password, crypt.mksalt(method, rounds=1 << 4))
    if not hashed or not hashed.startswith("$2"):
        raise HarnessError("this C library's crypt(3) has no bcrypt")
    return hashed


def cosign() -> Path:
    return build.COSIGN.path("cosign")


def oras() -> Path:
    return build.ORAS.path("oras")


def helm() -> Path:
    return build.HELM.path("helm")


def kubectl() -> Path:
    return build.KUBERNETES.path("kubectl")
