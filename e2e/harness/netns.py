"""Run a command in a network and mount namespace of its own: the real node's world.

``python -m e2e.harness.netns -- CMD ARGS...`` re-runs itself under
``unshare --net --mount --propagation private --fork --kill-child`` and, inside:

- brings ``lo`` up, creates the pod bridge ``cni0`` (10.88.0.1/16) and routes the
  service CIDR 10.96.0.0/16 through it, so local processes reach ClusterIPs;
- sets the namespace's own sysctls (``ip_forward``, ``bridge-nf-call-iptables``,
  ``route_localnet``);
- hides the few global kernel tunables the kubelet insists on "fixing"
  (``vm.overcommit_memory``, ``kernel.panic``, ...) behind files of the run
  directory bind-mounted over them in the private mount namespace, so the
  machine's values are never changed;
- mounts a tmpfs on ``/run/netns``, ``/run/containerd`` and ``/var/lib/cni`` so the
  pods' namespaces, the shims' sockets and the CNI cache stay in here;
- runs CMD with ``LOGICBUNDLE_E2E_NETNS=1`` and ``LOGICBUNDLE_E2E_NETNS_ID``;
- run from inside such a namespace, makes a new one nested in it (its own bridge,
  pod addresses, tmpfs folders and cgroup names), never reuses the outer one;
- after CMD exits, kills by pid every process still in the namespace (containerd
  shims) and in the cgroups named after the namespace id (the pods' processes,
  which live in network namespaces of their own), then removes those cgroups.

The namespace has no link to the machine's network: nothing started in it can
send a packet anywhere but to itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV_FLAG = "LOGICBUNDLE_E2E_NETNS"
ENV_ID = "LOGICBUNDLE_E2E_NETNS_ID"
ENV_DIR = "LOGICBUNDLE_E2E_NETNS_DIR"
ENV_PID = "LOGICBUNDLE_E2E_NETNS_PID"

BRIDGE = "cni0"
NODE_IP = "10.88.0.1"
POD_CIDR = "10.88.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
CGROUP_PREFIX = "logicbundle-e2e-"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# Global (not per-network-namespace) tunables the kubelet sets when they differ from
# what it expects (pkg/kubelet/cm: setupKernelTunables).
_KUBELET_TUNABLES = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)

PRIVATE_DIRS = (Path("/run/netns"), Path("/run/containerd"), Path("/var/lib/cni"))

USAGE = "usage: python -m e2e.harness.netns -- CMD [ARGS...]"


def _netns_inode(pid: int | str = "self") -> int:
    return Path(f"/proc/{pid}/ns/net").stat().st_ino


def in_harness_netns() -> bool:
    """True inside the namespace this launcher made (not the machine's own network)."""
    try:
        outside = _netns_inode(1)
    except (PermissionError, FileNotFoundError):
        return os.environ.get(ENV_FLAG) == "1"
    return os.environ.get(ENV_FLAG) == "1" and _netns_inode() != outside


def namespace_id() -> str:
    """The short id of the current harness namespace (names its cgroups)."""
    return os.environ.get(ENV_ID, "")


def enter_prefix() -> str:
    """How a shell outside reaches this namespace (``nsenter ... ``), or "" outside it."""
    pid = os.environ.get(ENV_PID)
    if not pid or not in_harness_netns():
        return ""
    return f"nsenter --target {pid} --net --mount "


def cgroup_name(suffix: str) -> str:
    """A cgroup name owned by the current harness namespace: removed when it ends."""
    return f"{CGROUP_PREFIX}{namespace_id()}-{suffix}"


def _log(msg: str) -> None:
    print(f"[e2e.harness.netns] {msg}", file=sys.stderr, flush=True)


def _run(*args: str) -> None:
    subprocess.run(args, check=True)


def _write(path: str, value: str) -> bool:
    try:
        Path(path).write_text(value)
    except OSError:
        return False
    return True


def _bridge_mac() -> str:
    """A random locally administered unicast MAC address."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def bridge_ports() -> list[str]:
    """The links enslaved to the pod bridge (one per running pod's veth pair)."""
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", BRIDGE],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _setup(work: Path) -> None:
    _run("ip", "link", "set", "lo", "up")
    # A fixed address: a bridge without one takes the lowest of its ports' addresses,
    # so it changes as pods come and go, and pods keep sending to the old one for a
    # while (their neighbour entry for the gateway).
    _run("ip", "link", "add", BRIDGE, "address", _bridge_mac(), "type", "bridge")
    _run("ip", "addr", "add", f"{NODE_IP}/16", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)
    _write("/proc/sys/net/ipv4/ip_forward", "1")
    _write("/proc/sys/net/ipv4/conf/all/route_localnet", "1")
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        _write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1")
    else:
        _log("br_netfilter is absent: bridged pod-to-pod service traffic needs masqueradeAll")
    tunables = work / "sysctl"
    tunables.mkdir()
    for name in _KUBELET_TUNABLES:
        real = Path("/proc/sys") / name
        if not real.exists():
            continue
        shadow = tunables / name.replace("/", ".")
        shadow.write_text(real.read_text())
        _run("mount", "--bind", str(shadow), str(real))
    # Pod network namespaces, containerd's shim sockets and runc state, the CNI cache:
    # fixed paths, each given a tmpfs of its own that only this namespace sees.
    for fixed in PRIVATE_DIRS:
        fixed.mkdir(parents=True, exist_ok=True)
        _run("mount", "-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs", str(fixed))


def _our_cgroups(ns_id: str) -> list[Path]:
    """Every cgroup folder (any hierarchy) named after this namespace, deepest first."""
    found: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        for top in hierarchy.glob(f"{CGROUP_PREFIX}{ns_id}-*"):
            found += [p for p in top.rglob("*") if p.is_dir()] + [top]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _leftover_pids(inode: int, ns_id: str) -> set[int]:
    pids: set[int] = set()
    # unshare itself entered the namespace before forking us: spare it and us.
    spared = {os.getpid(), os.getppid()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        with contextlib.suppress(OSError):
            if _netns_inode(entry.name) == inode:
                pids.add(int(entry.name))
    for group in _our_cgroups(ns_id):
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (group / "cgroup.procs").read_text().split()}
    pids -= spared
    return pids


def cleanup(inode: int, ns_id: str, *, timeout: float = 15.0) -> None:
    """Kill, by pid, everything left in the namespace or its cgroups; remove the cgroups."""
    deadline = time.monotonic() + timeout
    if first := _leftover_pids(inode, ns_id):
        _log(f"killing {len(first)} process(es) left in the namespace: {sorted(first)}")
    while pids := _leftover_pids(inode, ns_id):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            _log(f"processes still alive after cleanup: {sorted(pids)}")
            break
        # Reap those that are our own children; others vanish once killed.
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.05)
    for group in _our_cgroups(ns_id):
        with contextlib.suppress(OSError):
            group.rmdir()
    left = _our_cgroups(ns_id)
    if left:
        _log(f"could not remove cgroups: {[str(p) for p in left]}")


def _inside(cmd: list[str]) -> int:
    ns_id = os.environ.get(ENV_ID) or secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix=f"logicbundle-netns-{ns_id}-"))
    inode = _netns_inode()
    env = {
        **os.environ,
        ENV_FLAG: "1",
        ENV_ID: ns_id,
        ENV_DIR: str(work),
        ENV_PID: str(os.getpid()),
    }
    rc = 1
    try:
        _setup(work)
        child = subprocess.Popen(cmd, env=env)
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
        rc = child.wait()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup(inode, ns_id)
        shutil.rmtree(work, ignore_errors=True)
    return rc


def main(argv: list[str]) -> int:
    inside = bool(argv) and argv[0] == "--inside"
    if inside:
        argv = argv[1:]
    if not argv or argv[0] != "--" or len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    cmd = argv[1:]
    if inside:
        return _inside(cmd)
    # Inside a harness namespace already, CMD still gets a namespace of its own, nested:
    # two real nodes on one bridge would hand out the same pod addresses from their
    # own IPAM folders (and share the cgroup names), and a pod of one would answer for
    # a pod of the other.
    if os.geteuid() != 0:
        print("e2e.harness.netns needs root (network namespaces, bridges)", file=sys.stderr)
        return 2
    unshare = shutil.which("unshare")
    if unshare is None:
        print("e2e.harness.netns needs unshare (util-linux)", file=sys.stderr)
        return 2
    env = {**os.environ, ENV_ID: secrets.token_hex(3)}
    # Ctrl-C reaches the whole foreground group, CMD included; the inner launcher then
    # cleans up.  A SIGTERM to this process becomes a SIGTERM to the inner launcher.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    outer = subprocess.Popen(
        [
            unshare,
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--kill-child=SIGTERM",
            sys.executable,
            "-m",
            "e2e.harness.netns",
            "--inside",
            "--",
            *cmd,
        ],
        env=env,
    )
    signal.signal(signal.SIGTERM, lambda *_: outer.kill())
    return outer.wait()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
