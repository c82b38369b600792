"""The chart as users get it: packaged, pushed to an OCI registry, installed from there.

``helm package`` makes the archive, ``helm push`` puts it into the harness's
registry (plain HTTP, so ``--plain-http``), ``helm show chart`` and
``helm pull`` read it back (the same bytes), and ``helm install oci://…``
installs the release on the real API server, the way docs/operations.md
("Install with Helm") tells users to.  The release is removed again with the
injector configuration it made, so the suites after it see the cluster as
before.  ``e2e/suites/test_chart.py`` tests what the chart does once installed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.harness import services
from e2e.harness.cluster import Cluster
from e2e.harness.proc import HarnessError
from e2e.harness.services import Registry

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "logicbundle-operator"
RELEASE = "lb-oci"
INJECTOR = (
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/logicbundle-injector"
)


def _helm(*args: str | Path, cluster: Cluster | None = None, stderr: bool = False) -> str:
    """helm's standard output (and its standard error, where helm prints what it pushed)."""
    command = [str(services.helm()), *map(str, args)]
    if cluster is not None:
        command.insert(1, f"--kubeconfig={cluster.kubeconfig}")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"helm {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout + (proc.stderr if stderr else "")


def _delete_if_present(cluster: Cluster, path: str) -> None:
    try:
        cluster.request("DELETE", path)
    except HarnessError as error:
        if "HTTP 404" not in str(error):
            raise


@pytest.fixture
def operator_namespace(cluster: Cluster, logicbundle_crd: str) -> Iterator[str]:
    """A namespace for the release; the release, its injector and the namespace go after."""
    name = "chart-oci-system"
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    try:
        yield name
    finally:
        try:
            _helm("uninstall", RELEASE, "-n", name, "--wait", "--timeout", "60s", cluster=cluster)
        except HarnessError as error:
            if "not found" not in str(error):
                raise
        _delete_if_present(cluster, INJECTOR)
        _delete_if_present(cluster, f"/api/v1/namespaces/{name}")


def test_the_packaged_chart_is_pushed_to_a_registry_and_installed_from_oci(
    cluster: Cluster, registry: Registry, operator_namespace: str, tmp_path: Path
) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    name, version = chart["name"], str(chart["version"])
    packaged = _helm("package", CHART, "--destination", tmp_path / "packaged")
    (archive,) = (tmp_path / "packaged").glob("*.tgz")
    assert archive.name == f"{name}-{version}.tgz", packaged

    pushed = _helm("push", archive, f"oci://{registry.host}/charts", "--plain-http", stderr=True)
    assert re.search(r"Digest: sha256:[0-9a-f]{64}", pushed), pushed
    reference = f"oci://{registry.host}/charts/{name}"

    shown = yaml.safe_load(_helm("show", "chart", reference, "--version", version, "--plain-http"))
    assert (shown["name"], str(shown["version"])) == (name, version)
    assert shown["appVersion"] == chart["appVersion"]
    (tmp_path / "pulled").mkdir()
    _helm("pull", reference, "--version", version, "--plain-http", "-d", tmp_path / "pulled")
    assert (tmp_path / "pulled" / archive.name).read_bytes() == archive.read_bytes()

    # --take-ownership: the session applied the LogicBundle CRD with kubectl; the chart's
    # CRD template adopts it (and keeps it at uninstall: helm.sh/resource-policy).
    _helm(
        "install", RELEASE, reference, "--version", version, "--plain-http",
        "-n", operator_namespace, "--take-ownership", cluster=cluster,
    )  # fmt: skip
    (listed,) = yaml.safe_load(
        _helm("list", "-n", operator_namespace, "-o", "yaml", cluster=cluster)
    )
    assert (listed["name"], listed["status"]) == (RELEASE, "deployed")
    assert listed["chart"] == f"{name}-{version}"
    deployments = cluster.request(
        "GET", f"/apis/apps/v1/namespaces/{operator_namespace}/deployments"
    )
    images = {
        c["image"]
        for d in deployments["items"]
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert images == {f"{values['image']['repository']}:{chart['appVersion']}"}
