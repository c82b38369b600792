"""A small validator for the structural OpenAPI subset the generated CRD uses.

It stands in for the API server's schema validation (not its CEL rules) so
the tests can check, offline, that the CRD refuses what the models refuse.
The integrating developer's e2e suite does the real server-side dry run.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """What the API server's schema validation would say about ``value`` (empty: valid)."""
    kind = schema.get("type")
    expected = _TYPES.get(kind or "", (object,))
    if isinstance(value, bool) and kind in ("integer", "number"):
        return [f"{path}: expected {kind}"]
    if not isinstance(value, expected):
        return [f"{path}: expected {kind}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, str):
        errors += _string_errors(value, schema, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        errors += _number_errors(value, schema, path)
    if isinstance(value, list):
        errors += _array_errors(value, schema, path)
    if isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    return errors


def _string_errors(value: str, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{path}: does not match {schema['pattern']}")
    if len(value) < schema.get("minLength", 0):
        errors.append(f"{path}: too short")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: too long")
    return errors


def _number_errors(value: float, schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            errors.append(f"{path}: below minimum")
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            errors.append(f"{path}: above maximum")
    return errors


def _array_errors(value: list[Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    if len(value) < schema.get("minItems", 0):
        errors.append(f"{path}: too few items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{path}: too many items")
    if schema.get("x-kubernetes-list-type") == "map":
        keys = [
            tuple(item.get(key) for key in schema["x-kubernetes-list-map-keys"])
            for item in value
            if isinstance(item, dict)
        ]
        if len(set(keys)) != len(keys):
            errors.append(f"{path}: duplicate map keys")
    for index, item in enumerate(value):
        errors += schema_errors(item, schema["items"], f"{path}[{index}]")
    return errors


def _object_errors(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    errors = []
    present = {key: item for key, item in value.items() if item is not None}  # nulls are pruned
    for key in schema.get("required", []):
        if key not in present:
            errors.append(f"{path}.{key}: required")
    properties = schema.get("properties")
    for key, item in present.items():
        if properties is not None:
            if key not in properties:
                errors.append(f"{path}.{key}: unknown field")  # strict field validation
            else:
                errors += schema_errors(item, properties[key], f"{path}.{key}")
        elif "additionalProperties" in schema:
            errors += schema_errors(item, schema["additionalProperties"], f"{path}.{key}")
    return errors
