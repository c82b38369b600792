"""The canonical ``interfaceHash`` of an interface description, in the standard library only.

``logicbundle.bundle.interface_hash`` is the reference implementation, but the
bundle package needs pydantic and the SDK must import nothing outside the
standard library.  This module computes the same value from the same JSON
shape: defaults filled in, keys in camelCase, ``jsonSchema`` left out when
absent, then sorted keys, no whitespace, UTF-8, sha256.  A unit test checks
that both implementations agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, Final

_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_KINDS: Final = frozenset(
    {"positional-only", "positional-or-keyword", "keyword-only", "var-positional", "var-keyword"}
)
_ALIASES: Final = {"json_schema": "jsonSchema"}


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the bytes that are hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _param(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a parameter must be an object")
    unknown = set(raw) - {"name", "type", "kind", "required"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(f"{where}: parameter name {name!r} is not an identifier")
    type_ = raw.get("type", "Any")
    kind = raw.get("kind", "positional-or-keyword")
    required = raw.get("required", True)
    if not isinstance(type_, str) or not type_:
        raise ValueError(f"{where}.{name}: type must be a non-empty string")
    if kind not in _KINDS:
        raise ValueError(f"{where}.{name}: kind {kind!r} is not one of {sorted(_KINDS)}")
    if not isinstance(required, bool):
        raise ValueError(f"{where}.{name}: required must be true or false")
    return {"name": name, "type": type_, "kind": kind, "required": required}


def normalize_interface(interface: Mapping[str, Any]) -> dict[str, Any]:
    """The interface with every default spelled out, as it is hashed.

    Raises :class:`ValueError` when the description is not an interface.
    """
    data = {_ALIASES.get(k, k): v for k, v in interface.items()}
    unknown = set(data) - {"functions", "jsonSchema"}
    if unknown:
        raise ValueError(f"interface: unknown field(s) {sorted(unknown)}")
    functions = data.get("functions") or {}
    if not isinstance(functions, Mapping):
        raise ValueError("interface.functions must be an object of name -> signature")
    out_functions: dict[str, Any] = {}
    for name, raw_signature in functions.items():
        if not isinstance(name, str) or not _DOTTED.match(name):
            raise ValueError(f"interface.functions: {name!r} is not a (dotted) identifier")
        signature = raw_signature or {}
        if not isinstance(signature, Mapping):
            raise ValueError(f"interface.functions.{name} must be an object")
        unknown = set(signature) - {"params", "returns"}
        if unknown:
            raise ValueError(f"interface.functions.{name}: unknown field(s) {sorted(unknown)}")
        params = [_param(p, f"interface.functions.{name}") for p in signature.get("params", ())]
        if len({p["name"] for p in params}) != len(params):
            raise ValueError(f"interface.functions.{name}: a parameter is declared twice")
        returns = signature.get("returns", "Any")
        if not isinstance(returns, str) or not returns:
            raise ValueError(f"interface.functions.{name}.returns must be a non-empty string")
        out_functions[name] = {"params": params, "returns": returns}
    out: dict[str, Any] = {"functions": out_functions}
    schema = data.get("jsonSchema")
    if schema is not None:
        if not isinstance(schema, Mapping):
            raise ValueError("interface.jsonSchema must be an object")
        # Kept as written, nulls included (the reference keeps them too).
        out["jsonSchema"] = dict(schema)
    if not out_functions and schema is None:
        raise ValueError("the interface declares nothing: give `functions`, `jsonSchema`, or both")
    return out


def interface_hash(interface: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``interface`` (defaults filled in)."""
    return "sha256:" + hashlib.sha256(canonical_json(normalize_interface(interface))).hexdigest()
