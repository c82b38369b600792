"""The MutatingWebhookConfiguration: who is sent to the webhook, and what happens when it fails."""

from __future__ import annotations

import base64

import pytest

from logicbundle.webhook import (
    WEBHOOK_PATH,
    ServiceEndpoint,
    default_namespace_selector,
    webhook_configuration,
)


def test_the_configuration_sends_only_opted_in_pods_on_create_and_never_blocks_them() -> None:
    config = webhook_configuration(
        ca_bundle=b"PEM",
        operator_namespace="lb-system",
        service=ServiceEndpoint(namespace="lb-system", name="logicbundle-webhook"),
    )
    (hook,) = config["webhooks"]
    assert hook["clientConfig"] == {
        "caBundle": base64.b64encode(b"PEM").decode(),
        "service": {
            "namespace": "lb-system",
            "name": "logicbundle-webhook",
            "port": 443,
            "path": WEBHOOK_PATH,
        },
    }
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    assert hook["objectSelector"] == {"matchLabels": {"logicbundle.io/inject": "true"}}
    assert hook["failurePolicy"] == "Ignore"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["sideEffects"] == "None"
    assert hook["timeoutSeconds"] == 5
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-node-lease", "kube-public", "kube-system", "lb-system"],
            }
        ]
    }


def test_a_url_client_config_and_a_namespace_selector_can_be_given() -> None:
    selector = {"matchLabels": {"kubernetes.io/metadata.name": "t"}}
    config = webhook_configuration(
        ca_bundle=b"x",
        operator_namespace="lb",
        url="https://127.0.0.1:9443/mutate-pods",
        namespace_selector=selector,
        failure_policy="Fail",
        name="e2e",
    )
    (hook,) = config["webhooks"]
    assert config["metadata"]["name"] == "e2e"
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:9443/mutate-pods"
    assert hook["namespaceSelector"] == selector
    assert hook["failurePolicy"] == "Fail"


def test_exactly_one_of_service_and_url_is_required() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        webhook_configuration(ca_bundle=b"x", operator_namespace="lb")
    with pytest.raises(ValueError, match="exactly one"):
        webhook_configuration(
            ca_bundle=b"x",
            operator_namespace="lb",
            url="https://x",
            service=ServiceEndpoint(namespace="a", name="b"),
        )


def test_a_timeout_outside_the_api_servers_range_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        webhook_configuration(
            ca_bundle=b"x", operator_namespace="lb", url="https://x", timeout_seconds=31
        )


def test_the_service_dns_names_cover_every_way_the_api_server_may_dial_it() -> None:
    assert ServiceEndpoint(namespace="lb", name="wh").dns_names == (
        "wh",
        "wh.lb",
        "wh.lb.svc",
        "wh.lb.svc.cluster.local",
    )


def test_extra_namespaces_can_be_excluded() -> None:
    selector = default_namespace_selector("lb", exclude=("monitoring",))
    assert "monitoring" in selector["matchExpressions"][0]["values"]
