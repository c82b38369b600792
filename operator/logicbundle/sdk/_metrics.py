"""Exposing the per-version counters to Prometheus, aggregated only when scraped.

Two ways, same series: :func:`prometheus_text` renders the text exposition
format with the standard library alone, and :func:`register_prometheus` adds
a collector to a ``prometheus_client`` registry when that package is
installed.  Series (labels ``bundle``, ``digest``, ``role``; role is
``primary``, ``candidate``, ``draining`` or ``released``):

* ``logicbundle_sdk_calls_total`` -- completed calls;
* ``logicbundle_sdk_call_errors_total`` -- completed calls that raised;
* ``logicbundle_sdk_call_duration_seconds`` -- histogram, power-of-two bounds;
* ``logicbundle_sdk_calls_in_flight`` -- gauge;
* ``logicbundle_sdk_activations_total`` -- labels ``bundle``, ``result`` (ok, refused);
* ``logicbundle_sdk_retired_versions_alive`` -- label ``bundle``: retired versions still
  alive after their grace period (a leak; :meth:`LogicHost.leaks` says what holds them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from logicbundle.sdk._host import LogicHost

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

_PREFIX = "logicbundle_sdk_"
_ALIVE_HELP = "Retired versions still alive after their grace period (leaked)."


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items()) + "}"


def _seconds(ns: int) -> str:
    return repr(ns / 1e9)


def prometheus_text(*hosts: LogicHost) -> str:
    """The SDK's series for ``hosts`` in the Prometheus text format (version 0.0.4)."""
    calls: list[str] = []
    errors: list[str] = []
    inflight: list[str] = []
    duration: list[str] = []
    activations: list[str] = []
    alive: list[str] = []
    for host in hosts:
        for digest, role, snap, _ in host.versions():
            base = {"bundle": host.name, "digest": digest, "role": role}
            labels = _labels(base)
            calls.append(f"{_PREFIX}calls_total{labels} {snap.calls}")
            errors.append(f"{_PREFIX}call_errors_total{labels} {snap.errors}")
            inflight.append(f"{_PREFIX}calls_in_flight{labels} {snap.inflight}")
            for le, count in snap.cumulative():
                bucket = _labels({**base, "le": _seconds(le)})
                duration.append(f"{_PREFIX}call_duration_seconds_bucket{bucket} {count}")
            duration.append(
                f"{_PREFIX}call_duration_seconds_bucket{_labels({**base, 'le': '+Inf'})} "
                f"{snap.calls}"
            )
            duration.append(f"{_PREFIX}call_duration_seconds_sum{labels} {_seconds(snap.total_ns)}")
            duration.append(f"{_PREFIX}call_duration_seconds_count{labels} {snap.calls}")
        for result, count in host.stats_counts().items():
            labels = _labels({"bundle": host.name, "result": result})
            activations.append(f"{_PREFIX}activations_total{labels} {count}")
        labels = _labels({"bundle": host.name})
        alive.append(f"{_PREFIX}retired_versions_alive{labels} {len(host.leaks())}")
    out: list[str] = []
    for name, kind, help_, rows in (
        ("calls_total", "counter", "Completed calls of bundle functions.", calls),
        ("call_errors_total", "counter", "Completed calls that raised.", errors),
        ("calls_in_flight", "gauge", "Calls started and not finished.", inflight),
        ("call_duration_seconds", "histogram", "Duration of bundle calls.", duration),
        ("activations_total", "counter", "Activation requests by result.", activations),
        ("retired_versions_alive", "gauge", _ALIVE_HELP, alive),
    ):
        metric = _PREFIX + name.removesuffix("_total") if kind == "counter" else _PREFIX + name
        out.append(f"# HELP {metric} {help_}")
        out.append(f"# TYPE {metric} {kind}")
        out.extend(rows)
    return "\n".join(out) + "\n"


class PrometheusCollector:
    """A ``prometheus_client`` collector over ``hosts``; counters are summed per scrape."""

    def __init__(self, *hosts: LogicHost) -> None:
        self.hosts = hosts

    def describe(self) -> list[Any]:
        # No describe-time metrics: the registry then calls collect() lazily on scrape only.
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415 - optional dependency
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["bundle", "digest", "role"]
        calls = CounterMetricFamily(
            f"{_PREFIX}calls", "Completed calls of bundle functions.", labels=labels
        )
        errors = CounterMetricFamily(
            f"{_PREFIX}call_errors", "Completed calls that raised.", labels=labels
        )
        inflight = GaugeMetricFamily(
            f"{_PREFIX}calls_in_flight", "Calls started and not finished.", labels=labels
        )
        duration = HistogramMetricFamily(
            f"{_PREFIX}call_duration_seconds", "Duration of bundle calls.", labels=labels
        )
        activations = CounterMetricFamily(
            f"{_PREFIX}activations", "Activation requests by result.", labels=["bundle", "result"]
        )
        alive = GaugeMetricFamily(
            f"{_PREFIX}retired_versions_alive", _ALIVE_HELP, labels=["bundle"]
        )
        for host in self.hosts:
            alive.add_metric([host.name], len(host.leaks()))
            for digest, role, snap, _ in host.versions():
                values = [host.name, digest, role]
                calls.add_metric(values, snap.calls)
                errors.add_metric(values, snap.errors)
                inflight.add_metric(values, snap.inflight)
                buckets: list[tuple[str, float]] = [
                    (_seconds(le), count) for le, count in snap.cumulative()
                ]
                buckets.append(("+Inf", snap.calls))
                duration.add_metric(values, buckets, snap.total_ns / 1e9)
            for result, count in host.stats_counts().items():
                activations.add_metric([host.name, result], count)
        yield from (calls, errors, inflight, duration, activations, alive)


def register_prometheus(
    *hosts: LogicHost, registry: CollectorRegistry | None = None
) -> PrometheusCollector:
    """Register a :class:`PrometheusCollector` (needs ``prometheus_client``)."""
    try:
        from prometheus_client import REGISTRY  # noqa: PLC0415 - optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "prometheus_client is not installed; use logicbundle.sdk.prometheus_text() instead"
        ) from exc
    collector = PrometheusCollector(*hosts)
    (registry or REGISTRY).register(collector)
    return collector
