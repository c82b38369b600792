"""The ``LogicBundle`` v1alpha1 API: what users write (spec) and what the operator reports (status).

These models are the single source of truth of the API.  The CRD YAML in
``crds/`` and ``docs/crd-reference.md`` are generated from them by
:mod:`logicbundle.api.crd`, and CI fails when either drifts.  Every field
states its default, its format and which setting wins when two conflict,
because ``kubectl explain`` and the reference show exactly these words.

Defaults are applied by the operator (the ``effective_*`` methods below), not
written into the stored object by the API server: the spec stays as the user
(or the GitOps tool) wrote it, so there is never a diff to reconcile.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

from pydantic import ConfigDict, Field, StrictBool, StringConstraints, model_validator

from logicbundle import contract
from logicbundle.api import names
from logicbundle.api._base import CelRule, SpecModel, StatusModel, cel_rules
from logicbundle.api.conditions import Condition
from logicbundle.api.formats import (
    ContainerPath,
    Digest,
    DnsLabel,
    Duration,
    HttpUrl,
    LocalHttpUrl,
    ObjectName,
    OciReference,
    Percent,
    Timestamp,
    short_digest,
    unknown_placeholders,
)
from logicbundle.api.meta import (
    ConfigMapKeyReference,
    LabelSelector,
    LocalObjectReference,
    SecretKeyReference,
)

NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
PositiveInt = Annotated[int, Field(ge=1, strict=True)]
Threshold = Annotated[float, Field(allow_inf_nan=False, strict=True)]
Ratio = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]

# --- Rules checked by the API server (CEL) and by the models, with one message ---

SOURCE_ONE_CA_RULE: Final = CelRule(
    rule="!(has(self.caSecretRef) && has(self.caConfigMapRef))",
    message="set at most one of caSecretRef and caConfigMapRef",
)
SOURCE_INSECURE_CA_RULE: Final = CelRule(
    rule=(
        "!(has(self.insecure) && self.insecure && "
        "(has(self.caSecretRef) || has(self.caConfigMapRef)))"
    ),
    message="insecure (plain HTTP) cannot be combined with a CA: drop one of them",
)
IDENTITY_SUBJECT_RULE: Final = CelRule(
    rule="has(self.subject) != has(self.subjectRegex)",
    message="set exactly one of subject and subjectRegex",
)
PUBLIC_KEY_SOURCE_RULE: Final = CelRule(
    rule="has(self.secretRef) != has(self.pem)",
    message="set exactly one of secretRef and pem",
)
VERIFY_REQUIRED_RULE: Final = CelRule(
    rule="has(self.keyless) || has(self.keys)",
    message=(
        "set verify.keyless, verify.keys or both: logicbundle never accepts an unsigned artifact"
    ),
)
NOTIFY_HTTP_RULE: Final = CelRule(
    rule="(has(self.mode) && self.mode == 'http') == has(self.http)",
    message="notify.http is required when mode is http, and only then",
)
NOTIFY_SIGNAL_RULE: Final = CelRule(
    rule="(has(self.mode) && self.mode == 'signal') == has(self.signal)",
    message="notify.signal is required when mode is signal, and only then",
)
HEALTH_URL_RULE: Final = CelRule(
    rule="(has(self.mode) && self.mode == 'http') == has(self.url)",
    message="healthCheck.url is required when mode is http, and only then",
)
HEALTH_SDK_RULE: Final = CelRule(
    rule=(
        "!has(self.healthCheck) || !has(self.healthCheck.mode) || "
        "self.healthCheck.mode != 'sdk' || !has(self.notify) || "
        "!has(self.notify.mode) || self.notify.mode == 'sdk'"
    ),
    message="healthCheck.mode sdk needs notify.mode sdk: the SDK confirms what it was told to load",
)
STAGE_ONE_KIND_RULE: Final = CelRule(
    rule=(
        "(has(self.internal) ? 1 : 0) + (has(self.percent) ? 1 : 0) + "
        "(has(self.requestPercent) ? 1 : 0) + (has(self.all) ? 1 : 0) == 1"
    ),
    message="a stage sets exactly one of internal, percent, requestPercent and all",
)
STAGE_PAUSE_OR_GATE_RULE: Final = CelRule(
    rule="!(has(self.pause) && has(self.manualGate) && self.manualGate)",
    message="a stage sets pause or manualGate: true, not both",
)
METRIC_SOURCE_RULE: Final = CelRule(
    rule=(
        "(has(self.builtin) ? 1 : 0) + (has(self.query) ? 1 : 0) + "
        "(has(self.templateRef) ? 1 : 0) == 1"
    ),
    message="a metric sets exactly one of builtin, query and templateRef",
)
METRIC_TEMPLATE_ARGS_RULE: Final = CelRule(
    rule="!has(self.templateArgs) || has(self.templateRef)",
    message="templateArgs are the arguments of a templateRef: set templateRef too",
)
PROMETHEUS_ONE_AUTH_RULE: Final = CelRule(
    rule="!(has(self.bearerTokenSecretRef) && has(self.basicAuthSecretRef))",
    message="set at most one of bearerTokenSecretRef and basicAuthSecretRef",
)
PROMETHEUS_ONE_CA_RULE: Final = CelRule(
    rule="!(has(self.caSecretRef) && has(self.caConfigMapRef))",
    message="set at most one of caSecretRef and caConfigMapRef",
)
METRIC_THRESHOLD_RULE: Final = CelRule(
    rule="has(self.max) || has(self.min) || has(self.maxRatioToStable)",
    message="a metric sets at least one threshold: max, min or maxRatioToStable",
)
METRIC_RANGE_RULE: Final = CelRule(
    rule="!has(self.min) || !has(self.max) || self.min <= self.max",
    message="a metric's min must not exceed its max",
)
ANALYSIS_PROMETHEUS_RULE: Final = CelRule(
    rule="(has(self.provider) && self.provider == 'prometheus') == has(self.prometheus)",
    message="analysis.prometheus is required when provider is prometheus, and only then",
)
ANALYSIS_QUERY_RULE: Final = CelRule(
    rule=(
        "(has(self.provider) && self.provider == 'prometheus') || "
        "!has(self.metrics) || self.metrics.all(m, !has(m.query))"
    ),
    message="metrics with a query need analysis.provider prometheus",
)
SPEC_REQUEST_SPLIT_RULE: Final = CelRule(
    rule=(
        "!has(self.rollout) || !has(self.rollout.stages) || "
        "!self.rollout.stages.exists(s, has(s.requestPercent)) || "
        "!has(self.target.notify) || !has(self.target.notify.mode) || "
        "self.target.notify.mode == 'sdk'"
    ),
    message=(
        "requestPercent stages split requests inside the SDK: they need target.notify.mode sdk"
    ),
)
NAME_LENGTH_RULE: Final = CelRule(
    rule=f"self.metadata.name.size() <= {names.MAX_BUNDLE_NAME_LENGTH}",
    message=(
        f"metadata.name must be at most {names.MAX_BUNDLE_NAME_LENGTH} characters: "
        "it names the state ConfigMap and the pods' state files"
    ),
)

HISTORY_LIMIT: Final = 10
"""How many rollouts ``status.history`` keeps (newest first)."""
HISTORY_STAGE_LIMIT: Final = 16
"""How many stage records one history entry keeps (the newest; as many as a spec has stages)."""
HISTORY_MESSAGE_LIMIT: Final = 256
"""Longest verdict or outcome text kept in a history entry (longer ones end in ``...``)."""
HISTORY_SIGNER_LIMIT: Final = 256
"""Longest signer identity or issuer kept in a history entry."""
HISTORY_MAX_BYTES: Final = 12 * 1024
"""Most bytes ``status.history`` takes as JSON: beyond it the oldest entries are dropped.

Every status write sends, and every watcher (operator, distributor replicas,
GitOps tools) receives, the whole object: 12 KiB keeps the status of a
bundle with a full history near 16 KiB, about 1% of etcd's 1.5 MiB limit.
Ten entries of the default three stages take about 7 KiB, so the limit only
bites with long stage lists; the entry of the rollout in flight is never
dropped."""

DEFAULT_INTERVAL: Final = "5m"
DEFAULT_ANALYSIS_INTERVAL: Final = "30s"
DEFAULT_HEALTH_TIMEOUT: Final = "10s"
DEFAULT_NOTIFY_TIMEOUT: Final = "5s"
DEFAULT_MIN_SAMPLES: Final = 20
DEFAULT_NO_DATA_DEADLINE: Final = "10m"
DEFAULT_MOUNT_ROOT: Final = "/var/run/logicbundle"
DEFAULT_CA_KEY: Final = "ca.crt"
DEFAULT_PUBLIC_KEY_KEY: Final = "cosign.pub"
DEFAULT_TRUSTED_ROOT_KEY: Final = "trusted_root.json"

# --- source ---------------------------------------------------------------------


class Source(SpecModel):
    """Where the bundle comes from: an OCI artifact in a registry."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(SOURCE_ONE_CA_RULE, SOURCE_INSECURE_CA_RULE)
    )

    ref: OciReference = Field(
        description=(
            "OCI reference of the bundle: `registry/repository:tag` or "
            "`registry/repository@sha256:<64 hex>`. The registry host is required (no implicit "
            "docker.io) and so is a tag or a digest (no implicit `latest`). When both a tag and a "
            "digest are given (`repo:tag@sha256:...`), the digest wins and the tag is never "
            "resolved. Required."
        )
    )
    interval: Duration = Field(
        default=DEFAULT_INTERVAL,
        description=(
            "How often a tag is resolved to a digest again; a new digest starts a new rollout. "
            "Go duration (`30s`, `5m`, `1h`). Ignored when `ref` holds a digest. "
            f"Default: `{DEFAULT_INTERVAL}`."
        ),
    )
    pull_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "Secret of type `kubernetes.io/dockerconfigjson` with the registry credentials, in "
            "the same namespace. Default: none (anonymous pulls)."
        ),
    )
    insecure: StrictBool = Field(
        default=False,
        description=(
            "Talk to the registry over plain HTTP, without TLS. Unsafe: use only for a registry "
            "on a trusted network, such as a test cluster. Signatures are still verified. Cannot "
            "be combined with a CA. Default: `false`."
        ),
    )
    ca_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description=(
            "Secret holding the PEM CA bundle that signs the registry's TLS certificate "
            f"(key default `{DEFAULT_CA_KEY}`). Added to, not replacing, the system roots. "
            "At most one of `caSecretRef` and `caConfigMapRef`. Default: none (system roots only)."
        ),
    )
    ca_config_map_ref: ConfigMapKeyReference | None = Field(
        default=None,
        description=(
            "ConfigMap holding the PEM CA bundle that signs the registry's TLS certificate "
            f"(key default `{DEFAULT_CA_KEY}`). Added to, not replacing, the system roots. "
            "At most one of `caSecretRef` and `caConfigMapRef`. Default: none (system roots only)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Source:
        has_ca = self.ca_secret_ref is not None or self.ca_config_map_ref is not None
        if self.ca_secret_ref is not None and self.ca_config_map_ref is not None:
            raise ValueError(SOURCE_ONE_CA_RULE.message)
        if self.insecure and has_ca:
            raise ValueError(SOURCE_INSECURE_CA_RULE.message)
        return self


# --- verify ---------------------------------------------------------------------


class Identity(SpecModel):
    """A signer accepted for keyless signatures: an OIDC issuer and a subject."""

    model_config = ConfigDict(json_schema_extra=cel_rules(IDENTITY_SUBJECT_RULE))

    issuer: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description=(
            "OIDC issuer of the signing certificate, matched exactly, e.g. "
            "`https://token.actions.githubusercontent.com`. Required."
        )
    )
    subject: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description=(
            "Subject (SAN) of the signing certificate, matched exactly, e.g. "
            "`https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main`. "
            "Exactly one of `subject` and `subjectRegex`. Default: none."
        ),
    )
    subject_regex: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description=(
            "Regular expression in Python `re` syntax (not RE2) the whole subject must match: "
            "it is always anchored at both ends (`re.fullmatch`), so `https://github.com/org/.*` "
            "cannot match a subject that merely contains it. Exactly one of `subject` and "
            "`subjectRegex`. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Identity:
        if (self.subject is None) == (self.subject_regex is None):
            raise ValueError(IDENTITY_SUBJECT_RULE.message)
        if self.subject_regex is not None:
            # The API server cannot check this; the controller reports it as
            # InvalidSpec. The verifier compiles it with the same Python `re`.
            try:
                re.compile(self.subject_regex)
            except re.error as error:
                raise ValueError(
                    f"subjectRegex is not a valid regular expression: {error}"
                ) from None
        return self


class TrustedRootReference(SpecModel):
    """A sigstore ``trusted_root.json`` kept in a ConfigMap or a Secret."""

    kind: Literal["ConfigMap", "Secret"] = Field(
        description="Kind of the object holding the root: `ConfigMap` or `Secret`. Required."
    )
    name: ObjectName = Field(description="Name of the object, in the same namespace. Required.")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        default=DEFAULT_TRUSTED_ROOT_KEY,
        description=f"Key holding the JSON document. Default: `{DEFAULT_TRUSTED_ROOT_KEY}`.",
    )


class Keyless(SpecModel):
    """Keyless (sigstore) verification: short-lived certificates bound to an OIDC identity."""

    identities: tuple[Identity, ...] = Field(
        min_length=1,
        max_length=32,
        description=(
            "Signers accepted, any-of: a signature passes when its certificate matches at least "
            "one entry. Must not be empty (an empty policy would accept nobody, and is refused "
            "rather than silently failing every verification). Required."
        ),
    )
    trusted_root_ref: TrustedRootReference | None = Field(
        default=None,
        description=(
            "Trusted root (Fulcio CAs, Rekor and CT log keys) for a private sigstore instance. "
            "Never refreshed over the network at verification time. Default: the public-good "
            "sigstore root shipped with the operator."
        ),
    )


class PublicKey(SpecModel):
    """A cosign public key (PEM), from a Secret or inline."""

    model_config = ConfigDict(json_schema_extra=cel_rules(PUBLIC_KEY_SOURCE_RULE))

    secret_ref: SecretKeyReference | None = Field(
        default=None,
        description=(
            "Secret holding the PEM public key (key default "
            f"`{DEFAULT_PUBLIC_KEY_KEY}`, as `cosign generate-key-pair k8s://` writes it). "
            "Exactly one of `secretRef` and `pem`. Default: none."
        ),
    )
    pem: (
        Annotated[
            str,
            StringConstraints(
                pattern=r"^\s*-----BEGIN PUBLIC KEY-----[\s\S]+-----END PUBLIC KEY-----\s*$",
                max_length=16384,
            ),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "The PEM public key inline (`-----BEGIN PUBLIC KEY-----`): ECDSA P-256, Ed25519 or "
            "RSA. Public keys are not secret. Exactly one of `secretRef` and `pem`. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> PublicKey:
        if (self.secret_ref is None) == (self.pem is None):
            raise ValueError(PUBLIC_KEY_SOURCE_RULE.message)
        return self


AuditPolicy = Literal["warn", "reject", "off"]


class Verify(SpecModel):
    """The signature policy: which signers are trusted. Verification is never optional."""

    model_config = ConfigDict(json_schema_extra=cel_rules(VERIFY_REQUIRED_RULE))

    keyless: Keyless | None = Field(
        default=None,
        description=(
            "Accept keyless sigstore signatures from these identities. When both `keyless` and "
            "`keys` are set, a signature satisfying either is accepted. At least one of the two "
            "is required. Default: none."
        ),
    )
    keys: tuple[PublicKey, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description=(
            "Accept signatures made with any of these cosign keys (any-of). When both `keyless` "
            "and `keys` are set, a signature satisfying either is accepted. At least one of the "
            "two is required. Default: none."
        ),
    )
    audit: AuditPolicy = Field(
        default="warn",
        description=(
            "What the content audit of Python bundles (a scan for subprocess, eval, sockets and "
            "the like) does with its findings: `warn` (events and a condition message), `reject` "
            "(`Verified=False`, no pod receives the bundle) or `off`. Defence in depth only: the "
            "signature is the trust root. Default: `warn`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Verify:
        if self.keyless is None and self.keys is None:
            raise ValueError(VERIFY_REQUIRED_RULE.message)
        return self


# --- target ---------------------------------------------------------------------

NotifyMode = Literal["sdk", "http", "signal", "none"]


class HttpNotify(SpecModel):
    """An HTTP hook on the pod's loopback interface, called after each swap."""

    url: LocalHttpUrl = Field(
        description=(
            "URL the agent POSTs to after each swap, e.g. `http://127.0.0.1:8080/-/reload`. "
            "Must be on localhost (`localhost`, `127.0.0.1` or `[::1]`); a 2xx answer means "
            "the application reloaded. Required."
        )
    )
    timeout: Duration = Field(
        default=DEFAULT_NOTIFY_TIMEOUT,
        description=(
            "How long the agent waits for the hook's answer before counting the swap as failed "
            f"and flipping back. Go duration. Default: `{DEFAULT_NOTIFY_TIMEOUT}`."
        ),
    )


class SignalNotify(SpecModel):
    """A Unix signal sent to a process of the application after each swap."""

    name: Literal["SIGHUP", "SIGUSR1", "SIGUSR2"] = Field(
        default="SIGHUP",
        description="Signal to send: `SIGHUP`, `SIGUSR1` or `SIGUSR2`. Default: `SIGHUP`.",
    )
    process_name: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        description=(
            "Name of the process to signal, matched exactly against its command name (as "
            "`pgrep -x` does); every matching process in the pod receives the signal. The "
            "webhook enables `shareProcessNamespace` for this mode. Required."
        )
    )


class Notify(SpecModel):
    """How the agent tells the application that new logic is in place."""

    model_config = ConfigDict(json_schema_extra=cel_rules(NOTIFY_HTTP_RULE, NOTIFY_SIGNAL_RULE))

    mode: NotifyMode = Field(
        default="sdk",
        description=(
            "`sdk`: the in-process logicbundle SDK is told over a Unix socket in a small "
            "volume the webhook shares between agent and application; `http`: an HTTP hook "
            "on localhost (settings in `http`); `signal`: a Unix signal (settings in "
            "`signal`); `none`: the application watches the `current` symlink itself. "
            "Default: `sdk`."
        ),
    )
    http: HttpNotify | None = Field(
        default=None,
        description=(
            "Settings of mode `http`; required with it and refused with any other mode. "
            "Default: none."
        ),
    )
    signal: SignalNotify | None = Field(
        default=None,
        description=(
            "Settings of mode `signal`; required with it and refused with any other mode. "
            "Default: none."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Notify:
        if (self.mode == "http") != (self.http is not None):
            raise ValueError(NOTIFY_HTTP_RULE.message)
        if (self.mode == "signal") != (self.signal is not None):
            raise ValueError(NOTIFY_SIGNAL_RULE.message)
        return self


HealthMode = Literal["sdk", "http", "none"]


class HealthCheck(SpecModel):
    """How the agent confirms the application is healthy after a swap."""

    model_config = ConfigDict(json_schema_extra=cel_rules(HEALTH_URL_RULE))

    mode: HealthMode | None = Field(
        default=None,
        description=(
            "`sdk`: the SDK confirms the new logic loaded and answered its self-test; `http`: a "
            "GET of `url` must answer 2xx; `none`: a successful notification counts as healthy. "
            "Default: `sdk` when `notify.mode` is `sdk`, otherwise `none`."
        ),
    )
    url: LocalHttpUrl | None = Field(
        default=None,
        description=(
            "URL checked in mode `http`, on localhost (`localhost`, `127.0.0.1` or `[::1]`). "
            "Required with mode `http` and refused otherwise. Default: none."
        ),
    )
    timeout: Duration = Field(
        default=DEFAULT_HEALTH_TIMEOUT,
        description=(
            "Deadline for the application to report healthy after the swap; when it passes, the "
            "agent flips back to the previous version and reports a failure. Go duration. "
            f"Default: `{DEFAULT_HEALTH_TIMEOUT}`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> HealthCheck:
        if (self.mode == "http") != (self.url is not None):
            raise ValueError(HEALTH_URL_RULE.message)
        return self


class Target(SpecModel):
    """Which pods receive the bundle, where it lands in them, and how they are told."""

    model_config = ConfigDict(json_schema_extra=cel_rules(HEALTH_SDK_RULE))

    pod_selector: LabelSelector = Field(
        description=(
            "Pods of the namespace that receive the bundle. A pod must also carry the label "
            f'`{names.LABEL_INJECT}: "{names.LABEL_INJECT_ENABLED}"` (which gives it the '
            "reload agent); selected pods without it are counted in `status.pods.withoutAgent`. "
            "`{}` selects every opted-in pod of the namespace. Required."
        )
    )
    mount_path: ContainerPath | None = Field(
        default=None,
        description=(
            "Absolute path where the bundle's `current` directory appears in the application "
            "containers. Default: `/var/run/logicbundle/<metadata.name>`."
        ),
    )
    notify: Notify = Field(
        default_factory=Notify,
        description="How the application learns of a swap. Default: `{mode: sdk}`.",
    )
    health_check: HealthCheck = Field(
        default_factory=HealthCheck,
        description=(
            f"How a swap is confirmed healthy. Default: mode from `notify` (see `mode`), timeout "
            f"`{DEFAULT_HEALTH_TIMEOUT}`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.health_check.mode == "sdk" and self.notify.mode != "sdk":
            raise ValueError(HEALTH_SDK_RULE.message)
        return self

    def effective_mount_path(self, bundle_name: str) -> str:
        """``mountPath``, or the default under ``/var/run/logicbundle``."""
        return self.mount_path or f"{DEFAULT_MOUNT_ROOT}/{bundle_name}"

    def effective_health_mode(self) -> HealthMode:
        """``healthCheck.mode``, or the default that follows ``notify.mode``."""
        if self.health_check.mode is not None:
            return self.health_check.mode
        return "sdk" if self.notify.mode == "sdk" else "none"


# --- rollout --------------------------------------------------------------------


class Stage(SpecModel):
    """One step of a rollout: which pods (or requests) get the candidate, and when to move on."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(STAGE_ONE_KIND_RULE, STAGE_PAUSE_OR_GATE_RULE)
    )

    name: DnsLabel = Field(
        description=(
            "Name of the stage, unique in the list; shown in `status.stage` and `kubectl get`. "
            "RFC 1123 label. Required."
        )
    )
    internal: LabelSelector | None = Field(
        default=None,
        description=(
            "Give the candidate to the pods matching this selector (e.g. "
            f"`{{matchLabels: {{{names.LABEL_COHORT}: {names.COHORT_INTERNAL}}}}}`). Exactly one "
            "of `internal`, `percent`, `requestPercent` and `all`. Default: none."
        ),
    )
    percent: Percent | None = Field(
        default=None,
        description=(
            "Give the candidate to this percentage (integer 0-100) of the selected pods, picked "
            "by a stable hash of the pod and the digest, and never fewer than one pod when "
            "non-zero. Exactly one of `internal`, `percent`, `requestPercent` and `all`. "
            "Default: none."
        ),
    )
    request_percent: Percent | None = Field(
        default=None,
        description=(
            "Give the candidate to every pod but route only this percentage (integer 0-100) of "
            "calls to it; the SDK splits the calls, so `target.notify.mode` must be `sdk`. "
            "Exactly one of `internal`, `percent`, `requestPercent` and `all`. Default: none."
        ),
    )
    all_pods: Literal[True] | None = Field(
        default=None,
        alias="all",
        description=(
            "`true`: give the candidate to every selected pod. Exactly one of `internal`, "
            "`percent`, `requestPercent` and `all`. Default: none."
        ),
    )
    pause: Duration | None = Field(
        default=None,
        description=(
            "Minimum time the stage holds once all its pods run the candidate; the analysis "
            "runs throughout and must pass before the stage advances. Go duration. Not with "
            "`manualGate`. Default: none (advance as soon as the pods are healthy and the "
            "analysis passes)."
        ),
    )
    manual_gate: StrictBool = Field(
        default=False,
        description=(
            "`true`: after the pods are healthy and the analysis passes, wait for a `promote` "
            f"action (annotation `{names.ANNOTATION_REQUESTED_ACTION}`) before advancing. Not "
            "with `pause`. Default: `false`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Stage:
        kinds = (self.internal, self.percent, self.request_percent, self.all_pods)
        if sum(kind is not None for kind in kinds) != 1:
            raise ValueError(STAGE_ONE_KIND_RULE.message)
        if self.pause is not None and self.manual_gate:
            raise ValueError(STAGE_PAUSE_OR_GATE_RULE.message)
        return self


BuiltinMetric = Literal[
    "errorRate",
    "latencyP50",
    "latencyP95",
    "latencyP99",
    "restarts",
    "residentMemory",
    "threadCount",
    "gcPauseFraction",
]


TEMPLATE_ARG_PATTERN: Final = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
"""An argument's name: what follows ``args.`` in a ``{{args.<name>}}`` placeholder."""
TEMPLATE_ARG_VALUE_LIMIT: Final = 256
"""The longest argument value (and default) accepted."""


class MetricTemplateReference(SpecModel):
    """Which metric template a metric uses."""

    name: ObjectName = Field(
        description=(
            "Name of the template: a `LogicBundleMetricTemplate` in the `LogicBundle`'s "
            "namespace, or a `ClusterLogicBundleMetricTemplate` (see `kind`). Required."
        )
    )
    kind: Literal["LogicBundleMetricTemplate", "ClusterLogicBundleMetricTemplate"] = Field(
        default="LogicBundleMetricTemplate",
        description=(
            "`LogicBundleMetricTemplate` (namespaced, same namespace) or "
            "`ClusterLogicBundleMetricTemplate` (cluster-scoped). "
            "Default: `LogicBundleMetricTemplate`."
        ),
    )


class Metric(SpecModel):
    """A measurement taken during each stage and the thresholds it must meet."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            METRIC_SOURCE_RULE,
            METRIC_TEMPLATE_ARGS_RULE,
            METRIC_THRESHOLD_RULE,
            METRIC_RANGE_RULE,
        )
    )

    name: DnsLabel = Field(
        description="Name of the metric, unique in the list; shown in `status.analysis`. Required."
    )
    builtin: BuiltinMetric | None = Field(
        default=None,
        description=(
            "A measurement the agents report, needing nothing else installed: `errorRate` "
            "(failed calls / calls through the SDK, 0-1), `latencyP50`, `latencyP95`, "
            "`latencyP99` (seconds per call), `restarts` (container restarts per pod; its "
            "samples are pods). The application process's own health, from the SDK "
            "(`notify.mode: sdk`), per pod whose process serves the digest as its primary "
            "version (samples are pods, so set this metric's `minSamples`; a "
            "`requestPercent` stage's candidate has none): `residentMemory` (resident set "
            "size, bytes, mean per pod), `threadCount` (OS threads, mean per pod), "
            "`gcPauseFraction` (time the Python garbage collector paused the process / "
            "wall-clock time, 0-1). Judge them with `maxRatioToStable` (e.g. `1.5`: a "
            "candidate whose pods grow memory by half fails its stage). None of them is "
            "judged unless listed in `analysis.metrics`; the operator exports their figures "
            "per version either way (`logicbundle_version_*`, docs/operations.md). Exactly "
            "one of `builtin` and `query`. Default: none."
        ),
    )
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        default=None,
        description=(
            "PromQL template returning one number, evaluated for the candidate and (for "
            "`maxRatioToStable`) the stable digest over the same window. Placeholders: "
            "`{{namespace}}`, `{{bundle}}`, `{{digest}}` (the digest being measured) and "
            "`{{stable_digest}}`; any other `{{...}}` is refused. Needs `provider: prometheus`. "
            "Exactly one of `builtin`, `query` and `templateRef`. Default: none."
        ),
    )
    template_ref: MetricTemplateReference | None = Field(
        default=None,
        description=(
            "A metric template (`LogicBundleMetricTemplate` in this namespace or "
            "`ClusterLogicBundleMetricTemplate`) whose query is evaluated like `query`, with "
            "`templateArgs` substituted. Read at every measurement: a missing template, a "
            "missing or unknown argument or a value the substitution refuses is a "
            "measurement without data (never a pass), said in the `Reconciling` condition "
            "and a `MetricTemplateInvalid` event. Works with either provider: the template's "
            "`prometheus` wins over `analysis.prometheus`. Exactly one of `builtin`, `query` "
            "and `templateRef`. Default: none."
        ),
    )
    template_args: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(pattern=TEMPLATE_ARG_PATTERN, max_length=63)],
                Annotated[str, StringConstraints(max_length=TEMPLATE_ARG_VALUE_LIMIT)],
            ],
            Field(max_length=32),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Values of the template's arguments, by name (`{{args.<name>}}` in its query); "
            "an argument not given takes the template's `default`, and one without either "
            "is refused, as is a name the template does not declare. Values are substituted "
            "safely: inside a quoted PromQL string they are escaped for it; elsewhere only a "
            "number, a duration (`5m`) or a metric/label name (not a PromQL keyword) is "
            f"accepted. At most {TEMPLATE_ARG_VALUE_LIMIT} characters each. Default: none."
        ),
    )
    maximum: Threshold | None = Field(
        default=None,
        alias="max",
        description=(
            "Fail when the candidate's value is above this. All thresholds set must hold. "
            "Default: none."
        ),
    )
    minimum: Threshold | None = Field(
        default=None,
        alias="min",
        description=(
            "Fail when the candidate's value is below this; not above `max`. All thresholds "
            "set must hold. Default: none."
        ),
    )
    max_ratio_to_stable: Ratio | None = Field(
        default=None,
        description=(
            "Fail when candidate / stable, measured over the same window, is above this "
            "(e.g. `1.5`: at most 50% worse). When stable has no data, too few samples or a "
            "value of 0 (no pod runs stable in an `all` stage), `analysis.stableNoData` "
            "decides: skip the ratio (only `max` and `min` apply) or hold the stage. All "
            "thresholds set must hold. Default: none."
        ),
    )
    min_samples: PositiveInt | None = Field(
        default=None,
        description=(
            "Samples (calls; pods for `restarts`) needed before this metric gives a verdict. "
            "Wins over `analysis.minSamples`. Default: `analysis.minSamples`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Metric:
        sources = (self.builtin, self.query, self.template_ref)
        if sum(source is not None for source in sources) != 1:
            raise ValueError(METRIC_SOURCE_RULE.message)
        if self.template_args is not None and self.template_ref is None:
            raise ValueError(METRIC_TEMPLATE_ARGS_RULE.message)
        if self.maximum is None and self.minimum is None and self.max_ratio_to_stable is None:
            raise ValueError(METRIC_THRESHOLD_RULE.message)
        if self.maximum is not None and self.minimum is not None and self.minimum > self.maximum:
            raise ValueError(METRIC_RANGE_RULE.message)
        if self.query is not None and (unknown := unknown_placeholders(self.query)):
            raise ValueError(
                f"unknown placeholder(s) {', '.join('{{' + u + '}}' for u in unknown)} in query; "
                "use {{namespace}}, {{bundle}}, {{digest}} or {{stable_digest}}"
            )
        return self


DEFAULT_METRICS: Final = (
    Metric(name="error-rate", builtin="errorRate", maximum=0.05, max_ratio_to_stable=2.0),
    Metric(name="latency-p95", builtin="latencyP95", max_ratio_to_stable=2.0),
)
"""The metrics judged when ``analysis.metrics`` is omitted."""


DEFAULT_BEARER_TOKEN_KEY: Final = "token"  # noqa: S105 - the name of a key, not a token
DEFAULT_BASIC_AUTH_USERNAME_KEY: Final = "username"
DEFAULT_BASIC_AUTH_PASSWORD_KEY: Final = "password"  # noqa: S105 - a key name


class Prometheus(SpecModel):
    """Where the Prometheus-compatible query API is, and how to authenticate to it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(PROMETHEUS_ONE_AUTH_RULE, PROMETHEUS_ONE_CA_RULE)
    )

    address: HttpUrl = Field(
        description=(
            "Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`. "
            "No credentials in it: use `basicAuthSecretRef` or `bearerTokenSecretRef`. Required."
        )
    )
    timeout: Duration = Field(
        default="10s",
        description="Timeout of one query. Go duration. Default: `10s`.",
    )
    bearer_token_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description=(
            "A Secret (in the `LogicBundle`'s namespace) whose key holds a bearer token, "
            "sent as `Authorization: Bearer <token>`. Key default: "
            f"`{DEFAULT_BEARER_TOKEN_KEY}`. At most one of `bearerTokenSecretRef` and "
            "`basicAuthSecretRef`. Default: none."
        ),
    )
    basic_auth_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "A Secret (in the `LogicBundle`'s namespace) with keys "
            f"`{DEFAULT_BASIC_AUTH_USERNAME_KEY}` and `{DEFAULT_BASIC_AUTH_PASSWORD_KEY}`, sent "
            "as HTTP basic authentication. At most one of `bearerTokenSecretRef` and "
            "`basicAuthSecretRef`. Default: none."
        ),
    )
    ca_secret_ref: SecretKeyReference | None = Field(
        default=None,
        description=(
            "A Secret (in the `LogicBundle`'s namespace) whose key holds the PEM CA bundle "
            "that an `https` address must chain to, instead of the system's roots. Key "
            f"default: `{DEFAULT_CA_KEY}`. At most one of `caSecretRef` and `caConfigMapRef`. "
            "Default: none."
        ),
    )
    ca_config_map_ref: ConfigMapKeyReference | None = Field(
        default=None,
        description=(
            f"Like `caSecretRef`, from a ConfigMap. Key default: `{DEFAULT_CA_KEY}`. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Prometheus:
        if self.bearer_token_secret_ref is not None and self.basic_auth_secret_ref is not None:
            raise ValueError(PROMETHEUS_ONE_AUTH_RULE.message)
        if self.ca_secret_ref is not None and self.ca_config_map_ref is not None:
            raise ValueError(PROMETHEUS_ONE_CA_RULE.message)
        return self


class Analysis(SpecModel):
    """How a stage's candidate is judged before the rollout moves on."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(ANALYSIS_PROMETHEUS_RULE, ANALYSIS_QUERY_RULE)
    )

    provider: Literal["builtin", "prometheus"] = Field(
        default="builtin",
        description=(
            "`builtin`: only the agents' own reports (metrics must be `builtin`); `prometheus`: "
            "metrics may also be PromQL `query` templates (settings in `prometheus`). "
            "Default: `builtin`."
        ),
    )
    interval: Duration = Field(
        default=DEFAULT_ANALYSIS_INTERVAL,
        description=(
            "How often the metrics are measured during a stage; each measurement is a verdict "
            f"(pass, fail or no data). Go duration. Default: `{DEFAULT_ANALYSIS_INTERVAL}`."
        ),
    )
    prometheus: Prometheus | None = Field(
        default=None,
        description=(
            "Settings of provider `prometheus`; required with it and refused otherwise. "
            "Default: none."
        ),
    )
    metrics: tuple[Metric, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description=(
            "What is measured; a verdict fails when any metric fails. Default: `error-rate` "
            "(builtin errorRate, max 0.05, maxRatioToStable 2) and `latency-p95` (builtin "
            "latencyP95, maxRatioToStable 2)."
        ),
    )
    min_samples: PositiveInt = Field(
        default=DEFAULT_MIN_SAMPLES,
        description=(
            "Samples each metric needs before it gives a verdict; fewer is `NoData` (see "
            "`onNoData`), never a pass. A metric's own `minSamples` wins. Default: "
            f"`{DEFAULT_MIN_SAMPLES}`."
        ),
    )
    failure_limit: NonNegativeInt = Field(
        default=0,
        description=(
            "Consecutive failed measurements tolerated in a stage (a passed measurement resets "
            "the count; a measurement without data neither counts nor resets, unless "
            "`onNoData: fail` counts it); one more applies `rollout.onFailure` (by default, "
            "every pod back on the stable digest). Default: `0` (the first failure rolls back)."
        ),
    )
    on_no_data: Literal["hold", "fail"] | None = Field(
        default=None,
        description=(
            "What a measurement without a verdict (too few samples, a query that failed, a "
            "distributor replica that did not answer) does: `hold` (the stage waits, "
            "`Reconciling` with reason `InsufficientData` says which metric lacks what) or "
            "`fail` (the stage waits the same way, and once it has had no data for "
            "`noDataDeadline` each further measurement without data counts as a failed one: "
            "past `failureLimit`, `onFailure` applies). Never a pass. Wins over the "
            "deprecated `noData`. Default: `hold`."
        ),
    )
    no_data_deadline: Duration | None = Field(
        default=None,
        description=(
            "With `onNoData: fail`, how long a stage may go without data, counted from the "
            "first measurement without a verdict since the last one with a verdict (in "
            "`status.analysis.noDataSince`), before measurements without data count as "
            "failed. Ignored with `hold`. Go duration. Default: "
            f"`{DEFAULT_NO_DATA_DEADLINE}` (`0s` with the deprecated `noData: fail`)."
        ),
    )
    no_data: Literal["wait", "fail"] = Field(
        default="wait",
        description=(
            "Deprecated, kept for manifests written before `onNoData`: `wait` is "
            "`onNoData: hold`; `fail` is `onNoData: fail` with `noDataDeadline: 0s` (every "
            "measurement without data counts as failed, as before) unless `noDataDeadline` is "
            "set. Ignored when `onNoData` is set. Default: `wait`."
        ),
    )
    stable_no_data: Literal["skip", "hold"] = Field(
        default="skip",
        description=(
            "What a `maxRatioToStable` threshold does when the stable digest has no data, too "
            "few samples or a value of zero: `skip` (judge the metric by its absolute "
            "thresholds alone; the verdict says the ratio was skipped) or `hold` (no verdict: "
            "the stage waits, like too few samples). A stable query that *failed* is never "
            "skipped: it is missing data and the stage waits. Default: `skip`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Analysis:
        if (self.provider == "prometheus") != (self.prometheus is not None):
            raise ValueError(ANALYSIS_PROMETHEUS_RULE.message)
        if self.provider != "prometheus" and any(m.query is not None for m in self.metrics or ()):
            raise ValueError(ANALYSIS_QUERY_RULE.message)
        return self

    def effective_metrics(self) -> tuple[Metric, ...]:
        """``metrics``, or :data:`DEFAULT_METRICS`."""
        return self.metrics if self.metrics is not None else DEFAULT_METRICS

    def effective_on_no_data(self) -> Literal["hold", "fail"]:
        """``onNoData``, else what the deprecated ``noData`` says, else ``hold``."""
        if self.on_no_data is not None:
            return self.on_no_data
        return "fail" if self.no_data == "fail" else "hold"

    def effective_no_data_deadline(self) -> str:
        """``noDataDeadline``; ``0s`` for the deprecated ``noData: fail``; else the default."""
        if self.no_data_deadline is not None:
            return self.no_data_deadline
        if self.on_no_data is None and self.no_data == "fail":
            return "0s"
        return DEFAULT_NO_DATA_DEADLINE

    def effective_min_samples(self, metric: Metric) -> int:
        """The samples ``metric`` needs: its own ``minSamples`` wins over the analysis'."""
        return metric.min_samples if metric.min_samples is not None else self.min_samples


DEFAULT_STAGES: Final = (
    Stage(
        name="internal",
        internal=LabelSelector(match_labels={names.LABEL_COHORT: names.COHORT_INTERNAL}),
        pause="5m",
    ),
    Stage(name="canary", percent=5, pause="10m"),
    Stage(name="all", all_pods=True),
)
"""The stages used when ``rollout.stages`` is omitted: internal, 5%, 100%."""


class Rollout(SpecModel):
    """How a new digest reaches the pods: stages, and the analysis between them."""

    stages: tuple[Stage, ...] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description=(
            "Stages in order. A stage that selects no pods passes at once (nothing to judge) "
            "and the condition message says so. After the last stage passes, the candidate "
            "becomes stable and every selected pod gets it, whether or not the last stage is "
            "`all`. Default: `internal` (selector "
            f"`{names.LABEL_COHORT}: {names.COHORT_INTERNAL}`, pause 5m), `canary` (percent 5, "
            "pause 10m), `all` (all: true)."
        ),
    )
    analysis: Analysis = Field(
        default_factory=Analysis,
        description=(
            "How each stage is judged. Default: the builtin provider with the default metrics."
        ),
    )
    skip_analysis: StrictBool = Field(
        default=False,
        description=(
            "`true`: stages advance as soon as their pods report the candidate active and "
            "healthy and the pause has passed; `analysis` is ignored. Agent health checks still "
            "roll back a failing candidate. Default: `false`."
        ),
    )
    on_failure: Literal["rollback", "freeze"] = Field(
        default="rollback",
        description=(
            "What a failure does (an analysis failed more often than `failureLimit` allows, "
            "or an agent flipped a pod back from the candidate): `rollback` (every pod back on "
            "the stable digest; `Stalled` with reason `RolledBack` or `HealthCheckFailed`) or "
            "`freeze` (for bundles whose effects cannot be undone: stop where it is, every pod "
            "keeps what it runs, no further stage and no rollback; `Stalled` with reason "
            "`Frozen` until a `retry` (the frozen stage starts over), an `abort` or a "
            "`rollback` action, or a new digest). A requested `abort` always rolls back. "
            "Default: `rollback`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> Rollout:
        seen: set[str] = set()
        for stage in self.stages or ():
            if stage.name in seen:
                raise ValueError(f"stage names must be unique; {stage.name!r} appears twice")
            seen.add(stage.name)
        metric_names = [metric.name for metric in self.analysis.metrics or ()]
        if len(set(metric_names)) != len(metric_names):
            raise ValueError("metric names must be unique")
        return self

    def effective_stages(self) -> tuple[Stage, ...]:
        """``stages``, or :data:`DEFAULT_STAGES`."""
        return self.stages if self.stages is not None else DEFAULT_STAGES


# --- spec -----------------------------------------------------------------------


class LogicBundleSpec(SpecModel):
    """The desired state: which signed bundle, for which pods, rolled out how."""

    model_config = ConfigDict(json_schema_extra=cel_rules(SPEC_REQUEST_SPLIT_RULE))

    source: Source = Field(description="Where the bundle comes from. Required.")
    verify: Verify = Field(
        description="Who must have signed it; nothing unverified reaches a pod. Required."
    )
    target: Target = Field(description="Which pods receive it, and how. Required.")
    rollout: Rollout = Field(
        default_factory=Rollout,
        description=(
            "How a new digest is rolled out. Default: internal, 5%, 100% with builtin analysis."
        ),
    )
    suspend: StrictBool = Field(
        default=False,
        description=(
            "`true`: the operator resolves nothing, assigns nothing and ignores manual actions "
            "until it is `false` again; pods keep what they run and a rollout in flight holds "
            "where it is. Wins over every other setting. Default: `false`."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> LogicBundleSpec:
        splits = any(stage.request_percent is not None for stage in self.rollout.stages or ())
        if splits and self.target.notify.mode != "sdk":
            raise ValueError(SPEC_REQUEST_SPLIT_RULE.message)
        return self


# --- status ---------------------------------------------------------------------

Phase = Literal[
    "Pending",
    "Verifying",
    "Progressing",
    "WaitingForPromotion",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Aborted",
    "Failed",
    "Frozen",
    "Suspended",
]
Verdict = Literal["Passed", "Failed", "NoData"]


class VerifiedIdentity(StatusModel):
    """Who signed the digest that was verified last."""

    digest: Digest = Field(description="The manifest digest that was verified. Required.")
    method: Literal["keyless", "key"] = Field(
        description="`keyless` (sigstore certificate) or `key` (cosign public key). Required."
    )
    issuer: str | None = Field(
        default=None, description="OIDC issuer of the certificate (keyless only). Default: unset."
    )
    subject: str | None = Field(
        default=None, description="Subject of the certificate (keyless only). Default: unset."
    )
    key_id: str | None = Field(
        default=None,
        description=(
            "Which key verified it (key only): `secret/<name>/<key>` or `pem/<index>`. "
            "Default: unset."
        ),
    )
    verified_at: Timestamp | None = Field(
        default=None, description="When the verification happened (RFC 3339). Default: unset."
    )


class DigestCount(StatusModel):
    """How many selected pods are assigned one digest, and how many run it."""

    digest: Digest = Field(description="A digest assigned to some pods. Required.")
    assigned: NonNegativeInt = Field(
        description="Pods whose target (the published rule) names this digest. Required."
    )
    active: NonNegativeInt = Field(
        default=0,
        description="Of those, pods whose agent reports it active and healthy. Default: 0.",
    )


class PodCounts(StatusModel):
    """Counts of the pods the bundle's selector matches, by state and by digest."""

    total: NonNegativeInt = Field(
        default=0, description="Pods matching `target.podSelector`. Default: 0."
    )
    active: NonNegativeInt = Field(
        default=0,
        description="Pods running their assigned digest, reported healthy. Default: 0.",
    )
    pending: NonNegativeInt = Field(
        default=0,
        description="Pods assigned a digest they do not run yet. Default: 0.",
    )
    failed: NonNegativeInt = Field(
        default=0,
        description=(
            "Pods whose agent reported a failed swap or health check (and flipped back). "
            "Default: 0."
        ),
    )
    without_agent: NonNegativeInt = Field(
        default=0,
        description=(
            f"Selected pods without the reload agent (no `{names.LABEL_INJECT}` label, or "
            "created before the webhook ran); they never receive the bundle. Default: 0."
        ),
    )
    by_digest: tuple[DigestCount, ...] = Field(
        default=(),
        max_length=HISTORY_LIMIT + 2,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["digest"],
        },
        description="Pods per assigned digest, stable first. Default: empty.",
    )


HashThreshold = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{1,33}$")]


class CarriedPods(StatusModel):
    """Pods an ``internal`` stage put on the candidate, kept in the percent stage after it."""

    selector: LabelSelector = Field(description="The internal stage's selector. Required.")
    threshold: HashThreshold = Field(
        description="Hash positions below this (`0x` and hexadecimal digits) are carried. Required."
    )


class PercentState(StatusModel):
    """A ``percent`` stage as published: a threshold over a stable hash, sealed by admission."""

    threshold: HashThreshold = Field(
        description=(
            "Pods whose hash position (first 128 bits of sha256(bundle, candidate, cohort "
            "key)) is below this number (`0x` and hexadecimal digits) carry the candidate. "
            "Required."
        )
    )
    sealed: NonNegativeInt = Field(
        description=(
            "Only pods admitted (annotation `logicbundle.io/admitted-at`, milliseconds) at or "
            "before this instant may carry it. Required."
        )
    )
    carry: CarriedPods | None = Field(
        default=None, description="Pods carried over from an internal stage. Default: none."
    )


class StageState(StatusModel):
    """The published stage: exactly one field is set."""

    internal: LabelSelector | None = Field(
        default=None,
        description="The pods this selector matches carry the candidate. Default: unset.",
    )
    percent: PercentState | None = Field(
        default=None, description="A percent stage. Default: unset."
    )
    all: bool | None = Field(
        default=None, description="`true`: every pod carries the candidate. Default: unset."
    )
    request_percent: Percent | None = Field(
        default=None,
        description=(
            "Every pod loads both digests; this percentage of calls goes to the candidate. "
            "Default: unset."
        ),
    )


class TargetState(StatusModel):
    """The published rollout state: every pod's target follows from it and the pod's facts."""

    bundle: str = Field(max_length=253, description="The LogicBundle's name. Required.")
    stable: Digest | None = Field(
        default=None, description="Every pod not selected by the stage runs this. Default: none."
    )
    candidate: Digest | None = Field(
        default=None, description="What the stage's pods run. Default: none."
    )
    stage: StageState | None = Field(
        default=None, description="Which pods run the candidate. Default: none (all on stable)."
    )
    revision: NonNegativeInt | None = Field(
        default=None,
        description=(
            "When this state was published (milliseconds since the epoch), above the "
            "previous state's: agents follow the newest state, from the distributor or from "
            "the mounted copy. Default: unset (a state published before revisions)."
        ),
    )
    traceparent: str | None = Field(
        default=None,
        max_length=55,
        pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description=(
            "The rollout's trace context (W3C `traceparent`, version 00): the trace of the "
            "rollout of the candidate (or of the digest that last became stable), its parent "
            "id the span of the current stage, promotion or rollback. Agents report their "
            "swaps under it. Default: unset (tracing off)."
        ),
    )


HistoryOutcome = Literal[
    "Progressing",
    "Frozen",
    "Installed",
    "Promoted",
    "RolledBack",
    "Aborted",
    "Superseded",
    "Restored",
]
STABLE_OUTCOMES: Final = ("Installed", "Promoted", "Restored")
"""The outcomes after which the entry's digest was stable: what a ``rollback`` action may name."""
StageVerdict = Literal["Passed", "Promoted", "Skipped", "Failed", "Interrupted"]
HistoryText = Annotated[str, StringConstraints(max_length=HISTORY_MESSAGE_LIMIT)]
SignerText = Annotated[str, StringConstraints(max_length=HISTORY_SIGNER_LIMIT)]


class HistoryStage(StatusModel):
    """One stage a rollout reached: when, and how it ended."""

    name: str = Field(max_length=63, description="The stage's name from the spec. Required.")
    started_at: Timestamp | None = Field(
        default=None, description="When the stage started (RFC 3339). Default: unset."
    )
    ended_at: Timestamp | None = Field(
        default=None,
        description="When the stage ended (RFC 3339). Default: unset (the stage is running).",
    )
    verdict: StageVerdict | None = Field(
        default=None,
        description=(
            "How the stage ended: `Passed` (pods healthy, analysis passed, pause over), "
            "`Promoted` (ended by a `promote` action), `Skipped` (it selected no pods), "
            "`Failed` (analysis failed or a pod flipped back) or `Interrupted` (the rollout "
            "was aborted, superseded or rolled back by request during it). Default: unset "
            "(the stage is running)."
        ),
    )
    message: HistoryText = Field(
        default="",
        description=(
            "The verdict with the figures the analysis saw (at most "
            f"{HISTORY_MESSAGE_LIMIT} characters). Default: empty."
        ),
    )


class HistoryEntry(StatusModel):
    """One rollout of a digest: who signed it, the stages it reached and how it ended."""

    digest: Digest = Field(description="The digest. Required.")
    ref: str | None = Field(
        default=None,
        max_length=512,
        description="The `spec.source.ref` it was resolved from. Default: unset.",
    )
    outcome: HistoryOutcome = Field(
        default="Promoted",
        description=(
            "`Progressing` (in flight: the newest entry only), `Frozen` (stopped by a failure "
            "with `onFailure: freeze`, until retry, abort or a new digest), `Installed` (the "
            "first digest, straight to every pod), `Promoted` (passed every stage and became "
            "stable), `RolledBack` (a failed analysis, a pod that flipped back, or a "
            "`rollback` action sent every pod back; `message` says which), `Aborted` (by an "
            "`abort` action), `Superseded` (a newer digest, or the stable one again, replaced "
            "it; or the new digest failed verification) or `Restored` (made stable again by a "
            "`rollback` action). A `rollback` action may name the digest of an `Installed`, "
            "`Promoted` or `Restored` entry. Default: `Promoted` (entries written before "
            "outcomes were recorded were all promoted)."
        ),
    )
    message: HistoryText = Field(
        default="",
        description=(
            "Why it ended that way (the failed analysis with its figures, the pod that flipped "
            f"back, who superseded it), at most {HISTORY_MESSAGE_LIMIT} characters; empty when "
            "the last stage's `message` says it. Default: empty."
        ),
    )
    signer: SignerText | None = Field(
        default=None,
        description=(
            "Who signed it: the certificate subject (keyless) or the key id (cosign key), as "
            "verified when the rollout started. Default: unset (not known)."
        ),
    )
    issuer: SignerText | None = Field(
        default=None,
        description="The OIDC issuer of the signing certificate (keyless only). Default: unset.",
    )
    started_at: Timestamp | None = Field(
        default=None, description="When the rollout started (RFC 3339). Default: unset."
    )
    ended_at: Timestamp | None = Field(
        default=None,
        description="When the outcome was reached (RFC 3339). Default: unset (in flight).",
    )
    promoted_at: Timestamp | None = Field(
        default=None, description="When it became stable (RFC 3339). Default: unset."
    )
    stages: tuple[HistoryStage, ...] = Field(
        default=(),
        max_length=HISTORY_STAGE_LIMIT,
        description=(
            f"The stages reached, in order (the newest {HISTORY_STAGE_LIMIT}; a frozen stage "
            "that is retried appears again). Default: empty."
        ),
    )

    @property
    def open(self) -> bool:
        """Whether the rollout is still going (in flight or frozen)."""
        return self.outcome in ("Progressing", "Frozen")

    @property
    def was_stable(self) -> bool:
        """Whether the digest became stable in this entry (a ``rollback`` target)."""
        return self.outcome in STABLE_OUTCOMES


class MetricResult(StatusModel):
    """The last measurement of one metric: the figures, the thresholds and the verdict."""

    name: str = Field(description="The metric's name from the spec. Required.")
    verdict: Verdict = Field(description="`Passed`, `Failed` or `NoData`. Required.")
    candidate: float | None = Field(
        default=None,
        description=(
            "The candidate's value, rounded to 4 significant digits. Default: unset (no data)."
        ),
    )
    stable: float | None = Field(
        default=None,
        description=(
            "The stable digest's value over the same window, rounded to 4 significant digits. "
            "Default: unset."
        ),
    )
    ratio: float | None = Field(
        default=None,
        description=(
            "candidate / stable when `maxRatioToStable` was judged, rounded to 4 significant "
            "digits. Default: unset (not judged: no threshold, or skipped; `message` says why)."
        ),
    )
    samples: NonNegativeInt = Field(
        default=0, description="Samples behind the candidate's value. Default: 0."
    )
    stable_samples: NonNegativeInt = Field(
        default=0, description="Samples behind the stable value. Default: 0."
    )
    min_samples: NonNegativeInt | None = Field(
        default=None,
        description="The samples the metric needed for a verdict. Default: unset.",
    )
    maximum: float | None = Field(
        default=None, alias="max", description="The spec's `max` threshold. Default: unset."
    )
    minimum: float | None = Field(
        default=None, alias="min", description="The spec's `min` threshold. Default: unset."
    )
    max_ratio_to_stable: float | None = Field(
        default=None,
        description="The spec's `maxRatioToStable` threshold. Default: unset.",
    )
    message: str = Field(
        default="",
        max_length=1024,
        description=(
            "Which threshold failed, or why there is no verdict, or that the ratio to stable "
            "was skipped, with numbers rounded for people (3 significant digits, `errorRate` "
            "in percent, latencies in ms or s). Default: empty."
        ),
    )


class AnalysisStatus(StatusModel):
    """The analysis of the current (or last) stage."""

    stage: str | None = Field(
        default=None, description="The stage the figures belong to. Default: unset."
    )
    verdict: Verdict | None = Field(
        default=None,
        description="The last measurement's verdict: `Passed`, `Failed`, `NoData`. Default: unset.",
    )
    last_measured_at: Timestamp | None = Field(
        default=None, description="When the last measurement ran (RFC 3339). Default: unset."
    )
    failures: NonNegativeInt = Field(
        default=0,
        description=(
            "Consecutive failed measurements in this stage (see `failureLimit`). Default: 0."
        ),
    )
    measurements: NonNegativeInt = Field(
        default=0, description="Measurements in this stage so far. Default: 0."
    )
    no_data_since: Timestamp | None = Field(
        default=None,
        description=(
            "When the current run of measurements without a verdict began (RFC 3339); "
            "`noDataDeadline` counts from here. Default: unset (the last measurement had a "
            "verdict)."
        ),
    )
    metrics: tuple[MetricResult, ...] = Field(
        default=(),
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="The last measurement of each metric. Default: empty.",
    )


class StatusSummary(StatusModel):
    """Short, derived copies of other status fields, for ``kubectl get`` columns only.

    Kubernetes printer columns cannot compute; the operator writes these next
    to the fields they are derived from and never reads them back.
    """

    stable: str | None = Field(
        default=None, description="`stableDigest`, first 12 hex characters. Default: unset."
    )
    candidate: str | None = Field(
        default=None, description="`candidateDigest`, first 12 hex characters. Default: unset."
    )
    pods: str | None = Field(
        default=None,
        description="`<active>/<total>` from `pods`, e.g. `19/20`. Default: unset.",
    )


class LogicBundleStatus(StatusModel):
    """The observed state, written only by the operator."""

    observed_generation: NonNegativeInt | None = Field(
        default=None,
        description=(
            "The `metadata.generation` the operator last acted on. Default: 0, served by "
            "the API server until the operator first writes the status (so kstatus and "
            "Flux read a new object as in progress, not as current)."
        ),
    )
    conditions: tuple[Condition, ...] = Field(
        default=(),
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description=(
            "`Ready` (always present), `Reconciling`, `Stalled` and `Verified`, shaped like "
            "`metav1.Condition`. Default: empty."
        ),
    )
    phase: Phase | None = Field(
        default=None,
        description=(
            "One word for humans summarising the conditions; automation should read the "
            "conditions. Default: unset."
        ),
    )
    observed_ref: str | None = Field(
        default=None,
        description="The `spec.source.ref` that was resolved last. Default: unset.",
    )
    resolved_digest: Digest | None = Field(
        default=None,
        description="The digest `observedRef` resolved to. Default: unset.",
    )
    resolved_at: Timestamp | None = Field(
        default=None, description="When `observedRef` was resolved (RFC 3339). Default: unset."
    )
    verified_identity: VerifiedIdentity | None = Field(
        default=None,
        description="Who signed the last verified digest. Default: unset.",
    )
    stable_digest: Digest | None = Field(
        default=None,
        description=(
            "The last digest that completed a rollout; failures roll back to it. Default: unset "
            "(no rollout completed yet)."
        ),
    )
    candidate_digest: Digest | None = Field(
        default=None,
        description=(
            "The digest being rolled out; with `stage` unset, the digest that was rolled back, "
            "aborted or set aside by a `rollback` action, held (every pod on `stableDigest`) "
            "until a `retry` action or a new digest. Default: unset (nothing in flight)."
        ),
    )
    stage: str | None = Field(
        default=None,
        description="Name of the current stage. Default: unset (nothing in flight).",
    )
    stage_index: NonNegativeInt | None = Field(
        default=None,
        description="Index of the current stage in the effective stages. Default: unset.",
    )
    stage_started_at: Timestamp | None = Field(
        default=None,
        description="When the current stage started (RFC 3339). Default: unset.",
    )
    stage_active_at: Timestamp | None = Field(
        default=None,
        description=(
            "When every pod of the current stage first reported the candidate active and "
            "healthy (RFC 3339); the stage's `pause` counts from here. Default: unset (not yet)."
        ),
    )
    pods: PodCounts | None = Field(
        default=None, description="Counts of the selected pods. Default: unset."
    )
    history: tuple[HistoryEntry, ...] = Field(
        default=(),
        max_length=HISTORY_LIMIT,
        description=(
            f"The last rollouts, newest first, at most {HISTORY_LIMIT} entries and "
            f"{HISTORY_MAX_BYTES // 1024} KiB as JSON (the oldest go first): the digest, its "
            "signer, the stages reached with their times and verdicts, and the outcome. The "
            "rollout in flight is the first entry, written in the same status write as each of "
            "its transitions. A `rollback` action may name the digest of any entry whose "
            "outcome is `Installed`, `Promoted` or `Restored`. Default: empty."
        ),
    )
    last_handled_action: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            f"The last value of the `{names.ANNOTATION_REQUESTED_ACTION}` annotation the "
            "operator acted on; a different value is a new request. Default: unset."
        ),
    )
    analysis: AnalysisStatus | None = Field(
        default=None,
        description="Figures of the current (or last) stage's analysis. Default: unset.",
    )
    summary: StatusSummary | None = Field(
        default=None,
        description="Short copies for `kubectl get` columns. Default: unset.",
    )
    target_state: TargetState | None = Field(
        default=None,
        description=(
            "The published rollout state every pod's target is computed from: `bundle`, "
            "`stable`, `candidate` and the `stage` as data (`internal` with a selector, "
            "`percent` with a hash threshold and an admission seal, `all`, or "
            "`requestPercent`). Distributor replicas serve it, and the agents read a copy "
            f"from the ConfigMap `{contract.STATE_CONFIGMAP_PREFIX}<name>` when no "
            "replica answers. Default: unset (nothing verified yet)."
        ),
    )

    def with_summary(self) -> LogicBundleStatus:
        """A copy with ``summary`` derived from the other fields."""
        summary = StatusSummary(
            stable=short_digest(self.stable_digest) if self.stable_digest else None,
            candidate=short_digest(self.candidate_digest) if self.candidate_digest else None,
            pods=f"{self.pods.active}/{self.pods.total}" if self.pods else None,
        )
        return self.model_copy(update={"summary": summary})


# --- the object -----------------------------------------------------------------


class ObjectMeta(StatusModel):
    """The parts of ``metav1.ObjectMeta`` the operator reads; the rest is ignored."""

    name: ObjectName = Field(description="Name of the object. Required.")
    namespace: str | None = Field(default=None, description="Namespace. Default: unset.")
    labels: dict[str, str] | None = Field(default=None, description="Labels. Default: none.")
    annotations: dict[str, str] | None = Field(
        default=None, description="Annotations. Default: none."
    )
    generation: int | None = Field(default=None, description="Generation. Default: unset.")
    uid: str | None = Field(default=None, description="UID. Default: unset.")
    resource_version: str | None = Field(
        default=None, description="Resource version. Default: unset."
    )


class LogicBundle(SpecModel):
    """A signed logic bundle, hot-reloaded into pods in a staged rollout."""

    model_config = ConfigDict(json_schema_extra=cel_rules(NAME_LENGTH_RULE))

    api_version: Literal["logicbundle.io/v1alpha1"] = Field(
        alias="apiVersion", description=f"`{names.API_VERSION}`. Required."
    )
    kind: Literal["LogicBundle"] = Field(description=f"`{names.KIND}`. Required.")
    metadata: ObjectMeta = Field(description="Standard object metadata. Required.")
    spec: LogicBundleSpec = Field(description="The desired state. Required.")
    status: LogicBundleStatus | None = Field(
        default=None, description="The observed state. Default: unset."
    )

    @model_validator(mode="after")
    def _check(self) -> LogicBundle:
        if len(self.metadata.name) > names.MAX_BUNDLE_NAME_LENGTH:
            raise ValueError(NAME_LENGTH_RULE.message)
        return self


# --- metric templates -------------------------------------------------------------

TEMPLATE_ARG_PREFIX: Final = "args."
"""A template's own placeholders are ``{{args.<name>}}``; the others are those of ``query``."""


class MetricTemplateArgument(SpecModel):
    """An argument a metric template's query takes."""

    name: Annotated[str, StringConstraints(pattern=TEMPLATE_ARG_PATTERN, max_length=63)] = Field(
        description=(
            "Name of the argument: `{{args.<name>}}` in the query, `templateArgs.<name>` in "
            "the metric. Letters, digits and `_`, not starting with a digit. Required."
        )
    )
    default: Annotated[str, StringConstraints(max_length=TEMPLATE_ARG_VALUE_LIMIT)] | None = Field(
        default=None,
        description=(
            "Value used when the metric does not give one; without it the argument is "
            "required. Substituted like any value. Default: none (required)."
        ),
    )


class MetricTemplateSpec(SpecModel):
    """A reusable PromQL query with arguments, and optionally the Prometheus to ask."""

    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description=(
            "PromQL template returning one number, evaluated for the candidate and (for "
            "`maxRatioToStable`) the stable digest. Placeholders: those of a metric's "
            "`query` (`{{namespace}}` and `{{bundle}}` of the `LogicBundle` using it, "
            "`{{digest}}`, `{{stable_digest}}`) and `{{args.<name>}}` for each declared "
            "argument; any other `{{...}}` is refused. An argument inside a quoted PromQL "
            "string (`\"...\"`, `'...'`) is escaped for it, so it cannot end the string; "
            "inside a backquoted string a value with a backquote is refused; elsewhere "
            "only a number, a duration or a metric/label name that is not a PromQL keyword "
            "is accepted. Required."
        )
    )
    args: tuple[MetricTemplateArgument, ...] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="The arguments the query takes. Default: none.",
    )
    prometheus: Prometheus | None = Field(
        default=None,
        description=(
            "The Prometheus to ask, with its authentication; wins over the "
            "`analysis.prometheus` of the `LogicBundle` using the template. Secrets and "
            "ConfigMaps it names are read in that `LogicBundle`'s namespace. Default: "
            "`analysis.prometheus` (a measurement without data when that is unset too)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> MetricTemplateSpec:
        declared = [arg.name for arg in self.args or ()]
        if len(set(declared)) != len(declared):
            raise ValueError("argument names must be unique")
        unknown = [
            name
            for name in unknown_placeholders(self.query)
            if name.removeprefix(TEMPLATE_ARG_PREFIX) not in declared
            or not name.startswith(TEMPLATE_ARG_PREFIX)
        ]
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join('{{' + u + '}}' for u in unknown)} in "
                "query; use {{namespace}}, {{bundle}}, {{digest}}, {{stable_digest}} or "
                "{{args.<name>}} of a declared argument"
            )
        return self


class MetricTemplateMeta(StatusModel):
    """The parts of a template's metadata the operator reads."""

    name: ObjectName = Field(description="Name of the object. Required.")
    namespace: str | None = Field(default=None, description="Namespace. Default: unset.")
    generation: int | None = Field(default=None, description="Generation. Default: unset.")


class LogicBundleMetricTemplate(SpecModel):
    """A reusable PromQL query with arguments, referenced by `LogicBundle` metrics."""

    model_config = ConfigDict(extra="ignore")  # status, and whatever the API server adds

    api_version: Literal["logicbundle.io/v1alpha1"] = Field(
        alias="apiVersion", description=f"`{names.API_VERSION}`. Required."
    )
    kind: Literal["LogicBundleMetricTemplate", "ClusterLogicBundleMetricTemplate"] = Field(
        description=f"`{names.TEMPLATE_KIND}` or `{names.CLUSTER_TEMPLATE_KIND}`. Required."
    )
    metadata: MetricTemplateMeta = Field(description="Standard object metadata. Required.")
    spec: MetricTemplateSpec = Field(description="The template. Required.")
