"""The agent's Prometheus metrics, kept in plain dicts and written in the text format by hand.

prometheus-client would cost memory in every pod for a handful of series.
"""

from __future__ import annotations

import threading
from typing import Final

SWAP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class AgentMetrics:
    """Counters, one histogram and an info gauge; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.swaps: dict[tuple[str, str], int] = {}
        self.rollbacks: dict[str, int] = {}
        self.fetch_bytes: dict[tuple[str, str], int] = {}
        self.swap_hist: dict[str, list[int]] = {}
        self.swap_sum: dict[str, float] = {}
        self.active: dict[str, str | None] = {}
        self.target_updates: dict[str, int] = {}
        self.fast_path_up = 0
        self.reports: dict[str, int] = {}

    def swap(self, bundle: str, outcome: str, seconds: float | None) -> None:
        with self._lock:
            key = (bundle, outcome)
            self.swaps[key] = self.swaps.get(key, 0) + 1
            if outcome == "rolledBack":
                self.rollbacks[bundle] = self.rollbacks.get(bundle, 0) + 1
            if seconds is not None and outcome == "activated":
                hist = self.swap_hist.setdefault(bundle, [0] * (len(SWAP_BUCKETS) + 1))
                index = next((i for i, b in enumerate(SWAP_BUCKETS) if seconds <= b), -1)
                hist[index] += 1
                self.swap_sum[bundle] = self.swap_sum.get(bundle, 0.0) + seconds

    def fetched(self, bundle: str, via: str, size: int) -> None:
        with self._lock:
            self.fetch_bytes[(bundle, via)] = self.fetch_bytes.get((bundle, via), 0) + size

    def set_active(self, bundle: str, digest: str | None) -> None:
        with self._lock:
            self.active[bundle] = digest

    def target_update(self, source: str) -> None:
        with self._lock:
            self.target_updates[source] = self.target_updates.get(source, 0) + 1

    def report(self, outcome: str) -> None:
        with self._lock:
            self.reports[outcome] = self.reports.get(outcome, 0) + 1

    def text(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("logicbundle_agent_swaps_total", "counter", "Swaps by bundle and outcome.")
            for (bundle, outcome), n in sorted(self.swaps.items()):
                labels = _labels((("bundle", bundle), ("outcome", outcome)))
                out.append(f"logicbundle_agent_swaps_total{labels} {n}")
            family("logicbundle_agent_rollbacks_total", "counter", "Flips back after a failure.")
            for bundle, n in sorted(self.rollbacks.items()):
                out.append(f"logicbundle_agent_rollbacks_total{_labels((('bundle', bundle),))} {n}")
            family("logicbundle_agent_fetch_bytes_total", "counter", "Bytes fetched by source.")
            for (bundle, via), n in sorted(self.fetch_bytes.items()):
                labels = _labels((("bundle", bundle), ("source", via)))
                out.append(f"logicbundle_agent_fetch_bytes_total{labels} {n}")
            family(
                "logicbundle_agent_swap_duration_seconds",
                "histogram",
                "Target known to application acked, for activated swaps.",
            )
            for bundle, hist in sorted(self.swap_hist.items()):
                running = 0
                for bound, count in zip((*SWAP_BUCKETS, None), hist, strict=True):
                    running += count
                    le = "+Inf" if bound is None else f"{bound:g}"
                    labels = _labels((("bundle", bundle), ("le", le)))
                    out.append(f"logicbundle_agent_swap_duration_seconds_bucket{labels} {running}")
                labels = _labels((("bundle", bundle),))
                total = self.swap_sum[bundle]
                out.append(f"logicbundle_agent_swap_duration_seconds_sum{labels} {total:.6f}")
                out.append(f"logicbundle_agent_swap_duration_seconds_count{labels} {running}")
            family(
                "logicbundle_agent_active_info", "gauge", "1 for the digest `current` points at."
            )
            for bundle, digest in sorted(self.active.items()):
                if digest:
                    labels = _labels((("bundle", bundle), ("digest", digest)))
                    out.append(f"logicbundle_agent_active_info{labels} 1")
            family("logicbundle_agent_target_updates_total", "counter", "Target changes by path.")
            for source, n in sorted(self.target_updates.items()):
                labels = _labels((("path", source),))
                out.append(f"logicbundle_agent_target_updates_total{labels} {n}")
            family("logicbundle_agent_fast_path_up", "gauge", "1 while the distributor answers.")
            out.append(f"logicbundle_agent_fast_path_up {self.fast_path_up}")
            family("logicbundle_agent_reports_total", "counter", "Reports sent by outcome.")
            for outcome, n in sorted(self.reports.items()):
                out.append(f"logicbundle_agent_reports_total{_labels((('outcome', outcome),))} {n}")
        return "\n".join(out) + "\n"
