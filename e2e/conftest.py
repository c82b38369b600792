"""Fixtures for the end-to-end suites: the real control plane and real services.

Everything in this folder is marked ``e2e`` so ``pytest -m "not e2e"`` skips it.
The control plane is session-scoped (one per run); the registry likewise;
Prometheus is started per test with the configuration the test passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import Cluster
from e2e.harness.services import Prometheus, Registry

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell a test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running control plane with two kwok nodes, shared by the whole session."""
    with Cluster.start(tmp_path_factory.mktemp("cluster"), nodes=2) as running:
        yield running


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP OCI registry on 127.0.0.1, shared by the whole session."""
    with Registry.start(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Prometheus]]:
    """Start Prometheus with a given configuration; stopped after the test."""
    started: list[Prometheus] = []

    def start(config: dict[str, Any]) -> Prometheus:
        prometheus = Prometheus.start(tmp_path / f"prometheus-{len(started)}", config=config)
        started.append(prometheus)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]}"
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    cluster.request("DELETE", f"/api/v1/namespaces/{name}")


REPO = _HERE.parent
CRD_FILE = REPO / "crds" / "logicbundle.io_logicbundles.yaml"


@pytest.fixture(scope="session")
def logicbundle_crd(cluster: Cluster) -> str:
    """The generated CRDs (LogicBundle and the metric templates), applied and Established."""
    paths = sorted(CRD_FILE.parent.glob("logicbundle.io_*.yaml"))
    # One kubectl call for all: a kubectl that cached the group's discovery with
    # only some of its kinds would not find the others until its cache expires.
    cluster.kubectl("apply", "--server-side", *(f"--filename={path}" for path in paths))
    for path in paths:
        cluster.wait_established(f"{path.stem.split('_', 1)[1]}.logicbundle.io")
    return "logicbundles.logicbundle.io"
