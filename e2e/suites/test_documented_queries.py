"""Every PromQL query in the docs and the chart names series a real scrape of the product holds.

A real Prometheus scrapes the running operator, its distributor, six agents
and the sample applications' SDK while a rollout goes through a stage and is
rolled back (so the rollout, analysis, swap and rollback series are there).
The exported names are read back from Prometheus itself (the series it
stored and the metric families the targets declared), never from a list kept
here; then every query of ``docs/``, ``examples/``, the dashboard and the
rendered PrometheusRule must name only those.  The documented analysis
example runs against the scraped data and finds the stable version's series.
``tests/chart/test_documented_queries.py`` is the fast check against the
code's own definitions.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import yaml

from e2e import versions
from e2e.harness import services
from e2e.harness.cluster import Cluster
from e2e.harness.fleet import Fleet, Traffic
from e2e.harness.operator import KeyPair, Operator, wait_condition
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.services import Prometheus, Registry
from e2e.suites.test_rollout import (  # noqa: F401 - the rollout suite's fixtures
    WITH_LATENCY,
    digests,
    fleet,
    install,
    key,
    move_to,
    operator,
    ref,
    rollout,
)
from tests.chart.promql_names import (
    CHART,
    REPO,
    Query,
    dashboard_queries,
    documented_queries,
    missing,
    rule_queries,
    series_names,
)

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
_SUFFIXES.update({"summary": ("", "_sum", "_count"), "info": ("_info",)})


def _api(prometheus: Prometheus, path: str, **params: str) -> Any:
    url = f"{prometheus.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise HarnessError(f"prometheus {path} failed: {body}")
    return body["data"]


def scraped_names(prometheus: Prometheus) -> set[str]:
    """The series Prometheus stored, and the families its targets declared (with suffixes)."""
    names = set(_api(prometheus, "label/__name__/values"))
    for name, entries in _api(prometheus, "metadata").items():
        for entry in entries:
            for suffix in _SUFFIXES.get(entry["type"], ("",)):
                names.add(name if name.endswith(suffix) else name + suffix)
    return names


def _rendered_rules() -> list[Query]:
    proc = subprocess.run(
        [
            str(services.helm()),
            "template",
            "lb",
            str(CHART),
            "--kube-version",
            versions.KUBERNETES.lstrip("v"),
            "--set",
            "metrics.prometheusRule.enabled=true",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"helm template failed: {proc.stderr.strip()}")
    return rule_queries(proc.stdout)


def _all_scraped_since(prometheus: Prometheus, since: float, count: int) -> bool:
    targets = _api(prometheus, "targets", state="active")["activeTargets"]
    fresh = [t for t in targets if t["health"] == "up" and _epoch(t["lastScrape"]) > since]
    return len(fresh) == count


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Prometheus writes it (nanoseconds cut)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_every_documented_and_chart_query_names_series_a_real_scrape_holds(
    cluster: Cluster,
    registry: Registry,
    key: KeyPair,  # noqa: F811
    digests: dict[str, str],  # noqa: F811
    fleet: Fleet,  # noqa: F811
    operator: Operator,  # noqa: F811
    start_prometheus: Callable[[dict[str, Any]], Prometheus],
) -> None:
    manifest = install(
        cluster, fleet, registry, key, digests, spec_rollout=rollout(analysis=WITH_LATENCY)
    )
    local = "127.0.0.1"
    jobs = {
        "operator": [f"{local}:{operator.metrics_port}"],
        "distributor": [f"{local}:{operator.distributor_port}"],
        "agents": [f"{local}:{p.agent_port}" for p in fleet.pods],
        "apps": [f"{local}:{p.app_port}" for p in fleet.pods],
    }
    # The namespace label a PodMonitor (Kubernetes service discovery) would add.
    labels = {"namespace": fleet.namespace}
    prometheus = start_prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets, "labels": labels}]}
                for job, targets in jobs.items()
            ],
        }
    )
    with Traffic(fleet):
        move_to(cluster, fleet, manifest, ref(registry, "flaky"))
        wait_condition(cluster, fleet.namespace, "pricing", "Stalled", "True", timeout=120)
        fleet.wait_serving(digests["v1"], timeout=30)
        rolled_back = time.time()
        wait_for(
            lambda: _all_scraped_since(prometheus, rolled_back, sum(map(len, jobs.values()))),
            what="a scrape of every target after the rollback",
            timeout=60,
            interval=0.5,
        )
    exported = scraped_names(prometheus)
    for family in (
        "logicbundle_rollout_phase",
        "logicbundle_distributor_",
        "logicbundle_agent_swaps_total",
        "logicbundle_sdk_calls_total",
    ):
        assert any(n.startswith(family) for n in exported), f"nothing scraped named {family}"

    queries = [*documented_queries(), *dashboard_queries(), *_rendered_rules()]
    assert any(q.where.startswith("PrometheusRule:") for q in queries)
    wrong = {q.where: missing(series_names(q.text), exported) for q in queries}
    assert {where: names for where, names in wrong.items() if names} == {}

    # The documented analysis queries run on the scraped data, as the operator would run them.
    example = yaml.safe_load((REPO / "docs/examples/prometheus-analysis.yaml").read_text())
    for metric in example["spec"]["rollout"]["analysis"]["metrics"]:
        if "query" not in metric:
            continue
        query = (
            metric["query"]
            .replace("{{namespace}}", fleet.namespace)
            .replace("{{bundle}}", "pricing")
            .replace("{{digest}}", digests["v1"])
        )
        result = prometheus.query(query)["result"]
        assert result, f"{metric['name']}: no data for the stable version:\n{query}"
