"""Every YAML document users are shown goes through the real tool that would read it.

Kubernetes objects (files under ``docs/`` and ``examples/``, ``yaml`` blocks
of the Markdown pages) are applied to the real API server with a server-side
dry-run, so the CRD's schema, defaulting and validation rules and the
built-in types all judge them (Flux's and Argo CD's objects too: the harness
installs their CRDs); chart values fragments are rendered with
``helm template`` (which checks ``values.schema.json``).  An object of an API
group this cluster does not serve (Argo CD's, Flux's) is reported as skipped
with the group, never passed silently.  ``tests/api/documented_yaml.py``
collects the documents and sorts them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from e2e import versions
from e2e.harness import build, flux, services
from e2e.harness.cluster import Cluster
from e2e.harness.proc import wait_for
from tests.api.documented_yaml import CHART, Document, documents, objects

_OBJECTS = objects()
_VALUES = [d for d in documents() if d.is_values and not d.is_descriptor]


def _served(cluster: Cluster, group: str) -> bool:
    if not group:
        return True
    found = cluster.request("GET", "/apis")
    return any(g["name"] == group for g in found["groups"])


def test_the_docs_hold_objects_and_values_to_check() -> None:
    assert any(d.body["kind"] == "LogicBundle" for d in _OBJECTS)
    assert _VALUES, "no chart values shown in the docs"


def _install_crds(cluster: Cluster, paths: list[Path]) -> list[str]:
    """Apply CRD files no controller runs (Argo CD's, Flux's HelmRelease); their names."""
    cluster.kubectl("apply", "--server-side", *(f"--filename={path}" for path in paths))
    names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in paths]
    cluster.wait_established(*names)
    return names


@pytest.fixture(scope="module")
def flux_crds(cluster: Cluster) -> list[str]:
    """Flux's source and kustomize CRDs (from the controllers test_flux.py runs), its
    HelmRelease CRD (generated from helm-controller's API module) and Argo CD's (from its
    module), so the docs' Flux and Argo CD objects are judged by their real schemas."""
    names = flux.install_crds(cluster) + _install_crds(
        cluster, [*build.argocd_crds(), *build.flux_helm_crds()]
    )
    groups = {name.split(".", 1)[1] for name in names}
    wait_for(
        lambda: all(_served(cluster, group) for group in groups),
        what=f"{', '.join(sorted(groups))} in the API server's discovery",
        timeout=60,
    )
    return names


@pytest.mark.parametrize("doc", _OBJECTS, ids=lambda d: d.where)
def test_every_documented_object_passes_a_server_side_dry_run(
    cluster: Cluster, logicbundle_crd: str, flux_crds: list[str], namespace: str, doc: Document
) -> None:
    if not _served(cluster, doc.group):
        pytest.skip(f"{doc.where}: the harness serves no {doc.group} (its CRDs are not installed)")
    body = json.loads(json.dumps(doc.body))
    body.setdefault("metadata", {})["namespace"] = namespace
    out = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps(body),
    )  # fmt: skip
    assert "serverside-applied (server dry run)" in out, out


@pytest.mark.parametrize("doc", _VALUES, ids=lambda d: d.where)
def test_every_documented_values_fragment_renders_the_chart(doc: Document, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(doc.body))
    proc = subprocess.run(
        [
            str(services.helm()),
            "template",
            "lb",
            str(CHART),
            "--kube-version",
            versions.KUBERNETES.lstrip("v"),
            "-f",
            str(values),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{doc.where}: helm template failed:\n{proc.stderr}"
