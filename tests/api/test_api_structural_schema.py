"""The generated CRD is one the API server accepts, and it refuses what the models refuse."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from logicbundle.api import LogicBundle, names
from logicbundle.api.crd import crd_document
from tests.api._fixtures import minimal
from tests.api._openapi import schema_errors
from tests.api.test_api_spec_validation import INVALID, VALID

CRD = crd_document()
VERSION = CRD["spec"]["versions"][0]
ROOT: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]

# Checks the models make and the schema leaves to the controller (reported in
# a condition) or to the API server's own machinery that this offline
# validator does not reproduce.
MODEL_ONLY = (
    "not a valid regular expression",
    "unknown placeholder",
    "Extra inputs are not permitted",
    "logicbundle.io/v1alpha1",
)


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


NODES = dict(_nodes(ROOT))
ALL_CEL_MESSAGES = {
    rule["message"] for node in NODES.values() for rule in node.get("x-kubernetes-validations", [])
}
FIELDS = {path: node for path, node in NODES.items() if path.startswith((".spec.", ".status."))}


@pytest.mark.parametrize(
    "forbidden",
    ["$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "nullable", "title", "const",
     "uniqueItems", "examples", "patternProperties", "propertyNames"],
)  # fmt: skip
# `default` is allowed where it validates (tests/api/test_api_reference_values.py).
def test_no_node_uses_a_keyword_structural_schemas_forbid(forbidden: str) -> None:
    offenders = [path or "<root>" for path, node in NODES.items() if forbidden in node]
    assert offenders == []


def test_every_node_has_a_type() -> None:
    untyped = [
        path
        for path, node in NODES.items()
        if "type" not in node and not node.get("x-kubernetes-int-or-string")
    ]
    assert untyped == []


def test_no_object_sets_both_properties_and_additional_properties() -> None:
    both = [p for p, n in NODES.items() if "properties" in n and "additionalProperties" in n]
    assert both == []


def test_exclusive_bounds_are_booleans_as_openapi_v3_0_wants() -> None:
    for node in NODES.values():
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(key, True) is True


def test_the_root_restricts_metadata_to_a_plain_object() -> None:
    assert ROOT["properties"]["metadata"] == {"type": "object"}
    assert ROOT["required"] == ["spec"]


def test_free_form_fields_are_only_maps_of_strings() -> None:
    preserving = [p for p, n in NODES.items() if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserving == []
    maps = {p: n["additionalProperties"] for p, n in NODES.items() if "additionalProperties" in n}
    assert maps
    assert all(value["type"] == "string" for value in maps.values())


def test_map_lists_key_on_required_fields() -> None:
    for path, node in NODES.items():
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"].get("required", []), path


def test_every_field_has_a_description_stating_its_default_or_that_it_is_required() -> None:
    missing = [
        path
        for path, node in FIELDS.items()
        if not path.endswith(("[]", "{}"))
        and not re.search(r"Default|Required", node.get("description", ""))
    ]
    assert missing == []


def test_patterns_avoid_syntax_that_go_re2_lacks() -> None:
    for path, node in NODES.items():
        pattern = node.get("pattern")
        if pattern is None:
            continue
        re.compile(pattern)
        assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), path
        assert pattern.startswith("^") and pattern.endswith("$"), path


def test_every_cel_rule_names_only_fields_of_its_own_object() -> None:
    for path, node in NODES.items():
        for rule in node.get("x-kubernetes-validations", []):
            for chain in re.findall(r"self((?:\.[A-Za-z_]+)+)", rule["rule"]):
                current = node
                for part in chain.strip(".").split("."):
                    if part in ("size",) or current.get("type") != "object":
                        break
                    if path == "" and part == "metadata":
                        break
                    assert part in current.get("properties", {}), f"{path}: {rule['rule']}"
                    current = current["properties"][part]


def test_every_cel_rule_is_mirrored_by_the_models_and_covered_by_a_test() -> None:
    expected = {message for _, message in INVALID.values()}
    uncovered = {cel for cel in ALL_CEL_MESSAGES if not any(e in cel for e in expected)}
    assert uncovered == set()


def test_the_crd_names_match_the_shared_names() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "logicbundles.logicbundle.io"
    assert spec["group"] == names.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "LogicBundle"
    assert spec["names"]["plural"] == "logicbundles"
    assert spec["names"]["shortNames"] == ["lb"]
    assert "all" not in spec["names"]["categories"]
    assert VERSION["name"] == "v1alpha1"
    assert VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_the_printer_columns_point_at_status_fields_that_exist() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns)[:6] == ["Stage", "Stable", "Candidate", "Pods", "Ready", "Status"]
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    for column in columns.values():
        path = re.sub(r"\[\?.*\]", "[]", column["jsonPath"])
        if path.startswith(".status"):
            assert path in NODES, column["name"]


@pytest.mark.parametrize("body", VALID.values(), ids=VALID.keys())
def test_the_crd_schema_accepts_what_the_models_accept(body: dict[str, Any]) -> None:
    assert schema_errors(body, ROOT) == []


SCHEMA_LEVEL = {
    name: body
    for name, (body, message) in INVALID.items()
    if not any(message in cel for cel in ALL_CEL_MESSAGES)
    and not any(m in message for m in MODEL_ONLY)
}


@pytest.mark.parametrize("body", SCHEMA_LEVEL.values(), ids=SCHEMA_LEVEL.keys())
def test_the_crd_schema_refuses_what_the_models_refuse(body: dict[str, Any]) -> None:
    assert schema_errors(body, ROOT) != []


def test_a_status_the_operator_writes_fits_the_crd_schema() -> None:
    body = minimal()
    body["status"] = {
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "Progressing",
                "message": "stage canary",
                "lastTransitionTime": "2025-05-01T12:00:00Z",
                "observedGeneration": 2,
            }
        ],
        "phase": "Progressing",
        "stableDigest": "sha256:" + "a" * 64,
        "candidateDigest": "sha256:" + "b" * 64,
        "stage": "canary",
        "stageIndex": 1,
        "pods": {
            "total": 20,
            "active": 19,
            "pending": 1,
            "byDigest": [{"digest": "sha256:" + "a" * 64, "assigned": 19, "active": 19}],
        },
        "analysis": {"verdict": "NoData", "metrics": [{"name": "error-rate", "verdict": "NoData"}]},
    }
    status = LogicBundle.model_validate(body).status
    assert status is not None
    body["status"] = status.with_summary().model_dump(mode="json", exclude_none=True)
    assert body["status"]["summary"] == {
        "stable": "a" * 12,
        "candidate": "b" * 12,
        "pods": "19/20",
    }
    assert schema_errors(body, ROOT) == []
