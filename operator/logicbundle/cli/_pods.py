"""``logicbundle status NAME --pods``: each pod's active digest and health, from the distributor.

What a pod runs is not written on the pod (its target is a rule over the
bundle's published state), so the answer comes from where the agents report:
every distributor replica keeps the latest report of the pods that talk to
it.  The command asks each one for the bundle's pods and merges the answers
(a pod that moved between replicas: its newest report wins).

Reaching the replicas, in order of preference:

* ``--distributor URL`` (repeatable): straight to them (a port-forward, a
  local run);
* otherwise through the API server's pod proxy, to every pod of the
  operator's namespace labelled ``app.kubernetes.io/component=distributor``
  (or the acting operator replica, ``logicbundle.io/leader=true``, when
  there is none). Needs ``get`` on ``pods/proxy`` there.

The replicas answer only a token of a ServiceAccount they were told to trust
(``--status-reader-service-account``; the chart creates
``<release>-status-reader``): the command asks the TokenRequest API for a
10-minute token of that account, for the distributor's audience (needs
``create`` on its ``serviceaccounts/token``).  The token travels in the
``X-Logicbundle-Token`` header, which the API server's proxy passes on.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from logicbundle import contract
from logicbundle.errors import LogicBundleError

AUDIENCE: Final = contract.DISTRIBUTOR_AUDIENCE
TOKEN_HEADER: Final = contract.TOKEN_HEADER
REPLICA_SELECTOR: Final = "app.kubernetes.io/component=distributor"
LEADER_SELECTOR: Final = "logicbundle.io/leader=true"
READER_SELECTOR: Final = "app.kubernetes.io/component=status-reader"


class PodsUnavailableError(LogicBundleError):
    """The per-pod view could not be read (no replica, no token, a replica refused)."""

    reason = "PodsUnavailable"


@dataclass(frozen=True)
class PodRow:
    pod: str
    active: str | None
    healthy: bool
    target: str | None
    age: float
    error: str | None = None


def merge(answers: Sequence[Sequence[Mapping[str, Any]]]) -> list[PodRow]:
    """One row per pod over every replica's answer; the newest report of a pod wins."""
    rows: dict[str, PodRow] = {}
    for answer in answers:
        for entry in answer:
            pod = entry.get("pod")
            if not isinstance(pod, str) or not pod:
                continue
            age = entry.get("reportedSecondsAgo")
            age = float(age) if isinstance(age, int | float) else float("inf")
            seen = rows.get(pod)
            if seen is not None and seen.age <= age:
                continue
            error = entry.get("lastError")
            rows[pod] = PodRow(
                pod=pod,
                active=entry.get("active") if isinstance(entry.get("active"), str) else None,
                healthy=entry.get("healthy") is True,
                target=entry.get("target") if isinstance(entry.get("target"), str) else None,
                age=age,
                error=(
                    f"{error.get('reason', '')}: {error.get('message', '')}"
                    if isinstance(error, Mapping)
                    else None
                ),
            )
    return [rows[name] for name in sorted(rows)]


def render(rows: Sequence[PodRow], *, assigned: int | None = None) -> str:
    if not rows:
        return "  no pod has reported for this bundle"
    width = max(len(r.pod) for r in rows)
    lines = [f"  {'POD':<{width}}  ACTIVE        HEALTHY  TARGET        REPORTED  LAST ERROR"]
    for r in rows:
        lines.append(
            f"  {r.pod:<{width}}  {_short(r.active):<12}  {'yes' if r.healthy else 'no':<7}  "
            f"{_short(r.target):<12}  {_age(r.age):>8}  {r.error or '-'}"
        )
    if assigned is not None and assigned > len(rows):
        lines.append(f"  {assigned - len(rows)} more selected pod(s) have not reported")
    return "\n".join(lines)


def as_json(rows: Sequence[PodRow]) -> str:
    return json.dumps(
        [
            {
                "pod": r.pod,
                "active": r.active,
                "healthy": r.healthy,
                "target": r.target,
                "reportedSecondsAgo": r.age,
                "lastError": r.error,
            }
            for r in rows
        ],
        indent=2,
    )


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "-"


def _age(seconds: float) -> str:
    return "-" if seconds == float("inf") else f"{seconds:.0f}s ago"


def reader_token(api_client: Any, *, account: tuple[str, str] | None, namespace: str) -> str:
    """A 10-minute token of the status-reader ServiceAccount, for the distributor's audience."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api_client)  # its models type every field Optional
    try:
        if account is None:
            found = core.list_namespaced_service_account(
                namespace, label_selector=READER_SELECTOR
            ).items
            if not found:
                raise PodsUnavailableError(
                    f"no status-reader ServiceAccount in {namespace}",
                    hint="Pass --reader NAMESPACE:NAME, or --operator-namespace where the chart "
                    "is installed.",
                )
            account = (namespace, found[0].metadata.name)
        body = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[AUDIENCE], expiration_seconds=600)
        )
        answer = core.create_namespaced_service_account_token(account[1], account[0], body)
    except ApiException as exc:
        raise PodsUnavailableError(
            f"cannot get a token of the status reader: the API server answered {exc.status}",
            hint="You need create on serviceaccounts/token of that account (the chart README "
            "shows a RoleBinding).",
        ) from None
    return str(answer.status.token)


def replica_paths(api_client: Any, *, namespace: str, port: int) -> list[str]:
    """API server proxy paths to every distributor replica (or the leader, without replicas)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api_client)  # its models type every field Optional
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=REPLICA_SELECTOR).items
        if not pods:
            pods = core.list_namespaced_pod(namespace, label_selector=LEADER_SELECTOR).items
    except ApiException as exc:
        raise PodsUnavailableError(
            f"cannot list the distributor's pods in {namespace}: HTTP {exc.status}"
        ) from None
    ready = [p for p in pods if (p.status and p.status.pod_ip)]
    if not ready:
        raise PodsUnavailableError(
            f"no distributor replica runs in {namespace}",
            hint="Check --operator-namespace, or pass --distributor URL.",
        )
    return [
        f"/api/v1/namespaces/{namespace}/pods/https:{p.metadata.name}:{port}/proxy"
        for p in sorted(ready, key=lambda p: p.metadata.name)
    ]


def ask_direct(
    url: str, *, token: str, namespace: str, bundle: str, context: ssl.SSLContext | None
) -> list[Mapping[str, Any]]:
    """One replica's answer, straight over HTTP(S)."""
    query = urllib.parse.urlencode({"bundleNamespace": namespace, "bundle": bundle})
    request = urllib.request.Request(  # noqa: S310 - the user's own URL
        f"{url.rstrip('/')}/v1/pods?{query}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            return _pods(json.loads(response.read()), url)
    except urllib.error.HTTPError as exc:
        raise PodsUnavailableError(f"{_where(url)} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise PodsUnavailableError(
            f"{_where(url)} did not answer: {type(exc).__name__}",
            hint="Check the URL (-v shows more), or leave --distributor out to go through the "
            "API server.",
        ) from None


def ask_proxied(
    api_client: Any, path: str, *, token: str, namespace: str, bundle: str
) -> list[Mapping[str, Any]]:
    """One replica's answer through the API server's pod proxy (``path``: the pod's proxy).

    The request is built by the client (``param_serialize``: the server, the
    query string and the user's own credentials from the kubeconfig) and sent
    raw; the replica's token travels in :data:`TOKEN_HEADER`.
    """
    from kubernetes.client.exceptions import ApiException

    where = path.rsplit("/", 2)[-2]
    try:
        method, url, headers, body, post = api_client.param_serialize(
            method="GET",
            resource_path=f"{path}/v1/pods",
            query_params=[("bundleNamespace", namespace), ("bundle", bundle)],
            header_params={TOKEN_HEADER: token, "Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = api_client.call_api(
            method, url, header_params=headers, body=body, post_params=post, _request_timeout=15
        )
        raw = response.read()
    except ApiException as exc:
        raise PodsUnavailableError(
            f"the API server's proxy to {where} failed: HTTP {exc.status}"
        ) from None
    if response.status >= 400:
        raise PodsUnavailableError(
            f"the API server's proxy to {where} answered HTTP {response.status}",
            hint="You need get on pods/proxy in the operator's namespace."
            if response.status == 403
            else None,
        )
    try:
        return _pods(json.loads(raw), path)
    except ValueError:
        raise PodsUnavailableError(f"{path} answered something that is not JSON") from None


def _pods(body: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("pods"), list):
        raise PodsUnavailableError(f"{_where(where)} answered an unexpected body")
    return [entry for entry in body["pods"] if isinstance(entry, dict)]


def _where(url: str) -> str:
    """The URL without userinfo, query or fragment (never a credential in a message)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url.split("?", 1)[0]
