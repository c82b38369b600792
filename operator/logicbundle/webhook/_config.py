"""The ``MutatingWebhookConfiguration`` that sends opted-in pods to the webhook.

Built in one place for the Helm chart (rendered from it) and for the e2e
suite.  The reasons behind each setting, failurePolicy first, are in
``docs/webhook.md``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from logicbundle.api import names, namespaces
from logicbundle.api.namespaces import ServedNamespaces

WEBHOOK_PATH: Final = "/mutate-pods"
DEFAULT_CONFIGURATION_NAME: Final = "logicbundle-injector"
WEBHOOK_NAME: Final = "inject.pods.logicbundle.io"
DEFAULT_TIMEOUT_SECONDS: Final = 5
SYSTEM_NAMESPACES: Final = namespaces.SYSTEM_NAMESPACES

FailurePolicy = Literal["Ignore", "Fail"]
DEFAULT_FAILURE_POLICY: Final[FailurePolicy] = "Ignore"


@dataclass(frozen=True, kw_only=True, slots=True)
class ServiceEndpoint:
    """The in-cluster Service in front of the webhook server."""

    namespace: str
    name: str
    port: int = 443

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The names the serving certificate must carry for this Service."""
        base = f"{self.name}.{self.namespace}"
        return (self.name, base, f"{base}.svc", f"{base}.svc.cluster.local")


def default_namespace_selector(
    operator_namespace: str, *, exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """Every namespace but the system ones, the operator's own and ``exclude``.

    The served set of a cluster-wide operator (:class:`ServedNamespaces`), as a selector.
    """
    served = ServedNamespaces.of(operator_namespace=operator_namespace, exclude=exclude)
    return served.webhook_selector()


def webhook_configuration(
    *,
    ca_bundle: bytes,
    operator_namespace: str,
    service: ServiceEndpoint | None = None,
    url: str | None = None,
    name: str = DEFAULT_CONFIGURATION_NAME,
    failure_policy: FailurePolicy = DEFAULT_FAILURE_POLICY,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    namespace_selector: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``MutatingWebhookConfiguration`` body (admissionregistration.k8s.io/v1).

    Exactly one of ``service`` (in a cluster) and ``url`` (a webhook served
    outside the cluster, e.g. on 127.0.0.1 in the e2e suite) is required.
    ``ca_bundle`` is the PEM the API server trusts for the serving
    certificate (:attr:`CertificateBundle.ca_bundle`).
    ``namespace_selector`` replaces :func:`default_namespace_selector`.
    """
    if (service is None) == (url is None):
        raise ValueError("give exactly one of service and url")
    if not 1 <= timeout_seconds <= 30:
        raise ValueError("timeout_seconds must be between 1 and 30 (the API server's range)")
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if service is not None:
        client_config["service"] = {
            "namespace": service.namespace,
            "name": service.name,
            "port": service.port,
            "path": WEBHOOK_PATH,
        }
    else:
        client_config["url"] = url
    selector = (
        dict(namespace_selector)
        if namespace_selector is not None
        else default_namespace_selector(operator_namespace)
    )
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata,
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config,
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "objectSelector": {"matchLabels": {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED}},
                "namespaceSelector": selector,
                "matchPolicy": "Equivalent",
                "failurePolicy": failure_policy,
                "reinvocationPolicy": "IfNeeded",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }
