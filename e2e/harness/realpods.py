"""Real pods on the real node: what they serve, traffic to them, their containers and cgroups.

The kwok suites drive host processes bound to Pod objects (:mod:`e2e.harness.fleet`);
here the pods are real: the kubelet started their containers from the images
the harness built, and the test process (inside the harness's network
namespace) reaches each pod at its IP on the node's bridge.  Containers are
killed through containerd (``ctr``), by the container id the kubelet reported,
never by process name.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError, wait_for

APP_PORT = 8080


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods of ``namespace`` matching the label ``selector``, by name."""
    query = urllib.parse.quote(selector, safe="=,!")
    items = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={query}")[
        "items"
    ]
    return sorted(items, key=lambda p: p["metadata"]["name"])


def is_ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def container_statuses(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The statuses of the pod's init containers (sidecars included), then its containers."""
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def container_status(pod: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for item in container_statuses(pod):
        if item["name"] == name:
            return dict(item)
    raise HarnessError(f"pod {pod['metadata']['name']} has no status for container {name}")


def restart_counts(pod: Mapping[str, Any]) -> dict[str, int]:
    return {item["name"]: int(item.get("restartCount", 0)) for item in container_statuses(pod)}


def get_json(url: str, *, timeout: float = 2.0) -> tuple[int, Any]:
    """``(status, body)`` of a GET; ``(0, None)`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return int(exc.code), body
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def active_digest(ip: str) -> str | None:
    """The digest the application in the pod at ``ip`` serves (its /healthz), or None."""
    status, body = get_json(f"http://{ip}:{APP_PORT}/healthz")
    if status == 200 and isinstance(body, dict):
        digest = body.get("active")
        return str(digest) if digest else None
    return None


@dataclass
class Answer:
    at: float
    pod: str
    status: int
    digest: str | None


@dataclass
class Traffic:
    """GETs ``/price`` on every Ready pod of a selector, round robin, in a thread.

    Records every answer, so a test can check that no pod ever answered with
    anything but a whole known version.
    """

    cluster: Cluster
    namespace: str
    selector: str
    per_second: float = 40.0
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="real-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _targets(self) -> list[tuple[str, str]]:
        try:
            found = pods(self.cluster, self.namespace, self.selector)
        except HarnessError:
            return []
        return [
            (p["metadata"]["name"], p["status"]["podIP"])
            for p in found
            if is_ready(p) and (p.get("status") or {}).get("podIP")
        ]

    def _run(self) -> None:
        rng = random.Random(11)  # noqa: S311 - load generation, not secrets
        targets: list[tuple[str, str]] = []
        refreshed = 0.0
        interval = 1.0 / self.per_second
        while not self._stop.wait(interval):
            if time.monotonic() - refreshed > 1.0:
                targets = self._targets() or targets
                refreshed = time.monotonic()
            if not targets:
                continue
            name, ip = targets[rng.randrange(len(targets))]
            status, body = get_json(f"http://{ip}:{APP_PORT}/price?item=apple&qty=2")
            digest = body.get("digest") if isinstance(body, dict) else None
            self.answers.append(Answer(time.monotonic(), name, status, digest))

    def digests(self) -> Counter[str | None]:
        return Counter(a.digest for a in self.answers if a.status in (200, 500))


def served(cluster: Cluster, namespace: str, selector: str) -> dict[str, str | None]:
    """Pod name -> the digest its application serves now (None: not answering)."""
    return {
        p["metadata"]["name"]: active_digest(p["status"]["podIP"])
        for p in pods(cluster, namespace, selector)
        if (p.get("status") or {}).get("podIP")
    }


def wait_all_serving(
    cluster: Cluster, namespace: str, selector: str, digest: str, *, count: int, timeout: float
) -> float:
    """Wait until ``count`` pods serve ``digest``; the seconds it took."""
    started = time.monotonic()

    def done() -> bool:
        now = served(cluster, namespace, selector)
        return len(now) == count and all(d == digest for d in now.values())

    wait_for(done, what=f"{count} pods serving {digest[:19]}", timeout=timeout)
    return time.monotonic() - started


@dataclass(frozen=True)
class Containerd:
    """The node's containerd, reached with its own ``ctr`` on its own socket."""

    socket: Path
    ctr: str = "ctr"

    def _ctr(self, *args: str) -> str:
        proc = subprocess.run(
            [self.ctr, "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise HarnessError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def kill(self, container_id: str) -> None:
        """SIGKILL the container's process, as an OOM kill or a crash would."""
        self._ctr("tasks", "kill", "--signal", "SIGKILL", container_id)

    def pid(self, container_id: str) -> int:
        """The host pid of the container's first process."""
        for line in self._ctr("tasks", "ls").splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return int(fields[1])
        raise HarnessError(f"containerd has no task {container_id}")


def container_id(pod: Mapping[str, Any], name: str) -> str:
    """The runtime's id of container ``name`` (``containerd://<id>`` in the pod status)."""
    raw = container_status(pod, name).get("containerID") or ""
    _, _, cid = raw.partition("://")
    if not cid:
        raise HarnessError(f"container {name} of {pod['metadata']['name']} has no id yet")
    return cid


def _memory_cgroup(pid: int) -> Path:
    """The directory of the memory cgroup (v1) the process ``pid`` is in."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
    raise HarnessError(f"process {pid} is in no memory cgroup")


def cgroup_memory_bytes(pid: int) -> int:
    """``memory.usage_in_bytes`` of the memory cgroup (v1) the process ``pid`` is in."""
    return int((_memory_cgroup(pid) / "memory.usage_in_bytes").read_text())


def cgroup_memory_working_set(pid: int) -> int:
    """The working set of the process's memory cgroup, as the kubelet computes it.

    ``usage - total_inactive_file`` (what ``kubectl top`` and evictions use).
    """
    base = _memory_cgroup(pid)
    stat = {
        k: int(v)
        for k, v in (row.split() for row in (base / "memory.stat").read_text().splitlines())
    }
    return max(0, cgroup_memory_bytes(pid) - stat.get("total_inactive_file", 0))


def exec_in(
    cluster: Cluster, namespace: str, pod: str, container: str, *command: str
) -> subprocess.CompletedProcess[str]:
    """``kubectl exec`` through the API server and the kubelet (not a harness shortcut)."""
    return subprocess.run(
        [
            str(cluster.kubectl_path),
            f"--kubeconfig={cluster.kubeconfig}",
            "exec",
            "-n",
            namespace,
            pod,
            "-c",
            container,
            "--",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def watching_pods(cluster: Cluster, namespace: str, selector: str) -> Iterator[list[Any]]:
    """Every pod version a watch delivers while the block runs: ``(monotonic time, pod)``."""
    with watching(
        cluster, f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": selector}
    ) as seen:
        yield seen


@contextlib.contextmanager
def watching(cluster: Cluster, collection: str, query: Mapping[str, str]) -> Iterator[list[Any]]:
    """Every object version a watch of ``collection`` delivers while the block runs.

    ``collection`` is an API path and ``query`` narrows it (``labelSelector``,
    ``fieldSelector``); each entry is ``(monotonic time, object)``, the opening
    list first.
    """
    seen: list[Any] = []
    stop = threading.Event()

    def follow() -> None:
        version = ""
        while not stop.is_set():
            params = {**query, "watch": "1", "timeoutSeconds": "30"}
            if version:
                params["resourceVersion"] = version
            url = f"{cluster.server}{collection}?" + urllib.parse.urlencode(params)
            try:
                with urllib.request.urlopen(url, context=cluster.ssl_context(), timeout=1.0) as s:
                    for line in s:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            version = ""
                            break
                        obj = event.get("object") or {}
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        seen.append((time.monotonic(), obj))
                        if stop.is_set():
                            return
            except (OSError, ValueError):
                stop.wait(0.2)

    thread = threading.Thread(target=follow, name="watch", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)
