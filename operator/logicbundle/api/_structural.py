"""Turn pydantic's JSON Schema into a Kubernetes *structural* schema.

The API server accepts only a subset of OpenAPI v3 in a CRD: every node has
a ``type``; no ``$ref``; unions only in restricted forms; no
``additionalProperties: false``; ``exclusiveMinimum`` is a boolean beside
``minimum``; no ``title``, ``const``, ``uniqueItems`` or ``examples``.
pydantic emits JSON Schema 2020-12, so this module rewrites it:

* ``$ref`` is inlined; the referring field's own keywords (its description)
  win over the referred model's.
* ``X | None`` (``anyOf: [X, {type: null}]``) becomes plain ``X``.  It is
  *not* marked ``nullable``: for non-nullable fields the API server prunes an
  explicit ``null`` before validation, so ``null`` and an absent field mean
  the same thing, exactly as ``None`` does in the models.  With ``nullable:
  true`` a stored ``null`` would make CEL's ``has()`` true and break the
  one-of rules.
* defaults: with ``defaults=True`` (the CRD's ``spec``) a field's scalar
  default (a string, number or boolean) becomes the schema's ``default``, so
  the API server writes it into the object when the field is absent and
  ``kubectl explain`` and server-side apply show it.  The operator applies the
  same defaults when it parses an object (the models are the source of both).
  Kept out: ``None`` (absent means absent), objects and lists (a server-side
  default there would fill in whole sub-objects the user never asked for),
  deprecated fields (the server would write a deprecated field into every
  object) and everything under ``status`` (the operator writes it whole).
  The CEL rules treat an absent field as its default (``has(self.mode) &&
  self.mode == 'http'``), so a rule judges the object the same either way.
  Without the flag defaults are dropped and the descriptions state them.

Anything else it does not know is an error, so a new pydantic construct can
never slip an invalid schema into the CRD unnoticed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel

_DROPPED: Final = frozenset({"title", "examples", "$schema"})
_SCALARS: Final = (str, bool, int, float)
_KEPT: Final = frozenset(
    {
        "type",
        "description",
        "format",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
    }
)
_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "additionalProperties",
    "properties",
    "required",
)
_REF_PREFIX: Final = "#/$defs/"


class SchemaError(ValueError):
    """The models produced a schema the API server would refuse; fix the models."""


def structural_schema(model: type[BaseModel], *, defaults: bool = False) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model``, as the CRD needs it.

    ``defaults``: keep the fields' scalar defaults as schema ``default`` values
    (the API server then applies them; see the module docstring for which).
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Any] = raw.pop("$defs", {})
    context = _Context(definitions=definitions, defaults=defaults)
    schema = _convert(raw, context=context, path=model.__name__, stack=())
    return copy.deepcopy(schema)  # no node shared between inlined copies


@dataclass(frozen=True)
class _Context:
    definitions: dict[str, Any]
    defaults: bool


def _convert(
    node: dict[str, Any], *, context: _Context, path: str, stack: tuple[str, ...]
) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").removeprefix(_REF_PREFIX)
        if name in stack:
            raise SchemaError(f"{path}: recursive model {name} cannot be inlined")
        base = _convert(context.definitions[name], context=context, path=path, stack=(*stack, name))
        return _merge(base, _convert_keywords(node, context, path, stack))
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v != {"type": "null"}]
        if len(variants) != 1:
            raise SchemaError(f"{path}: unions other than Optional are not structural")
        base = _convert(variants[0], context=context, path=path, stack=stack)
        return _merge(base, _convert_keywords(node, context, path, stack))
    for forbidden in ("allOf", "oneOf", "not", "uniqueItems", "prefixItems"):
        if forbidden in node:
            raise SchemaError(f"{path}: {forbidden!r} is not allowed in a structural schema")
    result = _convert_keywords(node, context, path, stack)
    if "type" not in result and not (
        result.get("x-kubernetes-int-or-string")
        or result.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"{path}: every node of a structural schema needs a type")
    return _ordered(result)


def _convert_keywords(
    node: dict[str, Any], context: _Context, path: str, stack: tuple[str, ...]
) -> dict[str, Any]:
    def sub(schema: dict[str, Any], suffix: str) -> dict[str, Any]:
        return _convert(schema, context=context, path=f"{path}{suffix}", stack=stack)

    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue  # pruning of unknown fields does the job of `additionalProperties: false`
        if key == "default":
            if context.defaults and _server_side_default(value, node):
                result[key] = value
            continue
        if key in _KEPT:
            result[key] = _clean_description(value) if key == "description" else value
        elif key in _REWRITES:
            result.update(_REWRITES[key](value, sub))
        else:
            raise SchemaError(f"{path}: unexpected JSON Schema keyword {key!r}")
    return result


_Sub = Callable[[dict[str, Any], str], dict[str, Any]]


def _map_values(value: dict[str, Any], sub: _Sub) -> dict[str, Any]:
    # dict[ConstrainedKey, V] gives `patternProperties`: CRDs cannot constrain
    # map keys, so keep the value schema and leave the keys to the models.
    (value_schema,) = value.values()
    return {"additionalProperties": sub(value_schema, "{}")}


_REWRITES: Final[dict[str, Callable[[Any, _Sub], dict[str, Any]]]] = {
    "const": lambda value, _: {"enum": [value]},
    # OpenAPI v3.0 (what Kubernetes speaks) has boolean exclusive bounds.
    "exclusiveMinimum": lambda value, _: {"minimum": value, "exclusiveMinimum": True},
    "exclusiveMaximum": lambda value, _: {"maximum": value, "exclusiveMaximum": True},
    "properties": lambda value, sub: {
        "properties": {name: sub(schema, f".{name}") for name, schema in value.items()}
    },
    "items": lambda value, sub: {"items": sub(value, "[]")},
    "additionalProperties": lambda value, sub: {"additionalProperties": sub(value, "{}")},
    "patternProperties": _map_values,
    "propertyNames": lambda _value, _sub: {},  # map keys: checked by the models only
}


def _server_side_default(value: Any, node: dict[str, Any]) -> bool:
    """Whether the API server may apply ``value`` as the default of ``node``'s field."""
    if value is None or not isinstance(value, _SCALARS):
        return False
    return not str(node.get("description", "")).lstrip().startswith("Deprecated")


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return _ordered(merged)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    head = {key: node[key] for key in _ORDER if key in node}
    tail = {key: node[key] for key in sorted(node) if key not in head}
    return head | tail


def _clean_description(text: str) -> str:
    text = text.replace("``", "`")
    text = re.sub(r":(?:class|func|data|mod|meth):`~?([^`]+)`", r"`\1`", text)
    return text.strip()
