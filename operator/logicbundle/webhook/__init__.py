"""logicbundle.webhook: inject the reload agent into opted-in pods at creation.

A mutating admission webhook for Pods on CREATE.  For every ``LogicBundle``
whose ``spec.target.podSelector`` matches a pod labelled
``logicbundle.io/inject: "true"``, it adds the shared bundle volume (read-only
to the application) and a small socket volume for the SDK, the
agent as a native sidecar whose startup probe holds the application back
until its logic is active, a projected token for the distributor, a
downward-API view of the pod's annotations and labels, each bundle's published
rollout state (for the agent's slow path), the readiness gate, and the two
facts the target rule needs from admission: the cohort key and the admission
instant.  It writes no target: a pod's target is a rule over the published
state (:mod:`logicbundle.contract`).  The decision is one pure function
(:func:`mutate_pod`); the rest is a thin aiohttp shell, a self-managed
certificate, and the report of pods that slipped through without the agent.
Design and decisions: ``docs/webhook.md``.

Running it in the operator::

    settings = InjectionSettings(agent_image=image, operator_namespace=ns,
                                 distributor_url=url, distributor_ca_pem=ca)
    service = ServiceEndpoint(namespace=ns, name="logicbundle-webhook")
    tls = ServingTls()
    certs = CertificateManager(
        store=SecretCertificateStore(api_client=api, namespace=ns,
                                     secret_name="logicbundle-webhook-tls",
                                     configuration_name=DEFAULT_CONFIGURATION_NAME),
        hosts=service.dns_names, on_change=tls.load)
    await asyncio.to_thread(certs.ensure)          # before serving: the first certificate
    app = create_app(view=KubernetesClusterView(api), settings=settings)
    async with WebhookServer(app, tls=tls, port=9443):
        await certs.run(stop=stop_event)           # renews, re-publishes, reloads

And in the controller, per bundle::

    without = pods_without_agent(selected_pods)
    status.pods.withoutAgent = without.count
    if (event := without_agent_event(name, without)) is not None: post Warning event
"""

from logicbundle.api.names import VOLUME_SOCKET
from logicbundle.contract import AGENT_CONFIG_ENV as CONFIG_ENV
from logicbundle.contract import ROOT_ENV, SOCKET_ENV
from logicbundle.webhook._certs import (
    DEFAULT_CA_VALIDITY,
    DEFAULT_CERT_VALIDITY,
    RENEW_AT,
    CertificateBundle,
    CertificateConflictError,
    CertificateManager,
    CertificateStore,
    renewal_time,
)
from logicbundle.webhook._config import (
    DEFAULT_CONFIGURATION_NAME,
    DEFAULT_FAILURE_POLICY,
    DEFAULT_TIMEOUT_SECONDS,
    SYSTEM_NAMESPACES,
    WEBHOOK_NAME,
    WEBHOOK_PATH,
    FailurePolicy,
    ServiceEndpoint,
    default_namespace_selector,
    webhook_configuration,
)
from logicbundle.webhook._kube import KubernetesClusterView, SecretCertificateStore
from logicbundle.webhook._mutate import (
    SKIPPED_NOTHING_SELECTS,
    SKIPPED_RESERVED_NAME,
    Mutation,
    escape_pointer,
    has_agent,
    injection_record,
    mount_root,
    mutate_pod,
    selects,
)
from logicbundle.webhook._report import (
    EVENT_PODS_WITHOUT_AGENT,
    PodWithoutAgent,
    WithoutAgent,
    pods_without_agent,
    without_agent_event,
)
from logicbundle.webhook._server import (
    DEFAULT_DEADLINE_SECONDS,
    ClusterView,
    ServingTls,
    WebhookServer,
    create_app,
    decide,
    review_response,
)
from logicbundle.webhook._settings import (
    AGENT_ROOT,
    ANNOTATIONS_FILE,
    DEFAULT_RUN_AS,
    DISTRIBUTOR_CA_FILE,
    IMAGE_PULL_POLICIES,
    INJECTION_VERSION,
    LABELS_FILE,
    SOCKET_DIR,
    SOCKET_FILE,
    STATE_DIR,
    TOKEN_FILE,
    InjectionSettings,
)

__all__ = [
    "AGENT_ROOT",
    "ANNOTATIONS_FILE",
    "CONFIG_ENV",
    "DEFAULT_CA_VALIDITY",
    "DEFAULT_CERT_VALIDITY",
    "DEFAULT_CONFIGURATION_NAME",
    "DEFAULT_DEADLINE_SECONDS",
    "DEFAULT_FAILURE_POLICY",
    "DEFAULT_RUN_AS",
    "DEFAULT_TIMEOUT_SECONDS",
    "DISTRIBUTOR_CA_FILE",
    "EVENT_PODS_WITHOUT_AGENT",
    "IMAGE_PULL_POLICIES",
    "INJECTION_VERSION",
    "LABELS_FILE",
    "RENEW_AT",
    "ROOT_ENV",
    "SKIPPED_NOTHING_SELECTS",
    "SKIPPED_RESERVED_NAME",
    "SOCKET_DIR",
    "SOCKET_ENV",
    "SOCKET_FILE",
    "STATE_DIR",
    "SYSTEM_NAMESPACES",
    "TOKEN_FILE",
    "VOLUME_SOCKET",
    "WEBHOOK_NAME",
    "WEBHOOK_PATH",
    "CertificateBundle",
    "CertificateConflictError",
    "CertificateManager",
    "CertificateStore",
    "ClusterView",
    "FailurePolicy",
    "InjectionSettings",
    "KubernetesClusterView",
    "Mutation",
    "PodWithoutAgent",
    "SecretCertificateStore",
    "ServiceEndpoint",
    "ServingTls",
    "WebhookServer",
    "WithoutAgent",
    "create_app",
    "decide",
    "default_namespace_selector",
    "escape_pointer",
    "has_agent",
    "injection_record",
    "mount_root",
    "mutate_pod",
    "pods_without_agent",
    "renewal_time",
    "review_response",
    "selects",
    "webhook_configuration",
    "without_agent_event",
]
