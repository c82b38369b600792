"""A real Kubernetes node: containerd, runc, the bridge CNI, kubelet, kube-proxy, CoreDNS.

Only inside the harness's network namespace (:mod:`e2e.harness.netns`), next to a
control plane started with ``Cluster.start(..., real_node=True)``.  Every file
(containerd's root and state, the kubelet's root dir, pod logs, CNI config and
IPAM state, certificates) lives in the node's run directory; containerd's
socket lives in a short temporary folder (unix socket paths hold 108 bytes).

- containerd: the CRI plugin with ``restrict_oom_score_adj`` (root here lacks
  CAP_SYS_RESOURCE: without it every sandbox fails with "can't get final
  child's PID from pipe: EOF"), cgroupfs, the sandbox image given, the CNI
  plugins of Debian's ``containernetworking-plugins``, and a ``certs.d``
  folder whose ``hosts.toml`` sends pulls of ``<registry_host>/...`` to the
  harness's plain-HTTP registry;
- CNI: the bridge ``cni0`` (10.88.0.1/16, made by the launcher), hairpin on,
  no masquerade (nothing leaves the namespace), host-local IPAM from 10.88.0.2;
- kubelet: cgroup v1 allowed, cgroupfs under a cgroup root named after the
  namespace (removed by the launcher), cluster DNS 10.88.0.1, an empty
  resolv.conf (pods never get the machine's nameservers), x509 client auth
  against the cluster CA, a serving certificate for 10.88.0.1;
- kube-proxy: iptables mode, leaving global conntrack sysctls alone;
- CoreDNS on 10.88.0.1:53 with the ``kubernetes`` plugin and no ``forward``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from e2e.harness import build, netns
from e2e.harness.cluster import Cluster, _write_kubeconfig
from e2e.harness.proc import HarnessError, Process, free_port, http_status, wait_for

NODE_LABEL = "logicbundle.io/e2e-node"
CLUSTER_DOMAIN = "cluster.local"
READY_TIMEOUT = 180.0
CONTAINERD = "/usr/bin/containerd"
RUNC = "/usr/sbin/runc"
CNI_BIN_DIR = "/usr/lib/cni"


def _log(msg: str) -> None:
    import sys

    print(f"[e2e.harness.node] {msg}", file=sys.stderr, flush=True)


@dataclass
class RealNode:
    """A running real node.  Use :meth:`start`; stop with :meth:`stop` or ``with``."""

    name: str
    run_dir: Path
    cluster: Cluster
    socket_dir: Path
    cgroup_root: str
    registry_host: str
    sandbox_image: str
    processes: list[Process] = field(default_factory=list)
    started_in: float = 0.0
    """Seconds from the first process started to the Node Ready and DNS/proxy serving."""

    @property
    def ip(self) -> str:
        return netns.NODE_IP

    @property
    def containerd_socket(self) -> Path:
        return self.socket_dir / "containerd.sock"

    # -- starting ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        run_dir: Path,
        cluster: Cluster,
        *,
        registry_host: str,
        sandbox_image: str,
        name: str = "real-node-0",
        timeout: float = READY_TIMEOUT,
    ) -> RealNode:
        """Start containerd, kubelet, kube-proxy and CoreDNS; wait for the Node Ready.

        ``registry_host`` (``127.0.0.1:PORT``) is a plain-HTTP registry containerd
        pulls from; ``sandbox_image`` the pause image, usually in that registry.
        """
        if not netns.in_harness_netns():
            raise HarnessError(
                "a real node runs only inside the harness network namespace: "
                "run it through make e2e / python -m e2e.harness.netns -- CMD"
            )
        if not cluster.real_node:
            raise HarnessError("the cluster was not started with real_node=True")
        if leftover := netns.bridge_ports():
            # Each node's IPAM hands out the bridge's addresses from the start: the pods
            # of two nodes on one bridge would share addresses.
            raise HarnessError(
                f"the pod bridge {netns.BRIDGE} already has {len(leftover)} pod link(s) "
                f"({', '.join(leftover[:3])}...): another real node's pods share this "
                "namespace; give each node a namespace of its own "
                "(python -m e2e.harness.netns nests one)"
            )
        node_bins = build.KUBERNETES_NODE.ensure()
        coredns_bin = build.COREDNS.ensure()
        for binary in (CONTAINERD, RUNC, f"{CNI_BIN_DIR}/bridge"):
            if not Path(binary).exists():
                raise HarnessError(f"{binary} is missing (make setup installs it)")
        run_dir.mkdir(parents=True, exist_ok=True)
        node = cls(
            name=name,
            run_dir=run_dir,
            cluster=cluster,
            socket_dir=Path(tempfile.mkdtemp(prefix="lbnode-")),
            cgroup_root="/" + netns.cgroup_name(name),
            registry_host=registry_host,
            sandbox_image=sandbox_image,
        )
        t0 = time.monotonic()
        try:
            node._start(node_bins, coredns_bin, timeout=timeout)
        except BaseException:
            node.stop()
            raise
        node.started_in = time.monotonic() - t0
        _log(f"{name} Ready in {node.started_in:.1f}s")
        return node

    def _spawn(self, name: str, *args: str | os.PathLike[str]) -> Process:
        proc = Process(name, list(args), run_dir=self.run_dir)
        self.processes.append(proc)
        return proc

    def _start(self, node_bins: Path, coredns_bin: Path, *, timeout: float) -> None:
        run = self.run_dir
        pki = run / "pki"
        pki.mkdir(exist_ok=True)
        ca = self.cluster.ca
        kubelet_client = ca.issue(
            f"system:node:{self.name}", organizations=("system:nodes",), client=True
        ).write(pki, "kubelet-client")
        kubelet_serving = ca.issue(
            self.name, dns_names=(self.name,), ip_addresses=(self.ip,), server=True
        ).write(pki, "kubelet-serving")
        proxy_client = ca.issue("system:kube-proxy", client=True).write(pki, "kube-proxy")
        kubeconfigs = {}
        for user, (crt, key) in {"kubelet": kubelet_client, "kube-proxy": proxy_client}.items():
            kubeconfigs[user] = run / f"{user}.kubeconfig"
            _write_kubeconfig(
                kubeconfigs[user],
                server=self.cluster.server,
                ca=self.cluster.ca_file,
                cert=crt,
                key=key,
            )

        # containerd
        self._write_containerd_config()
        containerd = self._spawn("containerd", CONTAINERD, "--config", run / "containerd.toml")
        wait_for(
            lambda: _socket_answers(self.containerd_socket),
            what="containerd socket",
            timeout=30,
            watch=[containerd],
        )

        # kubelet
        self._make_cgroup_root()
        ports = {"kubelet": free_port(), "kubelet-healthz": free_port()}
        (run / "resolv.conf").write_text("")
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            "clusterDNS": [self.ip],
            "clusterDomain": CLUSTER_DOMAIN,
            "resolvConf": str(run / "resolv.conf"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.ip,
            "port": ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet-healthz"],
            "tlsCertFile": str(kubelet_serving[0]),
            "tlsPrivateKeyFile": str(kubelet_serving[1]),
            "authentication": {
                "x509": {"clientCAFile": str(self.cluster.ca_file)},
                "webhook": {"enabled": False},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(run / "pod-logs"),
            "serializeImagePulls": False,
            "registerNode": True,
            # A test machine's disk and memory are whatever they are: never evict.
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusReportFrequency": "10s",
        }
        (run / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config))
        kubelet = self._spawn(
            "kubelet",
            node_bins / "kubelet",
            f"--config={run / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--root-dir={run / 'kubelet'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            f"--node-labels={NODE_LABEL}=real",
            "--v=2",
        )

        # kube-proxy
        proxy_ports = {"healthz": free_port(), "metrics": free_port()}
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clusterCIDR": netns.POD_CIDR,
            "hostnameOverride": self.name,
            "bindAddress": self.ip,
            "healthzBindAddress": f"127.0.0.1:{proxy_ports['healthz']}",
            "metricsBindAddress": f"127.0.0.1:{proxy_ports['metrics']}",
            "clientConnection": {"kubeconfig": str(kubeconfigs["kube-proxy"])},
            # Zero: leave the (partly global) conntrack sysctls as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (run / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy_config))
        proxy = self._spawn(
            "kube-proxy", node_bins / "kube-proxy", f"--config={run / 'kube-proxy.yaml'}", "--v=2"
        )

        # CoreDNS
        dns_ports = {"health": free_port(), "ready": free_port()}
        corefile = f"""\
.:53 {{
    bind {self.ip}
    errors
    health 127.0.0.1:{dns_ports["health"]}
    ready 127.0.0.1:{dns_ports["ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.cluster.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""
        (run / "Corefile").write_text(corefile)
        coredns = self._spawn("coredns", coredns_bin / "coredns", "-conf", run / "Corefile")

        watch = [containerd, kubelet, proxy, coredns]
        wait_for(self._node_ready, what=f"node {self.name} Ready", timeout=timeout, watch=watch)
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{proxy_ports['healthz']}/healthz") == 200,
            what="kube-proxy /healthz",
            timeout=timeout,
            watch=watch,
        )
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{dns_ports['ready']}/ready") == 200,
            what="CoreDNS /ready",
            timeout=timeout,
            watch=watch,
        )

    def _write_containerd_config(self) -> None:
        run = self.run_dir
        cni_conf = run / "cni" / "net.d"
        cni_conf.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "logicbundle-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": netns.BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [
                            [
                                {
                                    "subnet": netns.POD_CIDR,
                                    "rangeStart": "10.88.0.2",
                                    "gateway": netns.NODE_IP,
                                }
                            ]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(run / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni_conf / "10-logicbundle-e2e.conflist").write_text(json.dumps(conflist, indent=2))
        hosts_dir = run / "certs.d" / self.registry_host
        hosts_dir.mkdir(parents=True, exist_ok=True)
        (hosts_dir / "hosts.toml").write_text(
            f'server = "http://{self.registry_host}"\n\n'
            f'[host."http://{self.registry_host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            "  skip_verify = true\n"
        )
        sock = self.containerd_socket
        config = f"""\
version = 2
root = "{run / "containerd" / "root"}"
state = "{self.socket_dir / "state"}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.sandbox_image}"
  restrict_oom_score_adj = true
  systemd_cgroup = false
  disable_apparmor = true
  enable_selinux = false
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{run / "certs.d"}"
"""
        (run / "containerd.toml").write_text(config)

    def _cgroup_dirs(self) -> list[Path]:
        return [h / self.cgroup_root.lstrip("/") for h in netns.CGROUP_ROOT.iterdir()]

    def _make_cgroup_root(self) -> None:
        """The kubelet wants its cgroup root to exist in every hierarchy."""
        for path in self._cgroup_dirs():
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":  # a new cpuset is empty: inherit the parent's
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (path / knob).write_text((path.parent / knob).read_text())

    def _node_ready(self) -> bool:
        node = self.cluster.request("GET", f"/api/v1/nodes/{self.name}")
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )

    # -- using ------------------------------------------------------------------------

    def node(self) -> Any:
        return self.cluster.request("GET", f"/api/v1/nodes/{self.name}")

    def logs(self) -> dict[str, Path]:
        return {p.name: p.log_path for p in self.processes}

    # -- stopping ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the node's processes, then kill its shims and containers by pid.

        Shims are found by the containerd socket they were given (unique to this
        node), containers by the node's cgroup root; then the mounts containerd
        and the kubelet left under the node's folders are lazily unmounted and
        the cgroups removed.
        """
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        marker = str(self.containerd_socket)
        for _ in range(50):
            pids = self._shim_pids(marker) | self._cgroup_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        self._unmount_under(self.run_dir, self.socket_dir)
        self._remove_pod_networks()
        for base in self._cgroup_dirs():
            if base.is_dir():
                for path in sorted(
                    (p for p in base.rglob("*") if p.is_dir()),
                    key=lambda p: len(p.parts),
                    reverse=True,
                ):
                    with contextlib.suppress(OSError):
                        path.rmdir()
                with contextlib.suppress(OSError):
                    base.rmdir()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    @staticmethod
    def _remove_pod_networks() -> None:
        """Delete the pods' veth pairs and free their pinned network namespaces.

        Killing containerd leaves both behind: a pod's namespace would keep its address
        on the bridge, and answer (refuse) for the next pod given that address.
        """
        for link in netns.bridge_ports():
            subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        pinned = netns.PRIVATE_DIRS[0]
        for path in pinned.glob("cni-*"):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                path.unlink()

    @staticmethod
    def _shim_pids(marker: str) -> set[int]:
        pids = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if marker.encode() in argv and b"-address" in argv:
                    pids.add(int(entry.name))
        return pids

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for base in self._cgroup_dirs():
            if not base.is_dir():
                continue
            for procs in base.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in procs.read_text().split()}
        return pids

    @staticmethod
    def _unmount_under(*roots: Path) -> None:
        prefixes = [str(r.resolve()) + "/" for r in roots]
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if any(point.startswith(p) for p in prefixes):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True
