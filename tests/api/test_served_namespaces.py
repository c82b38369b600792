"""Which namespaces are served (issue 11, defect 6): kube-system and the operator's own are
left out unless named, and the operator, the replicas and the webhook compute the same set."""

from __future__ import annotations

from typing import Any

import pytest

from logicbundle.api.namespaces import SYSTEM_NAMESPACES, ServedNamespaces
from logicbundle.webhook import default_namespace_selector


def test_cluster_wide_leaves_out_the_system_namespaces_and_the_operators_own() -> None:
    served = ServedNamespaces.of(operator_namespace="lb-ops")
    for namespace in (*SYSTEM_NAMESPACES, "lb-ops"):
        assert not served.serves(namespace), namespace
    for namespace in ("default", "shop", "kube-systems"):
        assert served.serves(namespace), namespace
    assert served.excluded == ("kube-node-lease", "kube-public", "kube-system", "lb-ops")


def test_more_namespaces_can_be_left_out_but_none_put_back_without_naming_it() -> None:
    served = ServedNamespaces.of(operator_namespace="lb-ops", exclude=["batch", "batch"])
    assert not served.serves("batch") and not served.serves("kube-system")
    assert served.serves("shop")


def test_naming_namespaces_serves_exactly_those_a_system_one_included() -> None:
    served = ServedNamespaces.of(
        named=["kube-system", "team-a", "team-a"], operator_namespace="lb-ops", exclude=["team-a"]
    )
    assert served.named == ("kube-system", "team-a")
    assert served.serves("kube-system") and served.serves("team-a")
    assert not served.serves("shop") and not served.serves("lb-ops")


@pytest.mark.parametrize("namespace", [None, ""])
def test_a_cluster_scoped_object_is_never_served(namespace: str | None) -> None:
    assert not ServedNamespaces().serves(namespace)


def test_a_cluster_wide_watch_leaves_the_excluded_namespaces_out_on_the_server() -> None:
    served = ServedNamespaces.of(operator_namespace="lb-ops")
    assert served.field_selector == (
        "metadata.namespace!=kube-node-lease,metadata.namespace!=kube-public,"
        "metadata.namespace!=kube-system,metadata.namespace!=lb-ops"
    )
    assert ServedNamespaces().field_selector is None
    assert ServedNamespaces.of(named=["a"]).field_selector is None


@pytest.mark.parametrize(
    ("served", "selector"),
    [
        (
            ServedNamespaces.of(operator_namespace="lb-ops", exclude=["batch"]),
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["batch", "kube-node-lease", "kube-public", "kube-system", "lb-ops"],
            },
        ),
        (
            ServedNamespaces.of(named=["team-b", "kube-system"]),
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": ["kube-system", "team-b"],
            },
        ),
    ],
    ids=["cluster-wide", "named"],
)
def test_the_webhook_injects_exactly_where_the_operator_serves(
    served: ServedNamespaces, selector: dict[str, Any]
) -> None:
    assert served.webhook_selector() == {"matchExpressions": [selector]}


def test_the_webhooks_default_selector_is_the_cluster_wide_served_set() -> None:
    assert default_namespace_selector("lb-ops", exclude=("batch",)) == (
        ServedNamespaces.of(operator_namespace="lb-ops", exclude=["batch"]).webhook_selector()
    )
