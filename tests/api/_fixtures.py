"""Shared test data: a minimal valid LogicBundle and a way to change one field of it."""

from __future__ import annotations

import copy
from typing import Any, Final

DIGEST_A: Final = "sha256:" + "a" * 64
DIGEST_B: Final = "sha256:" + "b" * 64

DELETE: Final = object()
"""Pass as a value to :func:`changed` to remove the key."""


def minimal() -> dict[str, Any]:
    """A minimal valid LogicBundle, as a user writes it."""
    return {
        "apiVersion": "logicbundle.io/v1alpha1",
        "kind": "LogicBundle",
        "metadata": {"name": "rules", "namespace": "default"},
        "spec": {
            "source": {"ref": "registry.example.com/team/rules:v1"},
            "verify": {
                "keyless": {
                    "identities": [
                        {
                            "issuer": "https://token.actions.githubusercontent.com",
                            "subject": "https://github.com/org/repo/.github/workflows/r.yml@refs/heads/main",
                        }
                    ]
                }
            },
            "target": {"podSelector": {"matchLabels": {"app": "shop"}}},
        },
    }


def changed(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of ``body`` with the dotted ``path`` set to ``value`` (or removed).

    Integer components index lists: ``spec.rollout.stages.0.percent``.
    """
    result = copy.deepcopy(body)
    *parents, last = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result
