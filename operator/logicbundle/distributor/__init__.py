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
:class:`RuleWatcher` feeds a :class:`RuleTargets` from the LogicBundles'
published states and the pods' own facts instead.  The wire
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
    TOKEN_HEADER,
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
    LeakReferrer,
    PodIdentity,
    Report,
    Split,
    SwapTimings,
    TargetsResponse,
    VersionCounters,
    VersionLeak,
    parse_report,
)
from logicbundle.distributor._reports import PodActivity, ReportStore, StoredReport, VersionWindow
from logicbundle.distributor._rules import (
    BundleRule,
    RuleTargets,
    bundle_rule,
    bundle_target,
    facts_of,
    rule_of,
)
from logicbundle.distributor._run import (
    DistributorConfigError,
    DistributorServer,
    DistributorSettings,
    kubernetes_client,
    run_distributor,
    serve_distributor,
    serve_when_synced,
)
from logicbundle.distributor._status import PodStatusWriter
from logicbundle.distributor._summary import (
    BundleSummary,
    Counters,
    Failure,
    Leak,
    SummaryError,
    combine,
    summary_from_json,
)
from logicbundle.distributor._targets import TargetSnapshot, TargetStore
from logicbundle.distributor._traces import SwapSpans, swap_spans
from logicbundle.distributor._upstream import Upstream, UpstreamError
from logicbundle.distributor._watcher import (
    KubeSource,
    LabelSets,
    PodWatch,
    RuleWatcher,
    WatchSource,
)

__all__ = [
    "DEFAULT_MAX_REPORT_BYTES",
    "DEFAULT_MAX_WAIT_SECONDS",
    "DISTRIBUTOR_AUDIENCE",
    "TOKEN_HEADER",
    "ActivityCallback",
    "AgentInfo",
    "AuthenticationFailedError",
    "AuthenticationUnavailableError",
    "Authenticator",
    "BlobCache",
    "BlobCacheError",
    "BundleReport",
    "BundleRule",
    "BundleSummary",
    "BundleTarget",
    "CachedBundle",
    "CachingAuthenticator",
    "Counters",
    "DistributorConfigError",
    "DistributorMetrics",
    "DistributorServer",
    "DistributorSettings",
    "Failure",
    "KubeSource",
    "LabelSets",
    "LastError",
    "Leak",
    "LeakReferrer",
    "PodActivity",
    "PodIdentity",
    "PodStatusWriter",
    "PodWatch",
    "Report",
    "ReportStore",
    "RuleTargets",
    "RuleWatcher",
    "Split",
    "StoredReport",
    "SummaryError",
    "SwapSpans",
    "SwapTimings",
    "TargetSnapshot",
    "TargetStore",
    "TargetsResponse",
    "TokenReviewAuthenticator",
    "Upstream",
    "UpstreamError",
    "VersionCounters",
    "VersionLeak",
    "VersionWindow",
    "WatchSource",
    "bundle_rule",
    "bundle_target",
    "combine",
    "create_app",
    "facts_of",
    "identity_from_user",
    "kubernetes_client",
    "parse_report",
    "rule_of",
    "run_distributor",
    "serve_distributor",
    "serve_when_synced",
    "summary_from_json",
    "swap_spans",
]
