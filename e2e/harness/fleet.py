"""A fleet of kwok pods with a real agent and a real sample app each, as local processes.

kwok runs no containers, so for every Pod the harness starts what the
injected sidecar and the application container would run: ``logicbundle
agent`` (configured as the webhook would configure it, with a token from a
real TokenRequest bound to that Pod) and the sample pricing app
(``examples.sample_app.app``), sharing a root directory like the pod's
bundles emptyDir and a socket directory like its socket emptyDir (the
layout the webhook injects: the SDK socket is never inside the bundles
volume, which is read-only to the application in a pod).  The operator
under test assigns digests; the agents fetch them
from its distributor and the apps serve them.  :class:`Traffic` calls the
apps so the SDK counts calls, errors and latency per version: the builtin
analysis has something to judge.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.harness.cluster import Cluster
from e2e.harness.proc import Process, free_port, wait_for
from logicbundle import contract
from logicbundle.agent import format_annotations
from logicbundle.api import names
from logicbundle.sdk import SOCKET_ENV

REPO = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNT = "fleet"
DEADLINE = 60.0


def _get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return int(status), json.loads(raw)
    except ValueError:
        return int(status), raw.decode(errors="replace")


@dataclass
class FleetPod:
    """One pod: its Pod object and its agent and app processes."""

    name: str
    uid: str
    run_dir: Path
    agent_port: int
    agent: Process | None = None
    app: Process | None = None
    app_port: int = 0

    @property
    def root(self) -> Path:
        """The pod's bundles volume (read-only to the application in a real pod)."""
        return self.run_dir / "root"

    @property
    def socket(self) -> Path:
        """The SDK socket, in the pod's socket volume (``$LOGICBUNDLE_SOCKET`` of the app)."""
        return self.run_dir / "sdk" / "sdk.sock"

    def ready(self) -> bool:
        return _get(f"http://127.0.0.1:{self.agent_port}/readyz")[0] == 200

    def served(self, *, user: str = "u") -> tuple[int, Any]:
        return _get(f"http://127.0.0.1:{self.app_port}/price?item=apple&qty=2&user={user}")

    def served_digest(self) -> str | None:
        status, body = self.served()
        return body.get("digest") if status == 200 and isinstance(body, dict) else None

    def stop(self) -> None:
        for proc in (self.app, self.agent):
            if proc is not None:
                proc.stop()


@dataclass
class Fleet:
    """Pods of one Deployment-like group, selected by ``labels``."""

    cluster: Cluster
    namespace: str
    work: Path
    distributor_url: str
    bundles: Mapping[str, Mapping[str, Any]]
    """Bundle name -> the agent's per-bundle settings (source, insecure, notify...)."""
    labels: Mapping[str, str]
    pods: list[FleetPod] = field(default_factory=list)
    report_interval: str = "1s"
    app_args: Sequence[str] = ()
    """Extra arguments of every sample app (``--leak-grace 1``)."""
    replica_urls: Sequence[str] = ()
    """Distributor replicas: pod i talks to ``replica_urls[i % n]`` (as a Service would
    spread them); empty: every pod talks to ``distributor_url``."""
    _projector: threading.Thread | None = None
    _projecting: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        with contextlib.suppress(Exception):  # it may exist from an earlier fleet
            self.cluster.request(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts",
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": SERVICE_ACCOUNT},
                },
            )

    # -- pods ---------------------------------------------------------------------------

    def add(self, count: int, *, extra_labels: Mapping[str, str] | None = None) -> list[FleetPod]:
        """Create ``count`` opted-in pods (with the agent container) and start their agents."""
        added = []
        for _ in range(count):
            name = f"web-{len(self.pods)}"
            body = self.cluster.request(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": name,
                        "labels": {
                            **self.labels,
                            **(extra_labels or {}),
                            names.LABEL_INJECT: names.LABEL_INJECT_ENABLED,
                        },
                        # What the webhook stamps (it keeps values already there).
                        "annotations": {
                            contract.ANNOTATION_COHORT_KEY: f"{self.namespace}/{name}",
                            contract.ANNOTATION_ADMITTED_AT: str(int(time.time() * 1000)),
                        },
                    },
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "initContainers": [
                            {
                                "name": names.AGENT_CONTAINER,
                                "image": "registry.invalid/lb:1",
                                "restartPolicy": "Always",
                            }
                        ],
                        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                    },
                },
            )
            pod = FleetPod(
                name=name,
                uid=body["metadata"]["uid"],
                run_dir=self.work / name,
                agent_port=free_port(),
            )
            pod.root.mkdir(parents=True)
            pod.socket.parent.mkdir()
            (pod.run_dir / "token").write_text(self._token(pod))
            # The downward-API files the kubelet projects into the agent container.
            meta = body["metadata"]
            (pod.run_dir / "annotations").write_text(
                format_annotations(meta.get("annotations") or {})
            )
            (pod.run_dir / "labels").write_text(format_annotations(meta.get("labels") or {}))
            (pod.run_dir / "state").mkdir()
            self._start_agent(pod)
            self.pods.append(pod)
            added.append(pod)
        return added

    def _token(self, pod: FleetPod) -> str:
        return self.cluster.pod_token(self.namespace, SERVICE_ACCOUNT, pod=pod.name, uid=pod.uid)

    def _env(self, pod: FleetPod) -> dict[str, str]:
        return {
            "POD_NAME": pod.name,
            "POD_NAMESPACE": self.namespace,
            "PYTHONPATH": f"{REPO / 'operator'}:{REPO}",
        }

    def _start_agent(self, pod: FleetPod) -> None:
        url = self.distributor_url
        if self.replica_urls:
            url = self.replica_urls[len(self.pods) % len(self.replica_urls)]
        config = {
            "root": str(pod.root),
            "distributor": url,
            "tokenFile": str(pod.run_dir / "token"),
            "annotationsFile": str(pod.run_dir / "annotations"),
            "labelsFile": str(pod.run_dir / "labels"),
            "stateDir": str(pod.run_dir / "state"),
            "socket": str(pod.socket),
            "listen": f"127.0.0.1:{pod.agent_port}",
            "reportInterval": self.report_interval,
            "bundles": {name: dict(settings) for name, settings in self.bundles.items()},
        }
        (pod.run_dir / "agent.json").write_text(json.dumps(config))
        pod.agent = Process(
            f"agent-{pod.name}",
            [sys.executable, "-m", "logicbundle.agent", "--config", pod.run_dir / "agent.json"],
            run_dir=pod.run_dir,
            env=self._env(pod),
        )

    def start_apps(self, pods: Sequence[FleetPod] | None = None) -> None:
        """Start the apps once their agents are ready (the native sidecar's startup probe)."""
        for pod in pods if pods is not None else self.pods:
            if pod.app is not None:
                continue
            wait_for(
                pod.ready,
                what=f"the agent of {pod.name} ready",
                timeout=DEADLINE,
                watch=[p for p in (pod.agent,) if p],
            )
            port_file = pod.run_dir / "app.port"
            pod.app = Process(
                f"app-{pod.name}",
                [
                    sys.executable,
                    "-m",
                    "examples.sample_app.app",
                    "--root",
                    pod.root,
                    "--port",
                    "0",
                    "--port-file",
                    port_file,
                    *self.app_args,
                ],
                run_dir=pod.run_dir,
                # What the webhook sets in the application container.
                env={**self._env(pod), SOCKET_ENV: str(pod.socket)},
            )
            pod.app_port = int(
                wait_for(
                    lambda f=port_file: (  # type: ignore[misc]
                        f.read_text().strip() if f.exists() else None
                    ),
                    what=f"the app of {pod.name} listening",
                    timeout=DEADLINE,
                    watch=[pod.app],
                )
            )

    def served(self) -> dict[str, int]:
        """How many apps serve each digest right now."""
        counts: dict[str, int] = {}
        for pod in self.pods:
            digest = pod.served_digest()
            counts[str(digest)] = counts.get(str(digest), 0) + 1
        return counts

    def wait_serving(self, digest: str, *, count: int | None = None, timeout: float = 60) -> None:
        want = len(self.pods) if count is None else count
        wait_for(
            lambda: self.served().get(digest, 0) == want,
            what=f"{want} apps serving {digest[:19]}",
            timeout=timeout,
            watch=[p for pod in self.pods for p in (pod.agent, pod.app) if p],
        )

    # -- the slow path: what the kubelet does with the state ConfigMaps --------------------

    def project_states(self, *, every: float = 1.0) -> None:
        """Copy the ``lb-state-*`` ConfigMaps into every pod's state folder, like the kubelet.

        The kubelet refreshes a projected ConfigMap on its sync loop (about a
        minute); here every ``every`` seconds, written atomically (a new file
        renamed over the old one).  Runs until :meth:`stop`.
        """
        if self._projector is not None:
            return

        def run() -> None:
            while not self._projecting.wait(every):
                with contextlib.suppress(Exception):  # the API server may be busy: next round
                    self._project_once()

        self._projector = threading.Thread(target=run, name="state-projector", daemon=True)
        self._projector.start()

    def _project_once(self) -> None:
        items = self.cluster.request("GET", f"/api/v1/namespaces/{self.namespace}/configmaps")
        for item in items.get("items") or []:
            name = item["metadata"]["name"]
            if not name.startswith(contract.STATE_CONFIGMAP_PREFIX):
                continue
            bundle = name.removeprefix(contract.STATE_CONFIGMAP_PREFIX)
            data = (item.get("data") or {}).get(contract.STATE_KEY)
            if data is None:
                continue
            for pod in list(self.pods):
                target = pod.run_dir / "state" / contract.state_file_name(bundle)
                if target.exists() and target.read_text() == data:
                    continue
                tmp = target.with_suffix(".tmp")
                tmp.write_text(data)
                tmp.replace(target)

    def stop(self) -> None:
        self._projecting.set()
        if self._projector is not None:
            self._projector.join(10)
        for pod in self.pods:
            pod.stop()


class Traffic:
    """Calls every app of a fleet in a background thread, with sticky random users."""

    def __init__(self, fleet: Fleet, *, per_second: float = 100.0) -> None:
        self.fleet = fleet
        self.per_second = per_second
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        rng = random.Random(7)  # noqa: S311 - load generation, not secrets
        interval = 1.0 / self.per_second
        while not self._stop.wait(interval):
            pods = [p for p in self.fleet.pods if p.app_port]
            if pods:
                rng.choice(pods).served(user=f"user-{rng.randrange(1000)}")
                self.calls += 1
