"""JSON read as hostile input on both sides of the pod boundary: no key may appear twice.

``json.loads`` keeps the last of two equal keys; other parsers keep the first
or refuse.  A manifest that says ``"path": "a.txt"`` and then
``"path": "../b"`` in one object would mean one thing to the signer's tools
and another to ours, so the documents of a bundle (the OCI manifest and the
bundle manifest) are parsed with :func:`loads_unique`, by the operator and by
the agent alike.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice; ``key`` is that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one JSON object")
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DuplicateKeyError(key)
        document[key] = value
    return document


def loads_unique(data: bytes | str) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` for a repeated key at any depth.

    Other errors are ``json.loads``'s own (``ValueError``, ``RecursionError``).
    """
    return json.loads(data, object_pairs_hook=_unique)
