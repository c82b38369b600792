"""Prometheus metrics of the distributor, in a registry of their own.

Its own :class:`~prometheus_client.CollectorRegistry` (not the global one), so
the operator can serve it beside kopf's and tests can build many apps in one
process without "duplicated timeseries" errors.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DistributorMetrics:
    """The counters the distributor keeps; ``registry`` is what ``/metrics`` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.long_polls_open = Gauge(
            "logicbundle_distributor_long_polls_open",
            "Target long-polls currently waiting for a change.",
            registry=self.registry,
        )
        self.target_responses = Counter(
            "logicbundle_distributor_target_responses",
            "Answers to GET /v1/targets, by status code (200 changed, 304 unchanged).",
            ["code"],
            registry=self.registry,
        )
        self.reports_received = Counter(
            "logicbundle_distributor_reports_received",
            "Agent reports received, by outcome (accepted, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.report_unknown_fields = Counter(
            "logicbundle_distributor_report_unknown_fields",
            "Fields of accepted agent reports this distributor does not know and ignored "
            "(agents newer than the distributor).",
            registry=self.registry,
        )
        self.blob_bytes_served = Counter(
            "logicbundle_distributor_blob_bytes_served",
            "Bytes of manifests and blobs sent to agents.",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "logicbundle_distributor_auth_failures",
            "Requests refused before or at authentication or authorisation, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.status_writes = Counter(
            "logicbundle_distributor_pod_status_writes",
            "Hand-overs of active digests to the operator's callback, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
