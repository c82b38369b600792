"""The API reference shows values as values, and the CRD carries the defaults the server applies.

Issue 13 part 6: enum cells once read "`warn⏎...`" (a YAML document end per
value), and no schema node had a ``default``, so ``kubectl explain`` and a
stored object never showed one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from logicbundle.api import crd
from logicbundle.api.v1alpha1 import LogicBundleSpec

_SPEC = crd.crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def _nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, node) of every node under ``schema``, lists as ``[]``, maps as ``{}``."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _defaults(root: str) -> dict[str, Any]:
    return {path: node["default"] for path, node in _nodes(_SPEC[root], root) if "default" in node}


# --- enum values --------------------------------------------------------------------


def test_every_enum_renders_as_its_values_in_backticks() -> None:
    reference = crd.render_reference()
    enums = [node["enum"] for _, node in _nodes(_SPEC["spec"], "spec") if "enum" in node]
    assert len(enums) >= 10
    for values in enums:
        cell = "one of " + ", ".join(
            f"`{v}`" if isinstance(v, str) else f"`{str(v).lower()}`" for v in values
        )
        assert cell in reference, cell


def test_no_cell_of_the_reference_holds_a_yaml_document_end_or_a_line_break() -> None:
    reference = crd.render_reference()
    lines = reference.splitlines()
    assert [line for line in lines if line.startswith("...")] == [], "a YAML document end"
    for line in lines:
        if line.startswith("| `"):
            assert line.endswith(" |"), line  # a value broken over two lines ends a row early
    for value, text in (("warn", "`warn`"), (True, "`true`"), (20, "`20`"), (0.5, "`0.5`")):
        assert crd._value(value) == text


# --- server-side defaults -------------------------------------------------------------


SERVER_DEFAULTS = {
    "spec.suspend": False,
    "spec.source.interval": "5m",
    "spec.source.insecure": False,
    "spec.verify.audit": "warn",
    "spec.verify.keyless.trustedRootRef.key": "trusted_root.json",
    "spec.target.notify.mode": "sdk",
    "spec.target.notify.http.timeout": "5s",
    "spec.target.notify.signal.name": "SIGHUP",
    "spec.target.healthCheck.timeout": "10s",
    "spec.rollout.onFailure": "rollback",
    "spec.rollout.skipAnalysis": False,
    "spec.rollout.stages[].manualGate": False,
    "spec.rollout.analysis.provider": "builtin",
    "spec.rollout.analysis.interval": "30s",
    "spec.rollout.analysis.minSamples": 20,
    "spec.rollout.analysis.failureLimit": 0,
    "spec.rollout.analysis.stableNoData": "skip",
    "spec.rollout.analysis.prometheus.timeout": "10s",
}


def test_the_scalar_spec_defaults_are_schema_defaults_the_api_server_applies() -> None:
    defaults = _defaults("spec")
    assert {path: defaults.get(path) for path in SERVER_DEFAULTS} == SERVER_DEFAULTS


def test_no_default_where_the_server_must_not_write_one() -> None:
    defaults = _defaults("spec")
    # Deprecated: the server would write a deprecated field into every object.
    assert "spec.rollout.analysis.noData" not in defaults
    # Absent means "not set" (None), or the value depends on another field.
    for path in ("spec.target.healthCheck.mode", "spec.source.caSecretRef.key", "spec.target"):
        assert path not in defaults
    # Objects and lists: never filled in by the server.
    assert all(not isinstance(v, dict | list) for v in defaults.values())
    # The operator writes the status whole; the server only serves a placeholder for an
    # object the operator has not written yet (tests/gitops/test_new_object_status.py).
    assert _defaults("status") == {"status": crd.STATUS_DEFAULT}


def _node(path: str) -> dict[str, Any]:
    return dict(_nodes(_SPEC["spec"], "spec"))[path]


def test_every_default_validates_against_its_own_schema_node() -> None:
    """What the API server checks when it accepts the CRD (a default must validate)."""
    for path, value in _defaults("spec").items():
        node = _node(path)
        kind = {str: "string", bool: "boolean", int: "integer", float: "number"}[type(value)]
        assert node["type"] == kind or (node["type"] == "number" and kind == "integer"), path
        if "enum" in node:
            assert value in node["enum"], path
        if "pattern" in node:
            assert re.search(node["pattern"], value), path
        if "maxLength" in node:
            assert len(value) <= node["maxLength"], path
        if "minimum" in node:
            assert value >= node["minimum"], path
        if "maximum" in node:
            assert value <= node["maximum"], path


def test_every_default_is_the_models_and_the_description_states_it() -> None:
    minimal = {
        "source": {"ref": "registry.example/team/rules:v1"},
        "verify": {"keyless": {"identities": [{"issuer": "https://i.example", "subject": "a"}]}},
        "target": {"podSelector": {"matchLabels": {"app": "web"}}},
        "rollout": {"stages": [{"name": "all", "all": True}], "analysis": {}},
    }
    parsed = LogicBundleSpec.model_validate(minimal).model_dump(by_alias=True, mode="json")
    for path in ("spec.suspend", "spec.source.interval", "spec.rollout.analysis.minSamples"):
        value: Any = parsed
        for part in path.split(".")[1:]:
            value = value[part]
        assert value == SERVER_DEFAULTS[path], path
    for path, value in _defaults("spec").items():
        written = crd._value(value)
        assert f"Default: {written}" in _node(path)["description"], path
