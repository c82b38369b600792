"""The operators' sub-commands: promote, abort, retry, rollback, status and history.

A manual action is a request, not desired state: the command writes the
``logicbundle.io/requested-action`` annotation (``<action>[=<argument>]@<token>``,
a fresh token each time, like Flux's ``requestedAt``) with a merge patch, so
GitOps tools see no drift in ``spec``; the operator acts once per distinct
value and copies it to ``status.lastHandledAction``.  ``--wait`` watches the
object until that happens and prints the outcome.

The same sub-commands serve ``logicbundle`` and the kubectl plugin
``kubectl-logicbundle`` (:mod:`logicbundle.cli._plugin`).  The Kubernetes
client is imported inside the commands only, and everything that talks to the
API server goes through the small :class:`Cluster` protocol, so the logic
(checks, patch body, wait loop, rendering) is tested against a fake.

Exit codes: 0 done, 1 failed (not found, refused, timed out, stalled), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from logicbundle.cli._errors import EXIT_FAILURE, EXIT_OK, FlagError, verbosity_options
from logicbundle.errors import LogicBundleError

REQUEST_TIMEOUT: Final = (10, 60)
"""Seconds to connect to the API server, and to wait for one answer (kubectl dials for 30)."""

# Spelled here as well as in logicbundle.api.names, so that building the
# parser does not import pydantic; a test checks that the two agree.
_ANNOTATION: Final = "logicbundle.io/requested-action"
_GROUP: Final = "logicbundle.io"
_VERSION: Final = "v1alpha1"
_PLURAL: Final = "logicbundles"

DEFAULT_WAIT_TIMEOUT: Final = 300.0
"""Seconds ``--wait`` waits for the operator by default."""

WATCH_REQUEST_SECONDS: Final = 300
"""Longest single watch request; the loop opens a new one until its deadline."""

_SHORT_DIGEST_RE: Final = re.compile(r"^(sha256:)?[0-9a-f]{7,64}$")
_DURATION_RE: Final = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

Obj = Mapping[str, Any]


# --- errors -----------------------------------------------------------------------


class NotFoundError(LogicBundleError):
    """The LogicBundle does not exist (or was deleted while we waited)."""

    reason = "NotFound"


class RefusedError(LogicBundleError):
    """The request cannot apply to the LogicBundle as it is now."""

    reason = "Refused"


class TimedOutError(LogicBundleError):
    """The deadline passed before the operator did what we waited for."""

    reason = "TimedOut"


class ConnectionConfigError(LogicBundleError):
    """No usable kubeconfig and not running in a cluster."""

    reason = "InvalidKubeconfig"


class ResourceExpiredError(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again, then watch again."""


# --- the API server, as little of it as the commands need ---------------------------


class Cluster(Protocol):
    """The LogicBundle API of one namespace; the real one wraps the Kubernetes client."""

    namespace: str

    def get(self, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        ...

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386) and return the object."""
        ...

    def watch(
        self, name: str, *, resource_version: str | None, timeout: float
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event type, object)`` for changes after ``resource_version``, for up to ``timeout``.

        Ends (without error) when the timeout passes; raises
        :class:`ResourceExpiredError` when ``resource_version`` is too old.
        """
        ...


class KubeCluster:
    """:class:`Cluster` over the Kubernetes client (imported only when one is made)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.api_client = api_client
        self._api = client.CustomObjectsApi(api_client)

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._api.get_namespaced_custom_object(
                _GROUP, _VERSION, self.namespace, _PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(exc) from None
        return _as_dict(obj)

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            # The client sends a dict body as application/merge-patch+json.
            obj = self._api.patch_namespaced_custom_object(
                _GROUP,
                _VERSION,
                self.namespace,
                _PLURAL,
                name,
                dict(body),
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise _not_found(name, self.namespace) from None
            raise _api_error(exc) from None
        return _as_dict(obj)

    def watch(
        self, name: str, *, resource_version: str | None, timeout: float
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        from kubernetes import watch as kube_watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import ProtocolError, ReadTimeoutError

        seconds = max(1, min(int(timeout), WATCH_REQUEST_SECONDS))
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "timeout_seconds": seconds,
            # The server ends the watch after timeout_seconds; the read timeout
            # only ends a connection that died silently.
            "_request_timeout": (10, seconds + 10),
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        watch: Any = kube_watch  # partly typed: its calls are untyped
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self._api.list_namespaced_custom_object,
                _GROUP,
                _VERSION,
                self.namespace,
                _PLURAL,
                **kwargs,
            ):
                yield str(event["type"]), event["raw_object"]
        except ApiException as exc:
            if exc.status == 410:
                raise ResourceExpiredError(str(exc.reason)) from None
            raise _api_error(exc) from None
        except (ReadTimeoutError, ProtocolError):
            return
        finally:
            stream.stop()


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise LogicBundleError(f"the API server returned {type(obj).__name__}, not an object")
    return obj


def _api_error(exc: Any) -> LogicBundleError:
    status = getattr(exc, "status", None)
    hint = None
    if status in (401, 403):
        hint = "Check your credentials and RBAC: you need get, watch and patch on logicbundles."
    return LogicBundleError(
        f"the API server answered {status} {getattr(exc, 'reason', '')}".strip(), hint=hint
    )


def _not_found(name: str, namespace: str) -> NotFoundError:
    return NotFoundError(
        f"logicbundle {namespace}/{name} not found",
        hint="Check the name and the namespace (-n); `kubectl get lb -A` lists them all.",
    )


_IN_CLUSTER_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def connect(args: argparse.Namespace) -> KubeCluster:
    """A :class:`KubeCluster` from ``--kubeconfig`` / ``$KUBECONFIG`` / in-cluster, and ``-n``.

    The namespace is ``-n`` when given, else the kubeconfig context's, else the
    pod's own when in a cluster, else ``default`` -- what kubectl does.
    """
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config  # partly typed: its loaders are untyped
    kubeconfig = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG")
    context = getattr(args, "context", None)
    namespace = getattr(args, "namespace", None)
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        if not namespace:
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), None) or current
            namespace = ((chosen or {}).get("context") or {}).get("namespace")
    except config.ConfigException as exc:
        if kubeconfig or context:
            raise ConnectionConfigError(
                f"cannot use the kubeconfig: {exc}",
                hint="Check --kubeconfig, $KUBECONFIG and --context.",
            ) from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise ConnectionConfigError(
                "no kubeconfig found and not running in a cluster",
                hint="Pass --kubeconfig FILE or set $KUBECONFIG.",
            ) from None
        if not namespace and _IN_CLUSTER_NAMESPACE.exists():
            namespace = _IN_CLUSTER_NAMESPACE.read_text().strip()
    return KubeCluster(client.ApiClient(configuration), namespace or "default")


# --- reading an object --------------------------------------------------------------


def _status(obj: Obj) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, Mapping) else {}


def _spec(obj: Obj) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _condition(obj: Obj, type_: str) -> Mapping[str, Any] | None:
    for condition in _status(obj).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def _is_true(obj: Obj, type_: str) -> bool:
    condition = _condition(obj, type_)
    return condition is not None and condition.get("status") == "True"


def observed(obj: Obj) -> bool:
    """Whether the operator's status describes the object's current generation."""
    generation = _meta(obj).get("generation")
    seen = _status(obj).get("observedGeneration")
    return generation is None or (isinstance(seen, int) and seen >= generation)


def settled(obj: Obj) -> bool:
    """Ready=True or Stalled=True for the current generation: nothing more will happen alone."""
    return observed(obj) and (_is_true(obj, "Ready") or _is_true(obj, "Stalled"))


def short(digest: str | None) -> str:
    """``sha256:<hex>`` shortened to 12 hex characters, as ``kubectl get lb`` shows it."""
    return digest.removeprefix("sha256:")[:12] if digest else "-"


# --- requests -----------------------------------------------------------------------


def new_token(now: datetime | None = None) -> str:
    """A fresh token: the UTC time to the microsecond (``[A-Za-z0-9:._+-]``, 27 characters)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def request_value(action: str, *, token: str, argument: str | None = None) -> str:
    """The annotation value, checked by the same parser the operator uses."""
    from logicbundle.api import format_action

    return format_action(action, token=token, argument=argument)  # type: ignore[arg-type]


def request_patch(value: str) -> dict[str, Any]:
    """The merge patch that sets the requested-action annotation to ``value``."""
    return {"metadata": {"annotations": {_ANNOTATION: value}}}


def pending_request(obj: Obj) -> str | None:
    """A request the operator has not handled yet, or None."""
    value = (_meta(obj).get("annotations") or {}).get(_ANNOTATION)
    if value and value != _status(obj).get("lastHandledAction"):
        return str(value)
    return None


_STABLE_OUTCOMES: Final = ("Installed", "Promoted", "Restored")
"""History outcomes after which the digest was stable (no outcome: an entry from before them)."""


def history_digests(obj: Obj) -> list[str]:
    """The digests of ``status.history`` that were stable once, newest first, each once."""
    digests: list[str] = []
    for entry in _status(obj).get("history") or ():
        if not isinstance(entry, Mapping) or not entry.get("digest"):
            continue
        if entry.get("outcome", "Promoted") in _STABLE_OUTCOMES and entry["digest"] not in digests:
            digests.append(str(entry["digest"]))
    return digests


def resolve_rollback_target(obj: Obj, wanted: str) -> str:
    """The full history digest ``wanted`` names (a full digest or a unique hex prefix)."""
    name = _meta(obj).get("name", "?")
    known = history_digests(obj)
    hexes = wanted.removeprefix("sha256:")
    matches = [digest for digest in known if digest.removeprefix("sha256:").startswith(hexes)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(short(digest) for digest in known) or "none yet"
    if not matches:
        raise RefusedError(
            f"{wanted} is not in the status.history of {name}: only a digest that was stable "
            "once (verified when it was rolled out) can be rolled back to; "
            f"history: {listing}",
            hint=f"Pick one from `logicbundle status {name}`, or change spec.source.ref "
            "to roll out another digest.",
        )
    raise RefusedError(
        f"{wanted} matches {len(matches)} digests of the history ({listing})",
        hint="Give more hex characters, or the full sha256: digest.",
    )


def check_request(obj: Obj, action: str) -> None:
    """Refuse, saying why, an action the operator would ignore given ``obj``'s status.

    The same rules as the state machine: promote and abort need a rollout in
    flight (promote one that is not frozen), retry a candidate, and nothing is
    acted on while suspended.
    """
    name = _meta(obj).get("name", "?")
    spec, status = _spec(obj), _status(obj)
    if spec.get("suspend") is True:
        raise RefusedError(
            f"{name} is suspended (spec.suspend is true): the operator ignores actions until "
            "it is false again",
            hint="Resume it first, or pass --force to queue the request.",
        )
    candidate, stage = status.get("candidateDigest"), status.get("stage")
    if action in ("promote", "abort") and not (candidate and stage):
        raise RefusedError(
            f"{action} needs a rollout in flight, and {name} has none "
            f"(phase {status.get('phase') or 'unknown'})",
            hint="Pass --force to send it anyway (the operator will ignore it and say so "
            "in an event).",
        )
    stalled = _condition(obj, "Stalled")
    if (
        action == "promote"
        and stalled is not None
        and stalled.get("status") == "True"
        and stalled.get("reason") == "Frozen"
    ):
        raise RefusedError(
            f"{name} is frozen after a failure (onFailure: freeze); the operator never promotes "
            "over a failure",
            hint="retry measures the frozen stage again; abort rolls every pod back. Pass "
            "--force to send it anyway (the operator will ignore it and say so in an event).",
        )
    if action == "retry" and not candidate:
        raise RefusedError(
            f"retry needs a candidate digest (rolled back, aborted or in flight), and {name} "
            "has none",
            hint="Change spec.source.ref to roll out a new digest.",
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to a request, for the exit code and the message."""

    ok: bool
    text: str


def outcome(obj: Obj, *, action: str, argument: str | None) -> Outcome:
    """The resulting conditions, once ``status.lastHandledAction`` equals the request."""
    lines = []
    for type_ in ("Ready", "Reconciling", "Stalled"):
        condition = _condition(obj, type_)
        if condition is not None:
            lines.append(
                f"  {type_:<12} {condition.get('status', '?'):<7} {condition.get('reason', '')}"
                + (f": {condition['message']}" if condition.get("message") else "")
            )
    status = _status(obj)
    ok = True
    if action == "rollback" and status.get("stableDigest") != argument:
        ok = False
        lines.insert(
            0,
            f"  the operator refused the rollback: stable is {short(status.get('stableDigest'))} "
            "(see `kubectl describe lb` for the ActionIgnored event)",
        )
    return Outcome(ok=ok, text="\n".join(lines))


# --- waiting --------------------------------------------------------------------------


def wait_for(
    cluster: Cluster,
    name: str,
    done: Callable[[Obj], bool],
    *,
    timeout: float | None,
    on_change: Callable[[Obj], None] | None = None,
    first: Obj | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Watch ``name`` until ``done(obj)``; the object that satisfied it.

    No polling: one GET (unless ``first`` is given), then watches from its
    resourceVersion, each bounded by what is left of ``timeout`` (None: no
    deadline).  ``on_change`` sees every new version.  Raises
    :class:`NotFoundError` when the object is (or gets) deleted and
    :class:`TimedOutError` when the deadline passes.
    """
    deadline = None if timeout is None else clock() + timeout
    obj = dict(first) if first is not None else cluster.get(name)
    if obj is None:
        raise _not_found(name, cluster.namespace)
    seen = _Seen(on_change)
    seen.offer(obj)
    while not done(seen.obj):
        remaining = WATCH_REQUEST_SECONDS if deadline is None else deadline - clock()
        if remaining <= 0:
            raise TimedOutError(f"gave up waiting for {cluster.namespace}/{name} after {timeout}s")
        version = _meta(seen.obj).get("resourceVersion")
        try:
            for type_, body in cluster.watch(name, resource_version=version, timeout=remaining):
                if type_ == "DELETED":
                    raise NotFoundError(f"logicbundle {cluster.namespace}/{name} was deleted")
                if type_ in ("ADDED", "MODIFIED"):
                    seen.offer(body)
                if done(seen.obj) or (deadline is not None and clock() >= deadline):
                    break
        except ResourceExpiredError:
            fresh = cluster.get(name)
            if fresh is None:
                raise _not_found(name, cluster.namespace) from None
            seen.offer(fresh)
    return dict(seen.obj)


class _Seen:
    """The newest version of the object seen, and who is told of each new one."""

    def __init__(self, on_change: Callable[[Obj], None] | None) -> None:
        self.obj: Obj = {}
        self._on_change = on_change

    def offer(self, obj: Obj) -> None:
        version = _meta(obj).get("resourceVersion")
        if self.obj and version is not None and version == _meta(self.obj).get("resourceVersion"):
            return
        self.obj = obj
        if self._on_change is not None:
            self._on_change(obj)


# --- rendering --------------------------------------------------------------------------


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _where(obj: Obj) -> list[str]:
    meta, spec, status = _meta(obj), _spec(obj), _status(obj)
    phase = status.get("phase") or "Unknown"
    if spec.get("suspend") is True:
        phase += " (spec.suspend is true)"
    lines = [f"  Phase:      {phase}"]
    if not observed(obj):
        lines.append(
            f"  Generation: {meta.get('generation')}, the operator has seen "
            f"{status.get('observedGeneration')} (catching up)"
        )
    stage = status.get("stage")
    if stage:
        stages = (spec.get("rollout") or {}).get("stages")
        total = len(stages) if isinstance(stages, list) and stages else 3  # the default stages
        index = status.get("stageIndex")
        where = f" ({index + 1}/{total})" if isinstance(index, int) else ""
        started = status.get("stageStartedAt")
        lines.append(f"  Stage:      {stage}{where}" + (f", started {started}" if started else ""))
    candidate = short(status.get("candidateDigest"))
    if status.get("candidateDigest") and not stage:
        candidate += " (held: every pod on stable until retry or a new digest)"
    lines.append(f"  Stable:     {short(status.get('stableDigest'))}")
    lines.append(f"  Candidate:  {candidate}")
    return lines


def _pods(status: Mapping[str, Any]) -> list[str]:
    pods = status.get("pods") or {}
    if not pods:
        return []
    lines = [
        "  Pods:       "
        f"{pods.get('active', 0)}/{pods.get('total', 0)} active, "
        f"{pods.get('pending', 0)} pending, {pods.get('failed', 0)} failed, "
        f"{pods.get('withoutAgent', 0)} without agent"
    ]
    roles = {status.get("stableDigest"): "stable", status.get("candidateDigest"): "candidate"}
    for entry in pods.get("byDigest") or ():
        digest = entry.get("digest")
        lines.append(
            f"    {short(digest):<12}  {roles.get(digest, ''):<9}  "
            f"assigned {entry.get('assigned', 0):>4}  active {entry.get('active', 0):>4}"
        )
    return lines


def _conditions(obj: Obj) -> list[str]:
    conditions = [c for c in _status(obj).get("conditions") or () if isinstance(c, Mapping)]
    if not conditions:
        return []
    generation = _meta(obj).get("generation")
    width = max(len(str(c.get("reason", ""))) for c in conditions)
    lines = ["  Conditions:"]
    for condition in conditions:
        stale = ""
        seen = condition.get("observedGeneration")
        if isinstance(seen, int) and isinstance(generation, int) and seen < generation:
            stale = f" [generation {seen}]"
        lines.append(
            f"    {condition.get('type', '?'):<12} {condition.get('status', '?'):<7} "
            f"{condition.get('reason', ''):<{width}}  {condition.get('message') or ''}"
            f"{stale}".rstrip()
        )
    return lines


def _analysis(status: Mapping[str, Any]) -> list[str]:
    analysis = status.get("analysis") or {}
    if not (analysis.get("verdict") or analysis.get("metrics")):
        return []
    last = analysis.get("lastMeasuredAt")
    lines = [
        f"  Analysis:   stage {analysis.get('stage') or '-'}: "
        f"{analysis.get('verdict') or 'not measured yet'}, "
        f"{analysis.get('measurements', 0)} measurement(s), "
        f"{analysis.get('failures', 0)} consecutive failure(s)"
        + (f", last at {last}" if last else "")
    ]
    for metric in analysis.get("metrics") or ():
        lines.append(
            f"    {metric.get('name', '?'):<16} {metric.get('verdict', '?'):<7} "
            f"candidate {_figure(metric.get('candidate'))} ({metric.get('samples', 0)} samples)  "
            f"stable {_figure(metric.get('stable'))} ({metric.get('stableSamples', 0)} samples)"
            + (f"  {metric['message']}" if metric.get("message") else "")
        )
    return lines


HISTORY_SHOWN: Final = 5


def _history(obj: Obj) -> list[str]:
    history = [h for h in _status(obj).get("history") or () if isinstance(h, Mapping)]
    lines = ["  History (newest first):"] if history else []
    for entry in history[:HISTORY_SHOWN]:
        when = entry.get("promotedAt") or entry.get("endedAt") or entry.get("startedAt") or "-"
        lines.append(
            f"    {short(entry.get('digest')):<12}  {entry.get('outcome') or 'Promoted':<11}  "
            f"{when:<20}  {entry.get('ref') or ''}".rstrip()
        )
    if len(history) > HISTORY_SHOWN:
        lines.append(
            f"    ... {len(history) - HISTORY_SHOWN} more (`logicbundle history "
            f"{_meta(obj).get('name', 'NAME')}` shows them all)"
        )
    last = _status(obj).get("lastHandledAction")
    if last:
        lines.append(f"  Last action: {last}")
    pending = pending_request(obj)
    if pending:
        lines.append(f"  Pending action: {pending} (not handled yet)")
    return lines


def render_status(obj: Obj) -> str:
    """A human summary of a LogicBundle: where the rollout is and why."""
    meta, status = _meta(obj), _status(obj)
    lines = [f"LogicBundle {meta.get('namespace', '?')}/{meta.get('name', '?')}"]
    if not status:
        lines.append("  no status yet: is the operator running?")
        return "\n".join(lines)
    lines += _where(obj)
    lines += _pods(status)
    lines += _conditions(obj)
    lines += _analysis(status)
    lines += _history(obj)
    return "\n".join(lines)


def status_document(obj: Obj) -> dict[str, Any]:
    """The object's identity and whole status, the document of ``-o json|yaml``."""
    meta = _meta(obj)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": meta.get("generation"),
        "requestedAction": (meta.get("annotations") or {}).get(_ANNOTATION),
        "status": dict(_status(obj)),
    }


def status_json(obj: Obj) -> str:
    """:func:`status_document` as JSON, for scripts."""
    return json.dumps(status_document(obj), indent=2, sort_keys=True)


def status_yaml(obj: Obj) -> str:
    """:func:`status_document` as YAML, for scripts."""
    import yaml  # only this output pays for it

    return str(yaml.safe_dump(status_document(obj), sort_keys=True)).rstrip("\n")


# --- the commands ---------------------------------------------------------------------------


def _print(text: str) -> None:
    print(text, flush=True)


def request_action(
    cluster: Cluster,
    name: str,
    *,
    action: str,
    argument: str | None = None,
    force: bool = False,
    wait: bool = False,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT,
    now: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Check, PATCH the request, print it, and with ``wait`` wait for its outcome."""
    obj = cluster.get(name)
    if obj is None:
        raise _not_found(name, cluster.namespace)
    if action == "rollback":
        if argument is None:
            raise RefusedError("rollback needs --to DIGEST")
        argument = resolve_rollback_target(obj, argument)
    if not force:
        check_request(obj, action)
    pending = pending_request(obj)
    value = request_value(action, token=new_token(now), argument=argument)
    if pending:
        print(f"note: replacing the request {pending}, not handled yet", file=sys.stderr)
    patched = cluster.patch(name, request_patch(value))
    _print(f"requested {value} on logicbundle {cluster.namespace}/{name}")
    if not wait:
        return EXIT_OK

    def handled(current: Obj) -> bool:
        return _status(current).get("lastHandledAction") == value

    try:
        result = wait_for(cluster, name, handled, timeout=timeout, first=patched, clock=clock)
    except TimedOutError:
        raise TimedOutError(
            f"the operator has not handled {value} within {timeout:g}s",
            hint="Is the operator running? `kubectl get pods -l app.kubernetes.io/name="
            "logicbundle-operator -A`; the request stays and is handled when it is.",
        ) from None
    result_outcome = outcome(result, action=action, argument=argument)
    _print(f"handled {value}:")
    if result_outcome.text:
        _print(result_outcome.text)
    return EXIT_OK if result_outcome.ok else EXIT_FAILURE


def show_status(
    cluster: Cluster,
    name: str,
    *,
    output: str = "text",
    watch: bool = False,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print the status once, or with ``watch`` on every change until Ready or Stalled."""
    render = {"json": status_json, "yaml": status_yaml}.get(output, render_status)
    if not watch:
        obj = cluster.get(name)
        if obj is None:
            raise _not_found(name, cluster.namespace)
        _print(render(obj))
        return EXIT_OK

    shown: list[str] = []

    def show(obj: Obj) -> None:
        text = render(obj)
        if shown and text == shown[-1]:
            return
        if shown and output == "text":
            _print(f"--- {datetime.now(UTC).strftime('%H:%M:%S')}")
        shown.append(text)
        _print(text)

    final = wait_for(cluster, name, settled, timeout=timeout, on_change=show, clock=clock)
    return EXIT_OK if _is_true(final, "Ready") else EXIT_FAILURE


# --- the command line ------------------------------------------------------------------------


def parse_timeout(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m`` -> seconds; for ``--timeout``."""
    if text.isdigit():
        return float(text)
    match = _DURATION_RE.fullmatch(text)
    if not text or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 5m or 1h")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def parse_digest(text: str) -> str:
    """A ``sha256:<hex>`` digest or a hex prefix of one (at least 7 characters)."""
    value = text.strip().lower()
    if not _SHORT_DIGEST_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a digest: write sha256:<64 hex> or at least 7 hex characters "
            "of one from `logicbundle status NAME`"
        )
    return value


def connection_options(*, suppress: bool) -> argparse.ArgumentParser:
    """``-n/--namespace``, ``--kubeconfig`` and ``--context`` as a parent parser.

    ``suppress``: leave a flag out of the namespace when it is not given, so a
    sub-command's parser does not overwrite what the top-level parser (the
    kubectl plugin's, which accepts the flags before the sub-command) read.
    """
    default = argparse.SUPPRESS if suppress else None
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace of the LogicBundle (default: the kubeconfig context's, or default)",
    )
    parent.add_argument(
        "--kubeconfig",
        default=default,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)",
    )
    parent.add_argument("--context", default=default, help="kubeconfig context to use")
    return parent


def _cmd_action(args: argparse.Namespace) -> int:
    return request_action(
        connect(args),
        args.name,
        action=args.action,
        argument=getattr(args, "to", None),
        force=args.force,
        wait=args.wait,
        timeout=args.timeout,
    )


def show_history(cluster: Cluster, name: str, *, output: str = "text") -> int:
    """Print the rollouts kept in ``status.history`` (see :mod:`logicbundle.cli._history`)."""
    from logicbundle.cli._history import format_history

    obj = cluster.get(name)
    if obj is None:
        raise _not_found(name, cluster.namespace)
    _print(format_history(obj, output))
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    return show_history(connect(args), args.name, output=args.output)


def _cmd_status(args: argparse.Namespace) -> int:
    cluster = connect(args)
    if args.pods:
        return show_pods(cluster, args)
    return show_status(
        cluster, args.name, output=args.output, watch=args.watch, timeout=args.timeout
    )


def show_pods(cluster: KubeCluster, args: argparse.Namespace) -> int:
    """``status NAME --pods``: the status, then each pod's report, from the distributor."""
    import ssl

    from logicbundle.cli import _pods

    obj = cluster.get(args.name)
    if obj is None:
        raise _not_found(args.name, cluster.namespace)
    reader = None
    if args.reader:
        ns, sep, account = args.reader.partition(":")
        if not sep or not ns or not account:
            raise FlagError(f"--reader wants NAMESPACE:NAME, not {args.reader!r}")
        reader = (ns, account)
    token = _pods.reader_token(
        cluster.api_client, account=reader, namespace=args.operator_namespace
    )
    if args.distributor:
        context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
        answers = [
            _pods.ask_direct(
                url, token=token, namespace=cluster.namespace, bundle=args.name, context=context
            )
            for url in args.distributor
        ]
    else:
        answers = [
            _pods.ask_proxied(
                cluster.api_client, path, token=token, namespace=cluster.namespace, bundle=args.name
            )
            for path in _pods.replica_paths(
                cluster.api_client, namespace=args.operator_namespace, port=args.distributor_port
            )
        ]
    rows = _pods.merge(answers)
    if args.output in ("json", "yaml"):
        from logicbundle.cli._bundles import render

        _print(str(render(json.loads(_pods.as_json(rows)), args.output)))
        return EXIT_OK
    total = (_status(obj).get("pods") or {}).get("total")
    _print(render_status(obj))
    _print("  Pods (as their agents last reported):")
    _print(_pods.render(rows, assigned=total if isinstance(total, int) else None))
    return EXIT_OK


_ACTION_HELP: Final = {
    "promote": "end the current wait (pause, manual gate, analysis) and advance a stage",
    "abort": "roll every pod back to the stable digest and hold the candidate (Stalled)",
    "retry": "roll the candidate out again from the first stage",
    "rollback": "make a previous stable digest (from status.history) stable again",
}


def add_parsers(sub: Any, *, verbosity: argparse.ArgumentParser | None = None) -> None:
    """Add promote, abort, retry, rollback, status and history to the top-level sub-parsers."""
    verbosity = verbosity or verbosity_options()
    from logicbundle.cli._bundles import output_options

    connection = connection_options(suppress=True)
    output = output_options()
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--wait",
        action="store_true",
        help="wait until the operator handled the request and print the outcome",
    )
    waiting.add_argument(
        "--timeout",
        type=parse_timeout,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="DURATION",
        help="how long --wait waits, e.g. 90s, 5m (default: 5m)",
    )
    waiting.add_argument(
        "--force",
        action="store_true",
        help="send the request even when the status says the operator will ignore it",
    )

    for action in ("promote", "abort", "retry", "rollback"):
        parser = sub.add_parser(
            action,
            parents=[verbosity, connection, waiting],
            help=_ACTION_HELP[action],
            description=(
                f"{_ACTION_HELP[action][0].upper()}{_ACTION_HELP[action][1:]}. Writes the "
                f"{_ANNOTATION} annotation with a fresh token; the operator acts on it once."
            ),
        )
        parser.add_argument("name", metavar="NAME", help="the LogicBundle")
        if action == "rollback":
            parser.add_argument(
                "--to",
                required=True,
                type=parse_digest,
                metavar="DIGEST",
                help="a digest of status.history (sha256:... or a unique hex prefix)",
            )
        parser.set_defaults(func=_cmd_action, action=action)

    status = sub.add_parser(
        "status",
        parents=[verbosity, connection, output],
        help="show a LogicBundle's rollout: phase, stage, digests, pods, conditions",
        description=(
            "Show where a LogicBundle's rollout is and why. With --watch, print again on "
            "every change until Ready (exit 0) or Stalled (exit 1)."
        ),
    )
    status.add_argument("name", metavar="NAME", help="the LogicBundle")
    status.add_argument(
        "-w", "--watch", action="store_true", help="print on every change until Ready or Stalled"
    )
    status.add_argument(
        "--timeout",
        type=parse_timeout,
        default=None,
        metavar="DURATION",
        help="give up --watch after this long, e.g. 10m (default: no limit)",
    )
    pods = status.add_argument_group("--pods: each pod's report, from the distributor")
    pods.add_argument(
        "--pods",
        action="store_true",
        help="list each pod's active digest and health, asking every distributor replica",
    )
    pods.add_argument(
        "--operator-namespace",
        default="logicbundle-system",
        help="where the operator and its distributor replicas run (default %(default)s)",
    )
    pods.add_argument(
        "--reader",
        metavar="NAMESPACE:NAME",
        help="the ServiceAccount whose token the replicas accept (default: the one labelled "
        "app.kubernetes.io/component=status-reader in --operator-namespace)",
    )
    pods.add_argument(
        "--distributor",
        action="append",
        default=[],
        metavar="URL",
        help="ask this replica directly (repeatable; default: every replica, through the API "
        "server's pod proxy)",
    )
    pods.add_argument("--ca-file", help="PEM CA of the distributor, with an https --distributor")
    pods.add_argument(
        "--distributor-port",
        type=int,
        default=8443,
        help="the replicas' port, through the proxy (default %(default)s)",
    )
    status.set_defaults(func=_cmd_status)

    history = sub.add_parser(
        "history",
        parents=[verbosity, connection, output],
        help="show a LogicBundle's past rollouts: digest, signer, stages, outcome",
        description=(
            "Show the rollouts kept in status.history, newest first (at most 10): the "
            "digest, who signed it, the stages reached with their times and verdicts, and "
            "how it ended (promoted, rolled back and why, aborted, superseded)."
        ),
    )
    history.add_argument("name", metavar="NAME", help="the LogicBundle")
    history.set_defaults(func=_cmd_history)
