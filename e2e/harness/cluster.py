"""A real, local Kubernetes control plane on 127.0.0.1, with kwok nodes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built
from their Go modules by :mod:`e2e.harness.build`, each started as its own process
bound to 127.0.0.1 on a free port.  kwok plays the kubelets: it manages the
fake Node objects that carry its annotation and moves their pods through
ready, complete and delete.  No container ever runs; the e2e suites run the
agent and the sample application of each pod as local processes instead.

Three ways to use it:

- ``with Cluster.start(run_dir) as cluster:`` from Python (the pytest fixture
  and the demo);
- ``python -m e2e.harness.cluster up`` prints the KUBECONFIG path and runs until
  ``python -m e2e.harness.cluster down`` or Ctrl-C;
- ``python -m e2e.harness.cluster down`` stops a running ``up`` by its process ids.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from e2e import versions
from e2e.harness import build, netns, pki
from e2e.harness.proc import (
    HarnessError,
    Process,
    free_port,
    http_status,
    pid_alive,
    rss_bytes,
    wait_for,
)
from logicbundle import contract

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KUBERNETES_SERVICE_IP = "10.96.0.1"
START_TIMEOUT = 120.0
RESTART_GRACE = 15.0
"""Seconds a restarted control-plane process has to exit on SIGTERM before SIGKILL.

kube-apiserver stops listening at once, but with watches still open it was seen not to
exit within 30 s; it is then SIGKILLed, as a kubelet does after a pod's grace period."""


def _log(msg: str) -> None:
    print(f"[e2e.harness.cluster] {msg}", file=sys.stderr, flush=True)


@dataclass
class Cluster:
    """A running control plane.  Use :meth:`start`; stop with :meth:`stop` or ``with``."""

    run_dir: Path
    kubeconfig: Path
    server: str
    ca_file: Path
    client_cert: Path
    client_key: Path
    sa_public_key: Path
    sa_private_key: Path
    ca: pki.CertificateAuthority
    processes: list[Process] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)
    started_in: float = 0.0
    real_node: bool = False
    """Started for a real kubelet (see :meth:`start`)."""
    etcd_url: str = ""
    """etcd's client URL (plain HTTP on 127.0.0.1)."""

    # -- starting -------------------------------------------------------------------

    @classmethod
    def start(cls, run_dir: Path, *, nodes: int = 2, real_node: bool = False) -> Cluster:
        """Build (if needed), start and wait until ready: /readyz, default SA, nodes Ready.

        ``real_node=True`` readies the control plane for a real kubelet
        (:mod:`e2e.harness.node`); only inside the harness network namespace
        (:mod:`e2e.harness.netns`), since kube-apiserver then listens on every
        address of it and advertises the pod bridge's 10.88.0.1, which the
        ``kubernetes`` Service (10.96.0.1:443) routes to; the kubelet's
        Node authorizer and NodeRestriction are on, and the API server has a
        client certificate for the kubelets (``kubectl logs/exec``).
        """
        if real_node and not netns.in_harness_netns():
            raise HarnessError(
                "Cluster.start(real_node=True) runs only inside the harness network namespace: "
                "run it through make e2e / python -m e2e.harness.netns -- CMD"
            )
        bins = {
            c.name: c.ensure() for c in (build.ETCD, build.KUBERNETES, build.KWOK)
        }  # cold builds print their own progress
        t0 = time.monotonic()
        run_dir.mkdir(parents=True, exist_ok=True)
        pki_dir = run_dir / "pki"
        pki_dir.mkdir(exist_ok=True)
        ca = pki.CertificateAuthority()
        ca_file = pki_dir / "ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        dns_names: tuple[str, ...] = ("localhost", "kubernetes", "kubernetes.default")
        ip_addresses: tuple[str, ...] = ("127.0.0.1",)
        if real_node:
            dns_names += ("kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
            ip_addresses += (netns.NODE_IP, KUBERNETES_SERVICE_IP)
        serving_crt, serving_key = ca.issue(
            "kube-apiserver", dns_names=dns_names, ip_addresses=ip_addresses, server=True
        ).write(pki_dir, "apiserver")
        admin_crt, admin_key = ca.issue(
            "logicbundle-e2e-admin", organizations=("system:masters",), client=True
        ).write(pki_dir, "admin")
        sa_private, sa_public = pki.service_account_key()
        sa_key = pki_dir / "sa.key"
        sa_key.touch(mode=0o600)
        sa_key.write_bytes(sa_private)
        sa_pub = pki_dir / "sa.pub"
        sa_pub.write_bytes(sa_public)

        api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        kubeconfig = run_dir / "kubeconfig"
        _write_kubeconfig(kubeconfig, server=server, ca=ca_file, cert=admin_crt, key=admin_key)
        cluster = cls(
            run_dir=run_dir,
            kubeconfig=kubeconfig,
            server=server,
            ca_file=ca_file,
            client_cert=admin_crt,
            client_key=admin_key,
            sa_public_key=sa_pub,
            sa_private_key=sa_key,
            ca=ca,
            real_node=real_node,
        )
        try:
            cluster._start_processes(
                bins=bins,
                api_port=api_port,
                serving=(serving_crt, serving_key),
                nodes=nodes,
            )
        except BaseException:
            cluster.stop()
            raise
        cluster.started_in = time.monotonic() - t0
        return cluster

    def _start_processes(
        self,
        *,
        bins: dict[str, Path],
        api_port: int,
        serving: tuple[Path, Path],
        nodes: int,
    ) -> None:
        run = self.run_dir
        etcd_client, etcd_peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{etcd_client}"
        etcd = self._spawn(
            "etcd",
            bins["etcd"] / "etcd",
            "--name=e2e",
            f"--data-dir={run / 'etcd-data'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
        )
        self._wait_etcd_healthy(timeout=30)
        k8s = bins["kubernetes"]
        if self.real_node:
            kubelet_crt, kubelet_key = self.ca.issue(
                "kube-apiserver-kubelet-client", organizations=("system:masters",), client=True
            ).write(run / "pki", "apiserver-kubelet-client")
            mode = [
                "--bind-address=0.0.0.0",
                f"--advertise-address={netns.NODE_IP}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--endpoint-reconciler-type=lease",
                f"--kubelet-client-certificate={kubelet_crt}",
                f"--kubelet-client-key={kubelet_key}",
                f"--kubelet-certificate-authority={self.ca_file}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            mode = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
            ]
        apiserver = self._spawn(
            "kube-apiserver",
            k8s / "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            *mode,
            f"--secure-port={api_port}",
            f"--cert-dir={run / 'apiserver-certs'}",
            f"--tls-cert-file={serving[0]}",
            f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={self.ca_file}",
            f"--service-account-key-file={self.sa_public_key}",
            f"--service-account-signing-key-file={self.sa_private_key}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--storage-media-type=application/vnd.kubernetes.protobuf",
            "--v=1",
        )
        self._wait_apiserver_ready(watch=[etcd, apiserver])
        common = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--profiling=false",
        ]
        self._spawn(
            "kube-controller-manager",
            k8s / "kube-controller-manager",
            *common,
            f"--secure-port={free_port()}",
            f"--service-account-private-key-file={self.sa_private_key}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        self._spawn(
            "kube-scheduler",
            k8s / "kube-scheduler",
            *common,
            f"--secure-port={free_port()}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        )
        stages = sorted((bins["kwok"].parent / "stages").glob("*.yaml"))
        self._spawn(
            "kwok",
            bins["kwok"] / "kwok",
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            *[f"--config={s}" for s in stages],
        )
        for i in range(nodes):
            self.create_node(f"kwok-node-{i}")
        wait_for(self._ready, what="cluster ready", timeout=START_TIMEOUT, watch=self.processes)

    def _wait_etcd_healthy(self, *, timeout: float) -> None:
        wait_for(
            lambda: http_status(f"{self.etcd_url}/health") == 200,
            what="etcd /health",
            timeout=timeout,
            watch=[self.process("etcd")],
        )

    def _wait_apiserver_ready(self, *, watch: list[Process]) -> None:
        wait_for(
            lambda: self._get_text("/readyz") == "ok",
            what="kube-apiserver /readyz",
            timeout=START_TIMEOUT,
            watch=watch,
        )

    def _spawn(self, name: str, *args: str | os.PathLike[str]) -> Process:
        proc = Process(name, list(args), run_dir=self.run_dir)
        self.processes.append(proc)
        return proc

    def create_node(self, name: str) -> None:
        """Add a fake Node managed by kwok."""
        resources = {"cpu": "64", "memory": "256Gi", "pods": "250"}
        self.request(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        KWOK_NODE_ANNOTATION: "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {"allocatable": resources, "capacity": resources},
            },
        )
        self.node_names.append(name)

    def _ready(self) -> bool:
        if self._get_text("/readyz") != "ok":
            return False
        try:
            self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        except HarnessError:
            return False
        nodes = self.request("GET", "/api/v1/nodes")["items"]
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return set(self.node_names) <= ready

    # -- using ----------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One admin request to the API server; JSON in and out."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise HarnessError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc

    def pod_token(
        self, namespace: str, account: str, *, pod: str, uid: str, seconds: int = 3600
    ) -> str:
        """A token of ``account`` bound to the Pod (its name and uid), for the distributor's
        audience, from the TokenRequest API: what the kubelet projects into a pod."""
        body = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [contract.DISTRIBUTOR_AUDIENCE],
                    "expirationSeconds": seconds,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
                },
            },
        )
        return str(body["status"]["token"])

    def _get_text(self, path: str) -> str:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=5) as resp:
                return str(resp.read().decode())
        except (urllib.error.URLError, OSError):
            return ""

    def wait_established(self, *names: str, timeout: float = 60) -> None:
        """Wait until each CustomResourceDefinition ``names`` is Established.

        Not ``kubectl wait``: right after the CRD is created its status has no
        conditions yet, and kubectl then fails at once ("conditions accessor
        error") instead of waiting.
        """

        def established(name: str) -> bool:
            crd = self.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            return any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in (crd.get("status") or {}).get("conditions") or []
            )

        wait_for(
            lambda: all(established(name) for name in names),
            what=f"{', '.join(names)} Established",
            timeout=timeout,
        )

    @property
    def kubectl_path(self) -> Path:
        return build.KUBERNETES.path("kubectl")

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run the harness's kubectl against this cluster; stdout, or HarnessError with stderr."""
        import subprocess

        proc = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise HarnessError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def env(self) -> dict[str, str]:
        """Environment for child processes that should talk to this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.processes}

    def rss_bytes(self) -> int:
        """Resident memory of every control-plane process together."""
        return sum(rss_bytes(p.pid) for p in self.processes)

    # -- restarting (issue 11's fault matrix) -------------------------------------------

    def process(self, name: str) -> Process:
        """The control-plane process called ``name`` (``etcd``, ``kube-apiserver``, ``kwok``...)."""
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise HarnessError(f"no {name} in this cluster (it has {', '.join(self.pids())})")

    def restart_apiserver(self, *, grace: float = RESTART_GRACE) -> float:
        """Stop kube-apiserver by its pid and start it again; the seconds it was away.

        SIGTERM, then SIGKILL after ``grace`` seconds; started again with the same
        arguments (its port, certificates, service-account keys and etcd), then
        waited for until its /readyz is ok (every post-start hook done: the CRDs
        served again, RBAC loaded).  Nothing else is restarted: the controllers,
        kwok, the operator and the agents have to reconnect on their own.
        """
        t0 = time.monotonic()
        self.process("kube-apiserver").restart(grace)
        self._wait_apiserver_ready(watch=self.processes)
        return time.monotonic() - t0

    def restart_etcd(self, *, grace: float = RESTART_GRACE) -> float:
        """Stop etcd by its pid and start it again on its data; the seconds until all is ready.

        Like :meth:`restart_apiserver`: the same arguments, ports and data
        directory (what was stored is still there), then waited for until etcd's
        /health and the API server's /readyz (whose etcd check follows it) are ok.
        The API server itself is not restarted: it reconnects to etcd on its own.
        """
        t0 = time.monotonic()
        self.process("etcd").restart(grace)
        self._wait_etcd_healthy(timeout=START_TIMEOUT)
        self._wait_apiserver_ready(watch=self.processes)
        return time.monotonic() - t0

    # -- stopping -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process, newest first, each by its own process id."""
        for proc in reversed(self.processes):
            proc.stop()
        shutil.rmtree(self.run_dir / "etcd-data", ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _write_kubeconfig(path: Path, *, server: str, ca: Path, cert: Path, key: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "logicbundle-e2e",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate": str(cert), "client-key": str(key)},
            }
        ],
        "contexts": [
            {"name": "logicbundle-e2e", "context": {"cluster": "logicbundle-e2e", "user": "admin"}}
        ],
        "current-context": "logicbundle-e2e",
    }
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))


# -- the command line: up / down ---------------------------------------------------------


def state_file() -> Path:
    """Where ``up`` records its process ids for ``down`` ($LOGICBUNDLE_E2E_RUN_DIR overrides)."""
    root = os.environ.get("LOGICBUNDLE_E2E_RUN_DIR")
    return (Path(root) if root else build.cache_root() / "run") / "cluster.json"


def _up(args: argparse.Namespace) -> int:
    state = state_file()
    if state.exists():
        old = json.loads(state.read_text())
        if pid_alive(int(old["pid"])):
            print(
                f"a cluster is already up (pid {old['pid']}); "
                f"KUBECONFIG={old['kubeconfig']}\nstop it with: python -m e2e.harness.cluster down",
                file=sys.stderr,
            )
            return 1
        _down_by_pids(old)
    run_dir = Path(args.run_dir) if args.run_dir else state.parent / "cluster"
    shutil.rmtree(run_dir, ignore_errors=True)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # While starting, SIGTERM interrupts like Ctrl-C so that start() cleans up after itself.
    signal.signal(signal.SIGTERM, interrupt)
    _log(f"starting Kubernetes {versions.KUBERNETES} in {run_dir}")
    try:
        cluster = Cluster.start(run_dir, nodes=args.nodes)
    except KeyboardInterrupt:
        _log("interrupted; stopped")
        return 130
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "kubeconfig": str(cluster.kubeconfig),
                    "run_dir": str(run_dir),
                    "processes": cluster.pids(),
                }
            )
        )
        tmp.rename(state)
        _log(f"ready in {cluster.started_in:.1f}s; stop with: python -m e2e.harness.cluster down")
        print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        while not stop.wait(1.0):
            for proc in cluster.processes:
                if not proc.alive():
                    _log(f"{proc.name} exited; stopping (log: {proc.log_path})")
                    stop.set()
    finally:
        cluster.stop()
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        _log("stopped")
    return 0


def _down_by_pids(state: dict[str, Any]) -> None:
    for pid in state.get("processes", {}).values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGKILL)


def _down(_: argparse.Namespace) -> int:
    state = state_file()
    if not state.exists():
        print("no cluster is up", file=sys.stderr)
        return 0
    data = json.loads(state.read_text())
    pid = int(data["pid"])
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(HarnessError):
            wait_for(lambda: not pid_alive(pid), what=f"pid {pid} to stop", timeout=60)
    # Whatever is left (the `up` process was killed hard): stop by recorded ids.
    _down_by_pids(data)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    print("stopped", file=sys.stderr)
    return 0


@contextlib.contextmanager
def temporary_cluster(*, nodes: int = 2) -> Iterator[Cluster]:
    """A cluster in a fresh temporary directory, stopped and removed afterwards."""
    run_dir = Path(tempfile.mkdtemp(prefix="logicbundle-e2e-"))
    try:
        with Cluster.start(run_dir, nodes=nodes) as cluster:
            yield cluster
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.harness.cluster", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and run until `down` or Ctrl-C")
    up.add_argument("--nodes", type=int, default=2, help="number of kwok nodes (default 2)")
    up.add_argument("--run-dir", help="where to keep certificates, data and logs")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the control plane started by `up`")
    down.set_defaults(func=_down)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
