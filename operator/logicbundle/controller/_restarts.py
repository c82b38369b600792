"""Container restarts, attributed to the digest each pod ran when its containers restarted.

The ``restarts`` builtin metric judges a candidate on crashes: an application
that dies under new logic is restarted by the kubelet, which counts it in
``status.containerStatuses[].restartCount``. That count is cumulative and
per pod, so the controller keeps, per pod, the last count it saw; an increase
is charged to the digest the pod ran at that moment and time-stamped, and the
analysis sums the charges inside its window.

The ledger lives in memory: a restarted operator starts counting afresh from
the counts it first sees, so restarts from before it started are never
charged to anyone (they under-count, never over-count).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

DEFAULT_WINDOW_SECONDS = 900.0
"""How long a charge is kept: longer than any analysis window worth having."""


@dataclass
class _Pod:
    uid: str
    restarts: int


@dataclass
class RestartLedger:
    """Restarts per (namespace, bundle, digest), time-stamped with the ledger's clock.

    Baselines are kept per (namespace, bundle, pod), since each bundle observes its pods.
    """

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    clock: Callable[[], float] = time.monotonic
    _pods: dict[tuple[str, str], dict[str, _Pod]] = field(default_factory=dict)
    """Per (namespace, bundle), each pod's baseline: a reconcile reads its own bundle's."""
    _charges: dict[tuple[str, str, str], deque[tuple[float, int]]] = field(default_factory=dict)

    def observe(
        self, *, bundle: str, namespace: str, pod: str, uid: str, restarts: int, digest: str | None
    ) -> None:
        """Record the pod's current cumulative restart count while it runs ``digest``.

        The first sight of a pod (or of a new pod under an old name) sets its
        baseline and charges nothing; so does a count that went down.
        """
        baselines = self._pods.setdefault((namespace, bundle), {})
        seen = baselines.get(pod)
        baselines[pod] = _Pod(uid=uid, restarts=restarts)
        if seen is None or seen.uid != uid or restarts <= seen.restarts or digest is None:
            return
        now = self.clock()
        charges = self._charges.setdefault((namespace, bundle, digest), deque())
        charges.append((now, restarts - seen.restarts))
        self._trim(now)

    def would_charge(
        self, *, bundle: str, namespace: str, pod: str, uid: str, restarts: int
    ) -> bool:
        """Whether :meth:`observe` with this count would charge a digest (it went up).

        A reconcile asks first and works out the pod's digest only then: the
        counts of thousands of pods rarely move.
        """
        seen = self._pods.get((namespace, bundle), {}).get(pod)
        return seen is not None and seen.uid == uid and restarts > seen.restarts

    def restarts(self, *, bundle: str, namespace: str, digest: str, since: float) -> int:
        """The restarts charged to ``digest`` at or after ``since`` (the ledger's clock)."""
        self._trim(self.clock())
        charges = self._charges.get((namespace, bundle, digest), ())
        return sum(n for at, n in charges if at >= since)

    def forget_pods(self, *, bundle: str, namespace: str, keep: Iterable[str]) -> None:
        """Drop the baselines of this bundle's pods in ``namespace`` that are not in ``keep``."""
        kept = set(keep)
        baselines = self._pods.get((namespace, bundle))
        if baselines is None:
            return
        for pod in [p for p in baselines if p not in kept]:
            del baselines[pod]
        if not baselines:
            del self._pods[(namespace, bundle)]

    def forget_bundle(self, *, bundle: str, namespace: str) -> None:
        """The LogicBundle is gone: drop its baselines and its charges."""
        self.forget_pods(bundle=bundle, namespace=namespace, keep=())
        for key in [k for k in self._charges if k[:2] == (namespace, bundle)]:
            del self._charges[key]

    def _trim(self, now: float) -> None:
        horizon = now - self.window_seconds
        for key, charges in list(self._charges.items()):
            while charges and charges[0][0] < horizon:
                charges.popleft()
            if not charges:
                del self._charges[key]
