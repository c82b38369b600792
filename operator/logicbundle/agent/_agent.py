"""The agent: target sources, one worker per bundle, reports, and the probe/metrics server.

Threads, not asyncio: every wait is a blocking socket or a condition
variable, ``http.client`` (for the distributor, imported only when one is
configured) and the small server of :mod:`logicbundle.agent._http` need no
event loop, and a few idle threads cost less memory than an event loop plus
an async HTTP stack.  Threads:

* ``fast``: the long-poll to the distributor (``GET /v1/targets``);
* ``slow``: polls the mounted rollout states and the pod's downward-API
  files (mtime, size, inode) and evaluates the target rule over them
  (:mod:`logicbundle.agent._slow`);
* one worker per bundle (:mod:`logicbundle.agent._worker`);
* ``report``: posts the report on every change and every 10 s;
* ``http``: ``/healthz``, ``/readyz``, ``/metrics``.

Which path wins: while the distributor answers with ``known: true`` its
targets are the truth.  When it is unreachable, refuses us, or answers
``known: false``, the slow path is followed -- but a bundle's slow target is
taken only when it differs from what the slow path said while the fast path
was in charge (the kubelet refreshes the mounted state late, so an old value
there must not undo a newer assignment that came over the fast path).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from logicbundle import __version__, contract
from logicbundle.agent import _notify
from logicbundle.agent._config import (
    AgentConfig,
    HealthSettings,
    NotifySettings,
    parse_health,
    parse_notify,
)
from logicbundle.agent._errors import AgentError, FetchError
from logicbundle.agent._fetch import Fetcher
from logicbundle.agent._http import ProbeServer
from logicbundle.agent._metrics import AgentMetrics
from logicbundle.agent._slow import SlowPath
from logicbundle.agent._store import BundleStore
from logicbundle.agent._targets import Target
from logicbundle.agent._worker import BundleStatus, BundleWorker, now_iso

if TYPE_CHECKING:
    from logicbundle.agent._distributor import DistributorClient

logger = logging.getLogger("logicbundle.agent")

LONG_POLL_WAIT: Final = 30.0
REPORT_INTERVAL: Final = 10.0
ANNOTATIONS_INTERVAL: Final = 1.0
"""Seconds between two looks (a stat of each file) at the slow path's files."""
MAX_VERSIONS: Final = 4
STOP_DEADLINE: Final = 3.0
"""Seconds :meth:`Agent.stop` takes at most (SIGTERM to exit; a pod's grace is longer)."""
FINAL_REPORT_TIMEOUT: Final = 1.0
MIN_FINAL_REPORT: Final = 0.2

TargetListener = Callable[[str, str, Target | None], None]
"""Called as ``(path, bundle, target)`` whenever a path changes a bundle's target (tests)."""


class Agent:
    """The reload agent for one pod; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        annotations_interval: float = ANNOTATIONS_INTERVAL,
        report_interval: float = REPORT_INTERVAL,
        long_poll_wait: float = LONG_POLL_WAIT,
        backoff_base: float = 5.0,
        grace_period: float = 30.0,
        durable: bool = True,
        on_target: TargetListener | None = None,
    ) -> None:
        self.config = config
        self.metrics = AgentMetrics()
        self.started_at = now_iso()
        self._annotations_interval = annotations_interval
        self._report_interval = report_interval
        self._long_poll_wait = long_poll_wait
        self._on_target = on_target
        self._stop = threading.Event()
        self._report_due = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.client: DistributorClient | None = None
        if config.distributor:
            # http.client and ssl come with it: an agent without a distributor never loads them.
            from logicbundle.agent._distributor import DistributorClient  # noqa: PLC0415

            self.client = DistributorClient(
                config.distributor, token_file=config.token_file, ca_file=config.distributor_ca
            )
        fetcher = Fetcher(distributor=self.client)
        self._fetcher = fetcher
        config.root.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, BundleWorker] = {
            name: BundleWorker(
                settings=settings,
                store=BundleStore(config.root, name),
                fetcher=fetcher,
                sdk_socket=config.socket,
                metrics=self.metrics,
                on_change=self._report_due.set,
                backoff_base=backoff_base,
                grace_period=grace_period,
                durable=durable,
            )
            for name, settings in config.bundles.items()
        }
        self._stats_client = _notify.SdkClient(config.socket)
        # Target bookkeeping (under _lock).
        self._fast: dict[str, Target] | None = None
        self._fast_answered = False
        self._slow: dict[str, Target] = {}
        self._slow_read = False
        self._slow_changed_at: dict[str, float] = {}
        """Per bundle, when the slow path's target last changed (monotonic)."""
        self._fast_revision: dict[str, int] = {}
        """Per bundle, the newest state revision the distributor answered with."""
        self._fast_confirmed_at = 0.0
        """When the distributor last answered (200 or 304): what it said held then."""
        self._effective: dict[str, Target | None] = {}
        self._told = False
        """A path has answered and its targets were handed to the workers (under _lock)."""
        self._fast_decided = threading.Event()
        if self.client is None:
            self._fast_decided.set()
        self._server: ProbeServer | None = None
        self.last_report_status: int | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, *, serve_http: bool = True) -> None:
        for worker in self.workers.values():
            worker.start()
        if serve_http:
            self._server = _make_server(self)
            self._spawn("http", self._server.serve_forever)
        if self.client is not None:
            self._spawn("fast", self._fast_loop)
        self._spawn("slow", self._slow_loop)
        self._spawn("report", self._report_loop)

    @property
    def http_port(self) -> int:
        assert self._server is not None  # noqa: S101
        return int(self._server.server_address[1])

    def _spawn(self, name: str, run: Callable[[], None]) -> None:
        thread = threading.Thread(target=run, name=f"logicbundle-agent-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Stop every thread, within ``deadline`` seconds in all.

        A swap in progress gets what is left of the deadline to finish; a thread
        still waiting on the network after it (a long-poll or a report to a
        distributor that never answers) is a daemon and dies with the process.
        Every swap step survives being cut short (the protocol is built for SIGKILL
        at any step), so the bound costs nothing but the last report.
        """
        end = time.monotonic() + deadline

        def left(cap: float = deadline) -> float:
            return max(0.0, min(cap, end - time.monotonic()))

        self._stop.set()
        self._report_due.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for worker in self.workers.values():
            worker.stop(left())
        for thread in self._threads:
            thread.join(left(0.5 if thread.name.endswith("fast") else 5.0))
        if left() >= MIN_FINAL_REPORT:
            self._send_report(timeout=left(FINAL_REPORT_TIMEOUT))
        self._stats_client.close()

    def wait(self) -> None:
        self._stop.wait()

    # --- targets -----------------------------------------------------------------------

    def statuses(self) -> dict[str, BundleStatus]:
        return {name: worker.status for name, worker in self.workers.items()}

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            told = self._told and ((self._fast is not None) or self._slow_read)
            effective = dict(self._effective)
        if not told:
            return (
                False,
                "no target known yet (neither from the distributor nor from the slow path)",
            )
        waiting = [
            f"{name}: {s.active or 'nothing'} active, {s.target} assigned"
            + (f" ({s.last_error.reason})" if s.last_error else "")
            for name, s in self.statuses().items()
            if not s.ready or not _runs(s, effective.get(name))
        ]
        if waiting:
            return False, "; ".join(waiting)
        return True, "every assigned bundle is active"

    def _dispatch(self, path: str) -> None:
        """Recompute the effective target of every bundle and hand changes to the workers."""
        changes: list[tuple[str, Target | None]] = []
        with self._lock:
            fast = self._fast
            for name in self.workers:
                slow = self._slow.get(name)
                if fast is not None:
                    target: Target | None = fast.get(name)
                    if target is not None and target.revision:
                        seen = self._fast_revision.get(name, 0)
                        self._fast_revision[name] = max(seen, target.revision)
                    if (
                        target is not None
                        and slow is not None
                        and target.revision
                        and slow.revision > target.revision
                    ):
                        # The mounted state is newer than the distributor's answer (it
                        # lags, or its connection went dead): the newest state wins.
                        target = slow
                else:
                    if slow is None:
                        continue  # not in the file: keep what we have
                    if not self._newer(name, slow):
                        continue  # the kubelet's copy lags what the distributor said
                    target = slow
                if name in self._effective and _same(self._effective[name], target):
                    continue
                self._effective[name] = target
                changes.append((name, target))
            if fast is not None or self._slow_read:
                self._told = True
        for name, target in changes:
            self.metrics.target_update(path)
            if self._on_target is not None:
                self._on_target(path, name, target)
            self.workers[name].assign(target)

    def _newer(self, name: str, slow: Target) -> bool:
        """Whether the slow path's ``slow`` comes from a newer state than the fast path's.

        By the states' revisions; a state without one (published before revisions)
        is newer when it changed after the distributor last answered.  Under _lock.
        """
        told = self._fast_revision.get(name)
        if told is None:
            return self._slow_changed_at.get(name, 0.0) > self._fast_confirmed_at
        if slow.revision or told:
            return slow.revision > told
        return self._slow_changed_at.get(name, 0.0) > self._fast_confirmed_at

    def _fast_loop(self) -> None:
        client = self.client
        assert client is not None  # noqa: S101
        version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                status, body = client.targets(
                    version=version,
                    wait=self._long_poll_wait,
                    timeout=(self._long_poll_wait + 10.0) if version else 10.0,
                )
            except (FetchError, OSError) as exc:
                status, body = 0, None
                logger.debug("distributor unreachable: %s", exc)
            if status == 304:
                failures = 0
                self._fast_confirmed_at = time.monotonic()
                continue
            if status == 200 and body is not None:
                failures = 0
                version = body.get("version") if isinstance(body.get("version"), str) else None
                self._fast_answer(body)
                continue
            # Unreachable, refused or broken: follow the file and try again later.
            version = None
            self._fast_down()
            failures += 1
            self._stop.wait(min(0.5 * 2 ** min(failures, 6), 30.0))

    def _fast_answer(self, body: Mapping[str, Any]) -> None:
        self._fast_confirmed_at = time.monotonic()
        back = self.metrics.fast_path_up != 1
        self.metrics.fast_path_up = 1
        self._fetcher.distributor_up = True
        if back:
            # A distributor that answers after a gap (a restarted operator or replica, or
            # the first answer) knows nothing of this pod: report at once, not in 10 s.
            self._report_due.set()
        targets: dict[str, Target] | None = None
        if body.get("known") is True and isinstance(body.get("targets"), dict):
            targets = {}
            for name, raw in body["targets"].items():
                try:
                    targets[name] = _target_from_json(raw)
                except (ValueError, AgentError) as exc:
                    logger.warning("distributor target of %s is unusable: %s", name, exc)
        with self._lock:
            self._fast = targets
        self._fast_decided.set()
        self._dispatch("fast")

    def _fast_down(self) -> None:
        self.metrics.fast_path_up = 0
        self._fetcher.distributor_up = False
        with self._lock:
            was = self._fast
            self._fast = None
        self._fast_decided.set()
        if was is not None:
            logger.warning("the distributor is unreachable; following the published rollout state")
            self._dispatch("slow")

    def _slow_loop(self) -> None:
        slow = SlowPath.of(self.config)
        # The first answer of the distributor (or its failure) decides; the files wait for it.
        self._fast_decided.wait(15.0)
        while not self._stop.is_set():
            if slow.changed():
                reading = slow.read()
                now = time.monotonic()
                with self._lock:
                    for name in set(self._slow) | set(reading.targets):
                        if self._slow.get(name) != reading.targets.get(name):
                            self._slow_changed_at[name] = now
                    self._slow = dict(reading.targets)
                    self._slow_read = self._slow_read or reading.told
                self._dispatch("slow")
            self._stop.wait(self._annotations_interval)

    # --- reports ------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            self._report_due.wait(self._report_interval)
            if self._stop.is_set():
                return
            self._report_due.clear()
            self._send_report()

    def _send_report(self, *, timeout: float = 10.0) -> None:
        if self.client is None:
            return
        report = self.report()
        try:
            status = self.client.post_report(report, timeout=timeout)
        except FetchError as exc:
            logger.debug("report not sent: %s", exc)
            self.metrics.report("unreachable")
            return
        self.last_report_status = status
        self.metrics.report("ok" if status == 204 else f"http{status}")
        if status != 204:
            logger.warning("the distributor refused the report with status %s", status)

    def sdk_stats(self) -> dict[str, Any]:
        if not any(w.settings.notify.mode == "sdk" for w in self.workers.values()):
            return {}
        if not self.config.socket.exists():
            return {}
        try:
            reply = self._stats_client.call({"op": "stats"}, timeout=1.0)
        except AgentError:
            return {}
        bundles = reply.get("bundles") if reply.get("ok") else None
        if not isinstance(bundles, dict):
            return {}
        process = reply.get("process")
        if isinstance(process, dict):
            # The process's health goes with every bundle's stats, to its primary version.
            for stats in bundles.values():
                if isinstance(stats, dict):
                    stats["process"] = process
        return bundles

    def report(self) -> dict[str, Any]:
        """The body of ``POST /v1/reports`` (``docs/distributor-protocol.md``)."""
        stats = self.sdk_stats()
        bundles: dict[str, Any] = {}
        for name, status in self.statuses().items():
            entry: dict[str, Any] = {
                "active": status.active,
                "previous": status.previous,
                "target": status.target.digest if status.target else None,
                "healthy": status.healthy,
                "versions": versions_from_stats(stats.get(name)),
            }
            if status.last_error is not None:
                entry["lastError"] = status.last_error.to_json()
            if status.last_swap is not None:
                entry["lastSwap"] = status.last_swap.to_json()
            sdk = stats.get(name)
            leaks = contract.leaks_of(sdk.get("leaks") if isinstance(sdk, dict) else None)
            if leaks:
                # Only when there are some: a distributor older than the field refuses it.
                entry["leaks"] = leaks
            bundles[name] = entry
        return {
            "bundles": bundles,
            "agent": {"version": __version__[:64], "startedAt": self.started_at},
        }


def versions_from_stats(stats: object) -> dict[str, Any]:
    """The SDK's per-version counters in the report's shape (at most 4, serving first).

    The SDK exports cumulative buckets at powers of four; the report takes
    non-cumulative power-of-two buckets, index ``k`` meaning ``< 2**k`` ns, so
    each exported bound ``2**k`` lands at index ``k`` (the schema of
    :mod:`logicbundle.contract`: :func:`~logicbundle.contract.bucket_of_upper_ns`).
    The process's health (``stats["process"]``, sampled by the SDK) goes to the
    primary version only: a pod's process is judged as the version it serves.
    """
    if not isinstance(stats, dict) or not isinstance(stats.get("versions"), list):
        return {}
    out: dict[str, Any] = {}
    for version in stats["versions"]:
        if len(out) >= MAX_VERSIONS:
            break
        if not isinstance(version, dict):
            continue
        digest = version.get("digest")
        if not isinstance(digest, str) or digest in out:
            continue
        latency = version.get("latency") if isinstance(version.get("latency"), dict) else {}
        assert isinstance(latency, dict)  # noqa: S101
        buckets = [0] * 0
        previous = 0
        for pair in latency.get("buckets", []):
            try:
                bound, count = int(pair[0]), int(pair[1])
            except (TypeError, ValueError, IndexError):
                continue
            k = contract.bucket_of_upper_ns(bound)
            if k < 0 or k >= contract.MAX_LATENCY_BUCKETS:
                continue
            if len(buckets) <= k:
                buckets.extend([0] * (k + 1 - len(buckets)))
            buckets[k] += max(count - previous, 0)
            previous = max(count, previous)
        out[digest] = {
            "calls": _count(version.get("calls")),
            "errors": _count(version.get("errors")),
            "inflight": _count(version.get("inflight")),
            "totalNs": _count(latency.get("sumNs")),
            "latencyBuckets": buckets,
        }
        process = stats.get("process")
        if version.get("role") == "primary" and isinstance(process, dict):
            out[digest].update(
                {
                    key: _count(process.get(key))
                    for key in ("rssBytes", "threads", "gcPauseNs", "wallNs")
                    if key in process
                }
            )
    return out


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _runs(status: BundleStatus, target: Target | None) -> bool:
    """Whether the worker runs ``target`` (handed to it, maybe not taken yet)."""
    if target is None:
        return True
    active = (status.active, status.candidate, status.weight)
    return active == target.key and status.healthy is not False


def _same(a: Target | None, b: Target | None) -> bool:
    return a == b


def _target_from_json(raw: object) -> Target:
    if not isinstance(raw, dict):
        raise ValueError("a target must be an object")
    split = raw.get("split")
    candidate, weight = None, 0
    if isinstance(split, dict):
        candidate = split.get("candidate")
        raw_weight = split.get("weight", 0)
        weight = int(raw_weight) if isinstance(raw_weight, float) else raw_weight
        if not isinstance(weight, int) or isinstance(weight, bool):
            raise ValueError("split.weight must be an integer percentage")
    notify: NotifySettings | None = None
    health: HealthSettings | None = None
    if raw.get("notify") is not None:
        notify = parse_notify(raw["notify"], "target.notify")
    if raw.get("healthCheck") is not None:
        health = parse_health(
            raw["healthCheck"], "target.healthCheck", notify=notify or NotifySettings()
        )
    source = raw.get("source")
    mount = raw.get("mountPath")
    revision = raw.get("revision")
    trace = raw.get("traceparent")
    return Target(
        digest=str(raw.get("digest")),
        candidate=candidate if isinstance(candidate, str) else None,
        weight=weight if candidate else 0,
        notify=notify,
        health=health,
        source=source if isinstance(source, str) else None,
        mount_path=mount if isinstance(mount, str) and mount.startswith("/") else None,
        revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else 0,
        traceparent=trace if contract.parse_traceparent(trace) is not None else None,
    )


def _make_server(agent: Agent) -> ProbeServer:
    def route(path: str) -> tuple[int, str, str]:
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", "ok\n"
        if path == "/readyz":
            ready, why = agent.ready()
            return (200 if ready else 503), "text/plain; charset=utf-8", why + "\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", agent.metrics.text()
        if path == "/status":
            return 200, "application/json", json.dumps(agent.report())
        return 404, "text/plain; charset=utf-8", "not found\n"

    return ProbeServer(agent.config.listen_address, route)


def pid_file(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.write_text(str(os.getpid()))
