"""The chart's alerts and dashboard queries, checked by Prometheus' own ``promtool``.

``tests/chart/test_metric_names.py`` checks that every series they name is one
the product exports; here the promtool of the harness's Prometheus package
(Debian's ``prometheus``) checks the rest:

* ``promtool check rules`` on the PrometheusRule as Helm renders it (every
  expression parses, every ``for`` and label is valid);
* ``promtool test rules`` with ``tests/chart/promtool/alerts_test.yaml``: the
  rollback alert fires on the evaluation a rollout turns RolledBack and not
  before, the leak and agent-behind alerts after their ``for``, with the
  rendered annotations;
* every dashboard query (Grafana's variables replaced by values) as a
  recording rule through ``promtool check rules``, so a typo in a panel
  fails here rather than showing an empty panel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from e2e import versions
from e2e.harness import services
from e2e.harness.proc import HarnessError

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
DASHBOARD = CHART / "dashboards" / "logicbundle.json"
UNIT_TESTS = REPO / "tests" / "chart" / "promtool" / "alerts_test.yaml"
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$namespace": ".*",
    "$bundle": ".*",
}


def _promtool() -> Path:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).exists():
        raise HarnessError(f"promtool is not installed; {services.APT_HINT}")
    return Path(found)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_promtool()), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _rendered_rules(tmp_path: Path, *extra: str) -> dict[str, Any]:
    return {"groups": _rendered(*extra)["spec"]["groups"]}


def _rendered(*extra: str) -> dict[str, Any]:
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
            "--show-only",
            "templates/prometheusrule.yaml",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"helm template failed: {proc.stderr.strip()}")
    rule: dict[str, Any] = yaml.safe_load(proc.stdout)
    assert rule["kind"] == "PrometheusRule"
    return rule


def test_extra_rule_labels_render_as_labels_and_nothing_else() -> None:
    """``metrics.prometheusRule.labels`` (a Prometheus operator's ruleSelector) once pasted
    three alerts into the labels block, which then failed to render as YAML."""
    rule = _rendered("--set", "metrics.prometheusRule.labels.release=kube-prometheus")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == len(set(alerts)), alerts


def test_the_rendered_prometheus_rule_passes_promtool_check_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rendered_rules(tmp_path)))
    proc = _run("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = {r["alert"] for g in _rendered_rules(tmp_path)["groups"] for r in g["rules"]}
    assert {
        "LogicBundleRolledBack",
        "LogicBundleVersionLeak",
        "LogicBundleRolloutStalled",
        "LogicBundleAgentBehind",
    } <= alerts


def test_the_alerts_fire_as_their_promtool_unit_tests_expect(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(_rendered_rules(tmp_path)))
    shutil.copyfile(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    proc = _run("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_refuses_a_rule_file_with_a_broken_expression(tmp_path: Path) -> None:
    """The check above can fail: promtool is really parsing the expressions."""
    broken = {"groups": [{"name": "x", "rules": [{"record": "x", "expr": "rate(up[5m]"}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken))
    proc = _run("check", "rules", "rules.yaml", cwd=tmp_path)
    assert proc.returncode != 0


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def test_every_dashboard_query_parses_with_promtool(tmp_path: Path) -> None:
    exprs = _dashboard_queries()
    assert len(exprs) >= 20
    rules = []
    for index, query in enumerate(exprs):
        expr = query
        for variable, value in sorted(_GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(variable, value)
        assert not re.search(r"\$\w", expr), f"an unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    proc = _run("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
