"""One thread per bundle: applies the latest target, one swap at a time.

Coalescing: :meth:`BundleWorker.assign` only overwrites a single pending
slot and wakes the thread; the thread takes whatever is in the slot when it
is free again.  Three target changes during one swap therefore lead to one
more swap, to the last of them.  A failed target is not retried until its
back-off has passed (5 s, doubling to 5 min); a different assignment resets it.

A swap: fetch what is missing (checked, unpacked, fsynced), describe the
split (``split.json``, or none), point ``current`` at the primary digest,
tell the application, confirm health.  On failure both flip back to what
they were (same write + rename), the application is told again, and the
failure is recorded for the report.  The first activation (nothing active
before) does not wait for an application that is not there yet: the agent
is its startup gate, and it reads ``current`` and ``split.json`` when it starts.
Old versions are deleted only once the application let go of them (the SDK's
``release``) or, for the other modes, after a grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from logicbundle.agent import _notify, _seams
from logicbundle.agent._config import BundleSettings, HealthSettings, NotifySettings
from logicbundle.agent._errors import NotifyError, UnhealthyError
from logicbundle.agent._fetch import Fetcher
from logicbundle.agent._metrics import AgentMetrics
from logicbundle.agent._store import BundleStore
from logicbundle.agent._targets import Target
from logicbundle.contract import VERSIONS_DIR
from logicbundle.errors import LogicBundleError

logger = logging.getLogger("logicbundle.agent")

BACKOFF_BASE: Final = 5.0
BACKOFF_MAX: Final = 300.0
GC_INTERVAL: Final = 10.0
GRACE_PERIOD: Final = 30.0
MAX_MESSAGE: Final = 1024

ActiveKey = tuple[str, str | None, int]


def now_iso() -> str:
    """UTC now as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``time``, not ``datetime``: 0.4 MB less RSS)."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanoseconds // 1000:06d}Z"


@dataclass(frozen=True, kw_only=True)
class ErrorRecord:
    reason: str
    message: str
    digest: str | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "message": self.message,
            "digest": self.digest,
            "at": self.at,
        }


@dataclass(frozen=True, kw_only=True)
class SwapRecord:
    from_: str | None
    to: str
    outcome: str
    at: str
    fetch_ms: float = 0.0
    unpack_ms: float = 0.0
    swap_ms: float = 0.0
    notify_ms: float = 0.0
    health_ms: float = 0.0
    total_ms: float = 0.0
    traceparent: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "from": self.from_,
            "to": self.to,
            "outcome": self.outcome,
            "at": self.at,
            "fetchMs": round(self.fetch_ms, 3),
            "unpackMs": round(self.unpack_ms, 3),
            "swapMs": round(self.swap_ms, 3),
            "notifyMs": round(self.notify_ms, 3),
            "healthMs": round(self.health_ms, 3),
            "totalMs": round(self.total_ms, 3),
        }
        if self.traceparent is not None:
            body["traceparent"] = self.traceparent
        return body


@dataclass(frozen=True, kw_only=True)
class BundleStatus:
    """A consistent snapshot of one bundle, for reports, /readyz and tests."""

    name: str
    active: str | None
    candidate: str | None
    weight: int
    previous: str | None
    target: Target | None
    healthy: bool | None
    last_error: ErrorRecord | None
    last_swap: SwapRecord | None
    swaps: int

    @property
    def ready(self) -> bool:
        """Whatever is assigned is active (an unassigned bundle is ready by definition)."""
        if self.target is None:
            return True
        return (self.active, self.candidate, self.weight) == self.target.key and (
            self.healthy is not False
        )


class _Unset:
    pass


_UNSET: Final = _Unset()


class BundleWorker:
    """Serialises and coalesces the target changes of one bundle."""

    def __init__(
        self,
        *,
        settings: BundleSettings,
        store: BundleStore,
        fetcher: Fetcher,
        sdk_socket: Any,
        metrics: AgentMetrics,
        on_change: Callable[[], None] = lambda: None,
        backoff_base: float = BACKOFF_BASE,
        grace_period: float = GRACE_PERIOD,
        durable: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.metrics = metrics
        self.sdk = _notify.SdkClient(sdk_socket)
        self._on_change = on_change
        self._backoff_base = backoff_base
        self._grace = grace_period
        self._durable = durable
        self._cond = threading.Condition()
        self._pending: Target | _Unset | None = _UNSET
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._target: Target | None = None
        self._failures: dict[ActiveKey, tuple[int, float]] = {}
        self._retired: dict[str, float] = {}
        self._next_gc = 0.0
        self._lock = threading.Lock()
        # Whatever the mode, a (re)started agent tells the application once what `current`
        # names: killed after the swap and before the answer, the application may never have
        # been told, or may have refused it (a resync, see _swap).
        self._synced = False
        removed = store.prepare()
        if removed:
            logger.info("bundle %s: removed debris of an interrupted swap: %s", store.name, removed)
        on_disk = store.on_disk()
        active = store.active()
        # A request split survives a restart of the agent through its descriptor.
        candidate, weight = store.active_split() or (None, 0)
        self._status = BundleStatus(
            name=settings.name,
            active=active,
            candidate=candidate,
            weight=weight,
            previous=next((d for d in on_disk if d not in (active, candidate)), None),
            target=None,
            healthy=None,
            last_error=None,
            last_swap=None,
            swaps=0,
        )
        metrics.set_active(settings.name, active)

    # --- control ----------------------------------------------------------------------

    @property
    def status(self) -> BundleStatus:
        with self._lock:
            return self._status

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)
        self._on_change()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"logicbundle-agent-{self.settings.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.sdk.close()

    def assign(self, target: Target | None) -> None:
        """Make ``target`` the next thing to apply (replacing any not yet taken)."""
        with self._cond:
            self._pending = target
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending (tests)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not isinstance(self._pending, _Unset) or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    _busy = False

    # --- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
                while not self._stopping and isinstance(self._pending, _Unset):
                    wait = self._next_wakeup() - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopping:
                    return
                pending = self._pending
                self._pending = _UNSET
                self._busy = True
            try:
                if not isinstance(pending, _Unset):
                    self._take(pending)
                self._converge()
                if time.monotonic() >= self._next_gc:
                    self._collect()
            except Exception:  # a bug must cost one round, never the worker
                logger.exception("bundle %s: the worker failed", self.settings.name)

    def _next_wakeup(self) -> float:
        wake = self._next_gc
        target = self._target
        if target is not None and target.key in self._failures:
            wake = min(wake, self._failures[target.key][1])
        return wake

    def _take(self, target: Target | None) -> None:
        old = self._target
        if target is not None and (old is None or old.key != target.key):
            self._failures.clear()  # a new assignment is tried at once
        self._target = target
        if old != target:
            self._update(target=target)

    # --- converging ------------------------------------------------------------------

    def _converge(self) -> None:
        target = self._target
        if target is None:
            return
        status = self.status
        if (status.active, status.candidate, status.weight) == target.key and self._synced:
            return
        failure = self._failures.get(target.key)
        if failure is not None and time.monotonic() < failure[1]:
            return
        self._swap(target)

    def _notify_settings(self, target: Target) -> tuple[NotifySettings, HealthSettings]:
        return target.notify or self.settings.notify, target.health or self.settings.health

    def _swap(self, target: Target) -> None:
        name = self.settings.name
        begun = time.perf_counter()
        status = self.status
        previous = status.active
        previous_key: ActiveKey | None = (
            (status.active, status.candidate, status.weight) if status.active else None
        )
        # A resync: `current` already names the target (the agent started again, maybe
        # killed between the swap and the application's answer).  An application that is
        # not there loads `current` itself when it starts, as on a first activation; one
        # that refuses the version sends the pod back to the version before it (the
        # previous one on disk), never to the refused one.
        resync = previous_key == target.key
        fallback, fallback_key = previous, previous_key
        if resync:
            fallback = status.previous
            fallback_key = (status.previous, None, 0) if status.previous else None
        record = SwapRecord(
            from_=previous,
            to=target.digest,
            outcome="failed",
            at=now_iso(),
            traceparent=target.traceparent,
        )
        try:
            for digest in target.digests():
                installed = self.fetcher.install(
                    self.store,
                    digest,
                    source=target.source or self.settings.source,
                    insecure=self.settings.insecure,
                )
                if installed.bytes:
                    self.metrics.fetched(name, installed.via, installed.bytes)
                record = replace(
                    record,
                    fetch_ms=record.fetch_ms + installed.fetch_ms,
                    unpack_ms=record.unpack_ms + installed.unpack_ms,
                )
        except (LogicBundleError, OSError) as exc:
            self._failed(target, record, exc, begun)
            return
        _seams.step("unpacked")
        start = time.perf_counter()
        try:
            # The split descriptor first: a reader between the two renames sees the old
            # primary alone (the descriptor names another primary), never a foreign split.
            self.store.write_split(
                target.digest, target.candidate, target.weight, durable=self._durable
            )
            if self.store.active() != target.digest:
                self.store.point_current(target.digest, durable=self._durable)
        except OSError as exc:
            self._failed(target, record, exc, begun)
            return
        record = replace(record, swap_ms=_ms(start))
        _seams.step("swapped")
        self.metrics.set_active(name, target.digest)
        try:
            notify_ms, health_ms = self._tell(target, first=previous is None or resync)
        except (NotifyError, UnhealthyError) as exc:
            self._flip_back(
                target,
                previous=fallback,
                previous_key=fallback_key,
                record=record,
                exc=exc,
                begun=begun,
            )
            return
        _seams.step("acked")
        record = replace(
            record,
            outcome="activated",
            notify_ms=notify_ms,
            health_ms=health_ms,
            total_ms=_ms(begun),
        )
        self._synced = True
        self._failures.pop(target.key, None)
        self.metrics.swap(name, "activated", record.total_ms / 1000.0)
        new_previous = previous if previous != target.digest else status.previous
        self._update(
            active=target.digest,
            candidate=target.candidate,
            weight=target.weight,
            previous=new_previous,
            healthy=True,
            last_swap=record,
            swaps=status.swaps + 1,
        )
        logger.info("bundle %s: %s active (%.2f ms)", name, target, record.total_ms)
        self._next_gc = 0.0  # let go of what is no longer needed, soon

    def _tell(self, target: Target, *, first: bool) -> tuple[float, float]:
        """Notify and confirm health; ``(notify ms, health ms)`` or raise.

        ``first``: nothing was active before.  The agent is then the
        application's startup gate, so an application that is not there (no
        SDK socket, nothing listening on the hook's port, no process to
        signal) has not started yet: it reads ``current`` itself when it does,
        and neither the notification nor the health check may wait for it --
        they would wait on the very gate they hold shut.  An application that
        *is* there (it started while nothing was assigned) is told and checked
        as on any later swap, and later swaps always need both.
        """
        notify, health = self._notify_settings(target)
        start = time.perf_counter()
        mode = notify.mode
        reached = False  # the notification reached a running application
        if mode == "sdk":
            reached = self._activate_sdk(target, health.timeout, first=first)
        elif mode == "http":
            assert notify.url is not None  # noqa: S101 - the config parser guarantees it
            body = {
                "bundle": self.settings.name,
                "digest": target.digest,
                "path": self._path(target),
            }
            try:
                code = _notify.post_json(notify.url, body, timeout=notify.timeout, sent=_notifying)
            except _notify.HookUnavailableError:
                if not first:
                    raise
            else:
                if not 200 <= code < 300:
                    raise NotifyError(f"the notify hook {notify.url} answered {code}")
                reached = True
        elif mode == "signal":
            assert notify.process_name is not None  # noqa: S101
            try:
                _notify.send_signal(notify.process_name, notify.signal)
                _notifying()
                reached = True
            except NotifyError:
                if not first:
                    raise
        notify_ms = _ms(start)
        start = time.perf_counter()
        if health.mode == "http":
            assert health.url is not None  # noqa: S101
            self._wait_http_health(health.url, health.timeout, absent_ok=first and not reached)
        return notify_ms, _ms(start)

    def _path(self, target: Target, digest: str | None = None) -> str:
        base = target.mount_path or str(self.store.dir)
        return f"{base.rstrip('/')}/{VERSIONS_DIR}/{digest or target.digest}"

    def _activate_sdk(self, target: Target, timeout: float, *, first: bool) -> bool:
        """Activate over the SDK socket; False when skipped (first, and no application yet)."""
        request: dict[str, Any] = {
            "op": "activate",
            "bundle": self.settings.name,
            "digest": target.digest,
            "path": self._path(target),
            "manifest": None,
            "split": None,
        }
        if target.candidate is not None:
            request["split"] = {"candidate": target.candidate, "weight": target.weight}
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self.sdk.call(
                    request, timeout=max(deadline - time.monotonic(), 0.001), sent=_notifying
                )
                break
            except _notify.SdkUnavailableError:
                if first:
                    # The application has not started yet (the agent is its startup gate):
                    # it loads `current` (and the split descriptor) itself when it does.
                    return False
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        if not reply.get("ok"):
            reason = reply.get("reason") if isinstance(reply.get("reason"), str) else None
            raise UnhealthyError(
                str(reply.get("error") or "the application refused the version"), reason=reason
            )
        if reply.get("digest") != target.digest or reply.get("candidate") != target.candidate:
            raise UnhealthyError(
                f"the application acked {reply.get('digest')} / candidate "
                f"{reply.get('candidate')}, not {target}",
                reason="AckMismatch",
            )
        return True

    def _wait_http_health(self, url: str, timeout: float, *, absent_ok: bool = False) -> None:
        """Poll ``url`` until 2xx; ``absent_ok``: nothing listening means not started, pass."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                code = _notify.get_status(url, timeout=max(deadline - time.monotonic(), 0.05))
                if 200 <= code < 300:
                    return
                last = f"status {code}"
            except _notify.HookUnavailableError as exc:
                if absent_ok:
                    return
                last = str(exc)
            except NotifyError as exc:
                last = str(exc)
            if time.monotonic() >= deadline:
                raise UnhealthyError(
                    f"the health check {url} did not answer 2xx within {timeout:g}s ({last})",
                    reason="HealthCheckFailed",
                )
            time.sleep(0.05)

    def _flip_back(
        self,
        target: Target,
        *,
        previous: str | None,
        previous_key: ActiveKey | None,
        record: SwapRecord,
        exc: LogicBundleError,
        begun: float,
    ) -> SwapRecord:
        name = self.settings.name
        try:
            if previous is not None and previous_key is not None:
                self.store.write_split(
                    previous, previous_key[1], previous_key[2], durable=self._durable
                )
            else:
                self.store.write_split(target.digest, None, 0, durable=self._durable)
            self.store.point_current(previous, durable=self._durable)
        except OSError:
            logger.exception("bundle %s: flipping back to %s failed", name, previous)
        self.metrics.set_active(name, previous)
        if previous is not None and previous_key is not None:
            back = Target(
                digest=previous,
                candidate=previous_key[1],
                weight=previous_key[2],
                notify=target.notify,
                health=target.health,
                mount_path=target.mount_path,
            )
            try:
                self._tell(back, first=False)
            except (NotifyError, UnhealthyError) as again:
                logger.warning(
                    "bundle %s: telling the application to go back failed: %s", name, again
                )
        record = replace(record, outcome="rolledBack", total_ms=_ms(begun))
        self.metrics.swap(name, "rolledBack", None)
        self._back_off(target)
        status = self.status
        self._update(
            active=previous,
            healthy=bool(previous),
            last_swap=record,
            last_error=_error(exc, target.digest),
            swaps=status.swaps + 1,
        )
        logger.warning("bundle %s: %s refused, back on %s: %s", name, target, previous, exc)
        return record

    def _failed(self, target: Target, record: SwapRecord, exc: Exception, begun: float) -> None:
        record = replace(record, outcome="failed", total_ms=_ms(begun))
        self.metrics.swap(self.settings.name, "failed", None)
        self._back_off(target)
        self._update(last_swap=record, last_error=_error(exc, target.digest))
        logger.warning("bundle %s: %s could not be installed: %s", self.settings.name, target, exc)

    def _back_off(self, target: Target) -> None:
        count = self._failures.get(target.key, (0, 0.0))[0] + 1
        delay = min(self._backoff_base * 2 ** (count - 1), BACKOFF_MAX)
        self._failures[target.key] = (count, time.monotonic() + delay)

    # --- letting go of old versions -----------------------------------------------------

    def _collect(self) -> None:
        self._next_gc = time.monotonic() + GC_INTERVAL
        status = self.status
        keep = {status.active, status.candidate, status.previous}
        if self._target is not None:
            keep.update(self._target.digests())
        now = time.monotonic()
        for digest in self.store.on_disk():
            if digest in keep:
                self._retired.pop(digest, None)
                continue
            if self._let_go(digest, now):
                logger.info("bundle %s: deleting released version %s", self.settings.name, digest)
                self.store.remove(digest)
                self._retired.pop(digest, None)

    def _let_go(self, digest: str, now: float) -> bool:
        notify = (self._target.notify if self._target else None) or self.settings.notify
        if notify.mode == "sdk":
            try:
                reply = self.sdk.call(
                    {"op": "release", "bundle": self.settings.name, "digest": digest, "timeout": 0},
                    timeout=2.0,
                )
            except NotifyError:
                return False
            return bool(reply.get("ok") and reply.get("released"))
        retired = self._retired.setdefault(digest, now)
        return now - retired >= self._grace


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _notifying() -> None:
    """The test seam between a notification going out and its answer being read."""
    _seams.step("notifying")


def _error(exc: Exception, digest: str) -> ErrorRecord:
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, str) or not reason.isalnum() or not reason[:1].isalpha():
        reason = "SwapFailed" if not isinstance(exc, OSError) else "DiskError"
    message = str(exc.message if isinstance(exc, LogicBundleError) else exc)
    return ErrorRecord(
        reason=reason[:64], message=message[:MAX_MESSAGE], digest=digest, at=now_iso()
    )
