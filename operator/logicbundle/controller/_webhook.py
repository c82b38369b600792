"""The injection webhook inside the operator process: certificate, server, configuration.

In a cluster the chart installs the MutatingWebhookConfiguration pointing at
the webhook Service, and the operator only keeps the certificate (in a
Secret, shared by replicas) and the configuration's caBundle up to date.  For
local runs on the e2e control plane, ``url`` makes the operator install the
configuration itself with a ``clientConfig.url`` on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.webhook import (
    DEFAULT_CONFIGURATION_NAME,
    DEFAULT_RUN_AS,
    CertificateManager,
    InjectionSettings,
    KubernetesClusterView,
    SecretCertificateStore,
    ServiceEndpoint,
    ServingTls,
    WebhookServer,
    create_app,
    webhook_configuration,
)


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    port: int
    host: str | None
    operator_namespace: str
    service_name: str
    agent_image: str
    distributor_url: str
    agent_env: tuple[tuple[str, str], ...] = ()
    agent_resources: Mapping[str, Mapping[str, str]] | None = None
    """None: the injection's defaults."""
    agent_run_as_user: int | None = DEFAULT_RUN_AS
    """The agent's runAsUser; None leaves it to the platform (OpenShift's SCC)."""
    agent_run_as_group: int | None = DEFAULT_RUN_AS
    """The agent's runAsGroup; None leaves it to the platform."""
    agent_image_pull_policy: str = "IfNotPresent"
    distributor_ca_pem: str | None = None
    url: str | None = None
    """Install the configuration with this clientConfig.url (local runs) instead of the chart."""
    secret_name: str = "logicbundle-webhook-tls"  # noqa: S105 - a name, not a secret
    served: ServedNamespaces | None = None
    """The namespaces served: the installed configuration injects pods there only.
    None: every namespace but the system ones and the operator's own."""


class RunningWebhook:
    """The webhook server and its certificate renewal, until :meth:`stop`."""

    def __init__(self, server: WebhookServer, renewal: asyncio.Task[None], stop: asyncio.Event):
        self.server = server
        self._renewal = renewal
        self._stop = stop

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewal
        await self.server.stop()


async def start_webhook(
    settings: WebhookSettings, api: kubernetes.client.ApiClient
) -> RunningWebhook:
    service = ServiceEndpoint(namespace=settings.operator_namespace, name=settings.service_name)
    hosts = (*service.dns_names, "127.0.0.1", "localhost")
    tls = ServingTls()
    certs = CertificateManager(
        store=SecretCertificateStore(
            api_client=api,
            namespace=settings.operator_namespace,
            secret_name=settings.secret_name,
            configuration_name=DEFAULT_CONFIGURATION_NAME,
        ),
        hosts=hosts,
        on_change=tls.load,
    )
    bundle = await asyncio.to_thread(certs.ensure)
    injection = InjectionSettings(
        agent_image=settings.agent_image,
        extra_env=settings.agent_env,
        run_as_user=settings.agent_run_as_user,
        run_as_group=settings.agent_run_as_group,
        image_pull_policy=settings.agent_image_pull_policy,
        operator_namespace=settings.operator_namespace,
        distributor_url=settings.distributor_url,
        distributor_ca_pem=settings.distributor_ca_pem,
    )
    if settings.agent_resources is not None:
        injection = dataclasses.replace(injection, resources=settings.agent_resources)
    app = create_app(view=KubernetesClusterView(api), settings=injection)
    server = WebhookServer(app, tls=tls, host=settings.host, port=settings.port)
    await server.start()
    if settings.url is not None:
        url = settings.url.replace(":0/", f":{server.port}/")
        body = webhook_configuration(
            ca_bundle=bundle.ca_bundle,
            operator_namespace=settings.operator_namespace,
            url=url,
            namespace_selector=settings.served.webhook_selector() if settings.served else None,
        )
        await asyncio.to_thread(_install, api, body)
    stop = asyncio.Event()
    renewal = asyncio.create_task(certs.run(stop=stop))
    return RunningWebhook(server, renewal, stop)


def _install(api: kubernetes.client.ApiClient, body: dict[str, Any]) -> None:
    # Plain dicts in and out: the body comes from webhook_configuration(), not the models.
    admission: Any = kubernetes.client.AdmissionregistrationV1Api(api)
    name = body["metadata"]["name"]
    try:
        current = admission.read_mutating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        admission.create_mutating_webhook_configuration(body)
        return
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    admission.replace_mutating_webhook_configuration(name, body)
