"""Fixtures for the real-node suites: a control plane, a real kubelet node and the registry.

These run only inside the harness's network namespace (``make e2e`` or
``python -m e2e.harness.netns -- .venv/bin/python -m pytest e2e/suites/node``);
anywhere else they fail, they do not skip.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.harness import node_images
from e2e.harness.cluster import Cluster
from e2e.harness.netns import NODE_IP, in_harness_netns
from e2e.harness.node import RealNode
from e2e.harness.services import Registry


@dataclass(frozen=True)
class RealCluster:
    """A control plane with one real node whose containerd pulls from ``registry``.

    The registry listens on the node's address (10.88.0.1), not on loopback: the
    operator's pods resolve bundles there and the agents fall back to it, and a
    pod's loopback is its own.
    """

    cluster: Cluster
    node: RealNode
    registry: Registry
    images: dict[str, str]
    """``busybox`` and ``pause`` as pushed to ``registry``."""


@pytest.fixture(scope="session")
def real_cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RealCluster]:
    """Kubernetes with kwok nodes and the real node ``real-node-0``, for the session."""
    if not in_harness_netns():
        pytest.fail(
            "the real-node suites run only inside the harness network namespace: "
            "run them through make e2e / "
            "python -m e2e.harness.netns -- .venv/bin/python -m pytest e2e/suites/node",
            pytrace=False,
        )
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(
            Registry.start(tmp_path_factory.mktemp("real-registry"), address=NODE_IP)
        )
        images = node_images.push(registry.host)
        # No kwok node: every pod of these suites runs on the real node, as on a user's cluster.
        cp = stack.enter_context(
            Cluster.start(tmp_path_factory.mktemp("real-cluster"), nodes=0, real_node=True)
        )
        node = stack.enter_context(
            RealNode.start(
                tmp_path_factory.mktemp("real-node"),
                cp,
                registry_host=registry.host,
                sandbox_image=images["pause"],
            )
        )
        yield RealCluster(cluster=cp, node=node, registry=registry, images=images)


@pytest.fixture
def real_namespace(real_cluster: RealCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace of the real cluster for one test, deleted afterwards."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"n-{slug}-{hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]}"
    cluster = real_cluster.cluster
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    cluster.request("DELETE", f"/api/v1/namespaces/{name}")
