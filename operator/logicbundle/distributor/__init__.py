"""logicbundle.distributor: the HTTP service the in-pod agents talk to.

Why a service of our own between the operator and the agents: an agent learns
its pod's new target within milliseconds over a long-poll instead of waiting
for the kubelet to refresh a downward-API file, every pod fetches bytes from
one verified, content-addressed cache instead of the registry, and reports
(active digest, swap timings, health, the SDK's per-version counters) reach
the controller without the agent ever writing to the Kubernetes API.

It runs in the operator's event loop (the controller feeds
:class:`TargetStore` and reads :class:`ReportStore`) or alone as
``logicbundle distributor`` (:func:`run_distributor`), where a
:class:`PodTargetWatcher` reads the target annotations instead.  The wire
protocol is in ``docs/distributor-protocol.md``.

Embedding::

    targets, reports = TargetStore(), ReportStore()
    app = create_app(
        targets=targets,
        blobs=BlobCache(cache_dir),
        reports=reports,
        authenticator=CachingAuthenticator(TokenReviewAuthenticator(api_client=api)),
        audience=DISTRIBUTOR_AUDIENCE,
        on_activity=PodStatusWriter(api_client=api),
    )
    async with DistributorServer(app, port=8443, ssl_context=ctx):
        targets.set_targets("shop", "web-0", {"pricing": BundleTarget(digest=d)})
"""

from logicbundle.api.names import DISTRIBUTOR_AUDIENCE
from logicbundle.distributor._app import (
    DEFAULT_MAX_REPORT_BYTES,
    DEFAULT_MAX_WAIT_SECONDS,
    ActivityCallback,
    create_app,
)
from logicbundle.distributor._auth import (
    AuthenticationFailedError,
    AuthenticationUnavailableError,
    Authenticator,
    CachingAuthenticator,
    TokenReviewAuthenticator,
    identity_from_user,
)
from logicbundle.distributor._blobs import BlobCache, BlobCacheError, CachedBundle
from logicbundle.distributor._metrics import DistributorMetrics
from logicbundle.distributor._models import (
    AgentInfo,
    BundleReport,
    BundleTarget,
    LastError,
    PodIdentity,
    Report,
    Split,
    SwapTimings,
    TargetsResponse,
    VersionCounters,
)
from logicbundle.distributor._reports import PodActivity, ReportStore, StoredReport, VersionWindow
from logicbundle.distributor._run import (
    DistributorConfigError,
    DistributorServer,
    DistributorSettings,
    kubernetes_client,
    run_distributor,
    serve_distributor,
)
from logicbundle.distributor._status import PodStatusWriter
from logicbundle.distributor._targets import TargetSnapshot, TargetStore
from logicbundle.distributor._watcher import PodTargetWatcher, pod_targets

__all__ = [
    "DEFAULT_MAX_REPORT_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "DISTRIBUTOR_AUDIENCE",
    "ActivityCallback",
    "AgentInfo",
    "AuthenticationFailedError",
    "AuthenticationUnavailableError",
    "Authenticator",
    "BlobCache",
    "BlobCacheError",
    "BundleReport",
    "BundleTarget",
    "CachedBundle",
    "CachingAuthenticator",
    "DistributorConfigError",
    "DistributorMetrics",
    "DistributorServer",
    "DistributorSettings",
    "LastError",
    "PodActivity",
    "PodIdentity",
    "PodStatusWriter",
    "PodTargetWatcher",
    "Report",
    "ReportStore",
    "Split",
    "StoredReport",
    "SwapTimings",
    "TargetSnapshot",
    "TargetStore",
    "TargetsResponse",
    "TokenReviewAuthenticator",
    "VersionCounters",
    "VersionWindow",
    "create_app",
    "identity_from_user",
    "kubernetes_client",
    "pod_targets",
    "run_distributor",
    "serve_distributor",
]
