"""The injection itself: one pure function from a pod being created to a JSONPatch.

No I/O, no clock: the admission handler lists the ``LogicBundle`` objects of
the namespace and passes them in with the admission instant, so every rule of
the injection is tested without an API server, and a second call on the
patched pod is provably a no-op.

The webhook writes no target: what a pod runs is a rule over the bundle's one
published rollout state and the pod's own facts (:mod:`logicbundle.contract`).
It records the facts the rule needs and cannot learn later -- the cohort key
and the admission instant, as annotations written once -- and gives the agent
what its slow path evaluates the rule with: the pod's labels and annotations
through the downward API, and each bundle's published state (the ConfigMap
``lb-state-<bundle>``, optional, so a pod admitted before the operator has
published one still starts) through a projected volume mounted in the agent
only.

Where the bundles appear in the application containers: the shared emptyDir
is mounted *whole* and read-only (never a ``subPath``: a subPath is resolved
once at container start, so a bundle directory created later would not
appear).  A bundle's ``mountPath`` names the directory holding its
``current`` link, which in the volume is ``<volume>/<bundle>/``.  So when the
mount path ends in ``/<bundle>`` (the default,
``/var/run/logicbundle/<bundle>``, always does) the volume is mounted at its
parent and ``<mountPath>/current`` is exact; any other mount path gets the
volume itself, and the bundle is then at ``<mountPath>/<bundle>/current``.
Bundles sharing a parent share one mount.

The SDK's socket lives in a second, tiny memory-backed emptyDir mounted
read-write at :data:`SOCKET_DIR` in the agent and in every application
container (``$LOGICBUNDLE_SOCKET`` names it): a socket cannot be bound on
the read-only bundles mount.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from logicbundle import __version__, contract
from logicbundle.api import LogicBundle, names
from logicbundle.oci import InvalidReferenceError, Reference
from logicbundle.rollout import cohort_key
from logicbundle.webhook._settings import (
    AGENT_ROOT,
    ANNOTATIONS_FILE,
    DISTRIBUTOR_CA_FILE,
    INJECTION_VERSION,
    LABELS_FILE,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    PODINFO_DIR,
    SOCKET_DIR,
    SOCKET_FILE,
    SOCKET_VOLUME_SIZE_LIMIT,
    STATE_DIR,
    TOKEN_DIR,
    TOKEN_FILE,
    InjectionSettings,
)

Pod = Mapping[str, Any]
"""A raw Pod body, as the admission request carries it."""

JsonPatch = tuple[dict[str, Any], ...]

# The environment the injection sets is logicbundle.contract's: AGENT_CONFIG_ENV in the
# agent container; ROOT_ENV in application containers when all their bundles share one
# mount, SOCKET_ENV in those that get the socket volume (the SDK reads both).

PROBE_TIMEOUT_SECONDS: Final = 5
"""The agent's probes' timeout (the kubelet's default of 1 s is too tight under CPU limits)."""

SKIPPED_NOTHING_SELECTS: Final = "NoLogicBundleSelectsPod"
SKIPPED_RESERVED_NAME: Final = "ReservedNameInUse"

RESERVED_VOLUMES: Final = (
    names.VOLUME_BUNDLES,
    names.VOLUME_SOCKET,
    names.VOLUME_TOKEN,
    names.VOLUME_PODINFO,
    names.VOLUME_STATE,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Mutation:
    """What the webhook does to one pod.

    ``patch`` empty: the pod is admitted unchanged (it already has the agent).
    ``bundles`` are the ``LogicBundle`` names the agent was injected for;
    ``skipped`` says why no agent was injected (then ``patch`` only records
    that in the ``logicbundle.io/injected`` annotation); ``warnings`` are
    shown to whoever created the pod (``kubectl`` prints them).
    """

    patch: JsonPatch = ()
    bundles: tuple[str, ...] = ()
    skipped: str | None = None
    warnings: tuple[str, ...] = ()


def escape_pointer(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): ``~`` -> ``~0``, ``/`` -> ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def has_agent(pod: Pod) -> bool:
    """Whether the pod carries the injected agent (a native sidecar named ``logicbundle-agent``)."""
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]
    return any(c.get("name") == names.AGENT_CONTAINER for c in containers)


def injection_record(pod: Pod) -> Mapping[str, Any] | None:
    """The parsed ``logicbundle.io/injected`` annotation, or None when absent or unreadable."""
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(names.ANNOTATION_INJECTED)
    if not value:
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def selects(bundle: LogicBundle, pod: Pod) -> bool:
    """Whether ``bundle``'s ``spec.target.podSelector`` matches the pod's labels."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return bundle.spec.target.pod_selector.matches(dict(labels))


def mount_root(bundle: LogicBundle) -> str:
    """Where the whole shared volume is mounted for ``bundle`` (see the module doc)."""
    name = bundle.metadata.name
    path = posixpath.normpath(bundle.spec.target.effective_mount_path(name))
    parent, last = posixpath.split(path)
    return parent if last == name and parent != "/" else path


def _agent_config(bundles: Sequence[LogicBundle], settings: InjectionSettings) -> str:
    config: dict[str, Any] = {
        "root": AGENT_ROOT,
        "distributor": settings.distributor_url,
        "tokenFile": TOKEN_FILE,
        "annotationsFile": ANNOTATIONS_FILE,
        "labelsFile": LABELS_FILE,
        "stateDir": STATE_DIR,
        "socket": SOCKET_FILE,
        "listen": f"0.0.0.0:{settings.listen_port}",
        "bundles": {},
    }
    if settings.distributor_ca_pem:
        config["distributorCA"] = DISTRIBUTOR_CA_FILE
    for bundle in bundles:
        target = bundle.spec.target
        try:
            parsed = Reference.parse(bundle.spec.source.ref)
            source = f"{parsed.registry}/{parsed.repository}"
        except InvalidReferenceError:  # the CRD's pattern makes this unreachable in practice
            source = bundle.spec.source.ref
        health = target.health_check.model_dump(mode="json", by_alias=True, exclude_none=True)
        health["mode"] = target.effective_health_mode()
        config["bundles"][bundle.metadata.name] = {
            "source": source,
            "insecure": bundle.spec.source.insecure,
            "notify": target.notify.model_dump(mode="json", by_alias=True, exclude_none=True),
            "healthCheck": health,
        }
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def _agent_container(bundles: Sequence[LogicBundle], settings: InjectionSettings) -> dict[str, Any]:
    port = settings.listen_port
    return {
        "name": names.AGENT_CONTAINER,
        "image": settings.agent_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["agent"],
        # A native sidecar: starts before the application containers, runs beside them.
        "restartPolicy": "Always",
        "env": [
            {"name": contract.AGENT_CONFIG_ENV, "value": _agent_config(bundles, settings)},
            {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": POD_NAMESPACE_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            *({"name": name, "value": value} for name, value in settings.extra_env),
        ],
        "ports": [{"name": "lb-agent", "containerPort": port, "protocol": "TCP"}],
        # Passes only once the assigned bundles are active: the application
        # containers start after it, so they never start without their logic.
        # timeoutSeconds 5, not the kubelet's 1: the agent's server is a Python thread in a
        # container limited to 200m of CPU, and on a busy node (measured on the harness's
        # real node) an answer can take over a second while a swap unpacks; a liveness
        # timeout then restarts the agent in the middle of that very swap.
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 1,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": settings.startup_failure_threshold,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
            "failureThreshold": 3,
        },
        "resources": {kind: dict(values) for kind, values in settings.resources.items()},
        "securityContext": {
            "runAsNonRoot": True,
            # Unset (None): the platform assigns them (OpenShift's SCC).
            **({} if settings.run_as_user is None else {"runAsUser": settings.run_as_user}),
            **({} if settings.run_as_group is None else {"runAsGroup": settings.run_as_group}),
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": names.VOLUME_BUNDLES, "mountPath": AGENT_ROOT},
            {"name": names.VOLUME_SOCKET, "mountPath": SOCKET_DIR},
            {"name": names.VOLUME_TOKEN, "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": names.VOLUME_PODINFO, "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": names.VOLUME_STATE, "mountPath": STATE_DIR, "readOnly": True},
        ],
    }


def _state_volume(bundle_names: Sequence[str]) -> dict[str, Any]:
    """Each bundle's published state, ``<STATE_DIR>/<bundle>.json`` in the agent.

    Optional sources: the ConfigMap may not exist yet (a bundle the operator
    has not published), and a missing required ConfigMap would hold the whole
    pod in ``ContainerCreating``; the agent reads a missing file as "no
    target from the slow path".  The kubelet refreshes the files when the
    ConfigMap changes, within its sync period plus its cache TTL.
    """
    return {
        "name": names.VOLUME_STATE,
        "projected": {
            "sources": [
                {
                    "configMap": {
                        "name": contract.state_configmap_name(name),
                        "optional": True,
                        "items": [
                            {"key": contract.STATE_KEY, "path": contract.state_file_name(name)}
                        ],
                    }
                }
                for name in bundle_names
            ]
        },
    }


def _volumes(settings: InjectionSettings, bundle_names: Sequence[str]) -> list[dict[str, Any]]:
    podinfo: list[dict[str, Any]] = [
        {
            "path": posixpath.basename(ANNOTATIONS_FILE),
            "fieldRef": {"fieldPath": "metadata.annotations"},
        },
        {"path": posixpath.basename(LABELS_FILE), "fieldRef": {"fieldPath": "metadata.labels"}},
    ]
    if settings.distributor_ca_pem:
        podinfo.append(
            {
                "path": posixpath.basename(DISTRIBUTOR_CA_FILE),
                "fieldRef": {
                    "fieldPath": f"metadata.annotations['{names.ANNOTATION_DISTRIBUTOR_CA}']"
                },
            }
        )
    return [
        {"name": names.VOLUME_BUNDLES, "emptyDir": {}},
        {
            "name": names.VOLUME_SOCKET,
            "emptyDir": {"medium": "Memory", "sizeLimit": SOCKET_VOLUME_SIZE_LIMIT},
        },
        {
            "name": names.VOLUME_TOKEN,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": names.DISTRIBUTOR_AUDIENCE,
                            "expirationSeconds": settings.token_expiration_seconds,
                            "path": posixpath.basename(TOKEN_FILE),
                        }
                    }
                ]
            },
        },
        {"name": names.VOLUME_PODINFO, "downwardAPI": {"items": podinfo}},
        _state_volume(bundle_names),
    ]


def _record(*, settings: InjectionSettings, bundles: Sequence[str], skipped: str | None) -> str:
    record: dict[str, Any] = {"version": INJECTION_VERSION, "bundles": list(bundles)}
    if skipped is None:
        record["agentImage"] = settings.agent_image
        record["operator"] = __version__
    else:
        record["skipped"] = skipped
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


class _Patch:
    """Builds JSONPatch ops against the original pod, creating missing maps and lists."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.ops: list[dict[str, Any]] = []
        self._new_annotations: dict[str, str] | None = None

    def annotate(self, key: str, value: str) -> None:
        existing = (self.pod.get("metadata") or {}).get("annotations")
        if existing is None:
            if self._new_annotations is None:
                self._new_annotations = {}
                if "metadata" not in self.pod:
                    self.ops.append({"op": "add", "path": "/metadata", "value": {}})
                self.ops.append(
                    {"op": "add", "path": "/metadata/annotations", "value": self._new_annotations}
                )
            self._new_annotations[key] = value
            return
        path = f"/metadata/annotations/{escape_pointer(key)}"
        self.ops.append({"op": "add", "path": path, "value": value})

    def append(self, path: str, current: Sequence[Any] | None, items: Sequence[Any]) -> None:
        if not items:
            return
        if current is None:
            self.ops.append({"op": "add", "path": path, "value": list(items)})
            return
        self.ops.extend({"op": "add", "path": f"{path}/-", "value": item} for item in items)


def _nested(path: str, under: str) -> bool:
    """Whether ``path`` is ``under`` or inside it."""
    return path == under or path.startswith(under.rstrip("/") + "/")


def _app_container_ops(
    patch: _Patch, *, spec: Mapping[str, Any], bundles: Sequence[LogicBundle]
) -> list[str]:
    roots = sorted({mount_root(bundle) for bundle in bundles})
    warnings: list[str] = []
    for index, container in enumerate(spec.get("containers") or ()):
        name = container.get("name")
        mounts = container.get("volumeMounts")
        used = {posixpath.normpath(m.get("mountPath", "")) for m in mounts or ()}
        bundle_mounts = []
        for root in roots:
            if root in used:
                warnings.append(
                    f"container {name!r} already mounts something at {root}; "
                    "the logic bundles are not mounted there"
                )
                continue
            bundle_mounts.append(
                {"name": names.VOLUME_BUNDLES, "mountPath": root, "readOnly": True}
            )
        socket_mounts = []
        if bundle_mounts:
            # Never nested in the read-only bundles mount (the mount point could not be
            # made there), never on top of a mount of the container's own.
            if SOCKET_DIR in used or any(_nested(SOCKET_DIR, root) for root in roots):
                warnings.append(
                    f"container {name!r}: {SOCKET_DIR} is already mounted or lies inside a "
                    "read-only bundle mount; the SDK socket volume is not mounted there, so "
                    "notify mode sdk cannot reach it (choose another mountPath)"
                )
            else:
                socket_mounts.append({"name": names.VOLUME_SOCKET, "mountPath": SOCKET_DIR})
        patch.append(
            f"/spec/containers/{index}/volumeMounts", mounts, [*bundle_mounts, *socket_mounts]
        )
        env = container.get("env")
        defined = {variable.get("name") for variable in env or ()}
        new_env = []
        if len(roots) == 1 and contract.ROOT_ENV not in defined and bundle_mounts:
            new_env.append({"name": contract.ROOT_ENV, "value": roots[0]})
        if socket_mounts and contract.SOCKET_ENV not in defined:
            new_env.append({"name": contract.SOCKET_ENV, "value": SOCKET_FILE})
        patch.append(f"/spec/containers/{index}/env", env, new_env)
    return warnings


def mutate_pod(
    *,
    pod: Pod,
    namespace: str,
    request_uid: str,
    bundles: Sequence[LogicBundle],
    admitted_ms: int,
    settings: InjectionSettings,
) -> Mutation:
    """The JSONPatch that injects the agent into ``pod`` for every bundle that selects it.

    ``namespace`` and ``request_uid`` come from the admission request (a pod
    being created may carry neither its namespace nor its name);
    ``bundles`` are the namespace's ``LogicBundle`` objects; ``admitted_ms``
    is the admission instant in milliseconds since the epoch, recorded as
    ``logicbundle.io/admitted-at`` unless the pod already carries one.  A pod
    that already has the agent, or already carries the injection record, gets
    an empty patch, so a reinvocation changes nothing.
    """
    if has_agent(pod) or injection_record(pod) is not None:
        return Mutation()
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    patch = _Patch(pod)
    selected = sorted(
        (bundle for bundle in bundles if selects(bundle, pod)), key=lambda b: b.metadata.name
    )
    if not selected:
        patch.annotate(
            names.ANNOTATION_INJECTED,
            _record(settings=settings, bundles=(), skipped=SKIPPED_NOTHING_SELECTS),
        )
        warning = (
            f"logicbundle: the pod opts in ({names.LABEL_INJECT}) but no LogicBundle in namespace "
            f"{namespace} selects it; no reload agent was injected"
        )
        return Mutation(
            patch=tuple(patch.ops), skipped=SKIPPED_NOTHING_SELECTS, warnings=(warning,)
        )
    taken = {volume.get("name") for volume in spec.get("volumes") or ()}
    if clash := sorted(taken & set(RESERVED_VOLUMES)):
        patch.annotate(
            names.ANNOTATION_INJECTED,
            _record(settings=settings, bundles=(), skipped=SKIPPED_RESERVED_NAME),
        )
        warning = (
            f"logicbundle: the pod already has volume(s) {', '.join(clash)}, whose names the "
            "injection reserves; no reload agent was injected"
        )
        return Mutation(patch=tuple(patch.ops), skipped=SKIPPED_RESERVED_NAME, warnings=(warning,))

    annotations = meta.get("annotations") or {}
    bundle_names = [bundle.metadata.name for bundle in selected]
    # Both facts are written once and never changed: the rule hashes the key and seals
    # percent stages by the instant, so rewriting either could move the pod.
    if names.ANNOTATION_COHORT_KEY not in annotations:
        key = cohort_key(
            namespace=namespace, name=meta.get("name") or None, request_uid=request_uid
        )
        patch.annotate(names.ANNOTATION_COHORT_KEY, key)
    if contract.ANNOTATION_ADMITTED_AT not in annotations:
        patch.annotate(contract.ANNOTATION_ADMITTED_AT, str(admitted_ms))
    if settings.distributor_ca_pem:
        patch.annotate(names.ANNOTATION_DISTRIBUTOR_CA, settings.distributor_ca_pem)
    patch.annotate(
        names.ANNOTATION_INJECTED, _record(settings=settings, bundles=bundle_names, skipped=None)
    )
    patch.append("/spec/volumes", spec.get("volumes"), _volumes(settings, bundle_names))
    patch.append(
        "/spec/initContainers", spec.get("initContainers"), [_agent_container(selected, settings)]
    )
    warnings = _app_container_ops(patch, spec=spec, bundles=selected)
    gates = spec.get("readinessGates")
    if not any(g.get("conditionType") == names.POD_CONDITION_READY for g in gates or ()):
        patch.append("/spec/readinessGates", gates, [{"conditionType": names.POD_CONDITION_READY}])
    if any(bundle.spec.target.notify.mode == "signal" for bundle in selected):
        # The agent must see the application's processes to signal them.
        patch.ops.append({"op": "add", "path": "/spec/shareProcessNamespace", "value": True})
    return Mutation(patch=tuple(patch.ops), bundles=tuple(bundle_names), warnings=tuple(warnings))
