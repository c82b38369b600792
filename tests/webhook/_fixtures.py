"""Builders for the webhook tests: LogicBundles, pods, and a tiny JSONPatch applier.

The applier follows RFC 6902 for the operations the webhook emits (``add``,
plus ``replace`` and ``remove`` for completeness) and is strict: a missing
parent, a bad index or an unescaped pointer fails the test instead of being
papered over, because the API server would refuse the patch too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from logicbundle.api import LogicBundle
from logicbundle.webhook import InjectionSettings, Mutation, mutate_pod

NS: Final = "shop"
UID: Final = "0b5c7e9a-0000-4000-8000-000000000001"
STABLE: Final = "sha256:" + "a" * 64
CANDIDATE: Final = "sha256:" + "b" * 64
ADMITTED: Final = 1_700_000_000_123
"""The admission instant the tests' clock gives, in milliseconds since the epoch."""
IMAGE: Final = "registry.example.com/logicbundle:0.1.0"
SETTINGS: Final = InjectionSettings(
    agent_image=IMAGE,
    operator_namespace="logicbundle-system",
    distributor_url="https://logicbundle-distributor.logicbundle-system.svc:8443",
)


class PatchError(AssertionError):
    pass


def _tokens(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(f"pointer {path!r} does not start with /")
    tokens = path[1:].split("/")
    for token in tokens:
        stripped = token.replace("~0", "").replace("~1", "")
        if "~" in stripped:
            raise PatchError(f"pointer {path!r} has a bad escape")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"missing member {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[int(token)]
        else:
            raise PatchError(f"cannot descend into {node!r}")
    return node


def apply_patch(  # noqa: PLR0912 - one branch per RFC 6902 case, kept flat on purpose
    document: Mapping[str, Any], ops: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The patched copy of ``document`` (the ops round-trip through JSON, as on the wire)."""
    doc: dict[str, Any] = copy.deepcopy(dict(document))
    for op in json.loads(json.dumps(list(ops))):
        tokens = _tokens(op["path"])
        parent = _parent(doc, tokens)
        last = tokens[-1]
        kind = op["op"]
        if isinstance(parent, dict):
            if kind == "add":
                parent[last] = op["value"]
            elif kind == "replace":
                if last not in parent:
                    raise PatchError(f"replace of missing member {last!r}")
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
            else:
                raise PatchError(f"unsupported op {kind!r}")
        elif isinstance(parent, list):
            if kind == "add":
                index = len(parent) if last == "-" else int(last)
                if not 0 <= index <= len(parent):
                    raise PatchError(f"index {last} out of range")
                parent.insert(index, op["value"])
            elif kind == "replace":
                parent[int(last)] = op["value"]
            elif kind == "remove":
                del parent[int(last)]
            else:
                raise PatchError(f"unsupported op {kind!r}")
        else:
            raise PatchError(f"parent of {op['path']!r} is not a container")
    return doc


def logic_bundle(
    name: str = "pricing",
    *,
    selector: Mapping[str, Any] | None = None,
    mount_path: str | None = None,
    stable: str | None = STABLE,
    candidate: str | None = None,
    stages: Sequence[Mapping[str, Any]] | None = None,
    stage_index: int | None = None,
    notify: Mapping[str, Any] | None = None,
) -> LogicBundle:
    default = {"matchLabels": {"app": "shop"}}
    target: dict[str, Any] = {"podSelector": default if selector is None else dict(selector)}
    if mount_path is not None:
        target["mountPath"] = mount_path
    if notify is not None:
        target["notify"] = dict(notify)
    spec: dict[str, Any] = {
        "source": {"ref": f"registry.example.com/shop/{name}:v1"},
        "verify": {"keys": [{"pem": "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----"}]},
        "target": target,
    }
    if stages is not None:
        spec["rollout"] = {"stages": list(stages)}
    status: dict[str, Any] = {}
    if stable is not None:
        status["stableDigest"] = stable
    if candidate is not None:
        status["candidateDigest"] = candidate
        index = stage_index or 0
        status["stageIndex"] = index
        if stages is not None:
            status["stage"] = stages[index]["name"]
    body: dict[str, Any] = {
        "apiVersion": "logicbundle.io/v1alpha1",
        "kind": "LogicBundle",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }
    if status:
        body["status"] = status
    return LogicBundle.model_validate(body)


def pod(
    name: str | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    containers: Sequence[Mapping[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": NS}
    if name is None:
        meta["generateName"] = "web-7d9f-"
    else:
        meta["name"] = name
    if labels is not None:
        meta["labels"] = dict(labels)
    if annotations is not None:
        meta["annotations"] = dict(annotations)
    body_spec: dict[str, Any] = {
        "containers": [dict(c) for c in containers or ({"name": "app", "image": "app:1"},)]
    }
    body_spec.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body_spec}


OPTED_IN: Final = {"app": "shop", "logicbundle.io/inject": "true"}


def mutate(
    target: Mapping[str, Any],
    bundles: Sequence[LogicBundle] = (),
    *,
    settings: InjectionSettings = SETTINGS,
    uid: str = UID,
    admitted_ms: int = ADMITTED,
) -> tuple[Mutation, dict[str, Any]]:
    """Mutate ``target`` and return the mutation with the patched pod."""
    mutation = mutate_pod(
        pod=target,
        namespace=NS,
        request_uid=uid,
        bundles=bundles,
        admitted_ms=admitted_ms,
        settings=settings,
    )
    return mutation, apply_patch(target, mutation.patch)


def agent_of(patched: Mapping[str, Any]) -> dict[str, Any]:
    (agent,) = [
        c for c in patched["spec"].get("initContainers", []) if c["name"] == "logicbundle-agent"
    ]
    return dict(agent)
