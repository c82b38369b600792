"""The SDK computes the same interfaceHash as the bundle package, without pydantic."""

from __future__ import annotations

from typing import Any

import pytest

from logicbundle.bundle import Interface
from logicbundle.bundle import interface_hash as reference_hash
from logicbundle.sdk import interface_hash

INTERFACES: list[dict[str, Any]] = [
    {"functions": {"price": {}}},
    {
        "functions": {
            "price": {
                "params": [{"name": "item", "type": "str"}, {"name": "qty", "type": "int"}],
                "returns": "float",
            }
        }
    },
    {
        "functions": {
            "rules.evaluate": {
                "params": [
                    {"name": "a", "kind": "positional-only"},
                    {"name": "rest", "kind": "var-positional"},
                    {"name": "flag", "kind": "keyword-only", "required": False, "type": "bool"},
                    {"name": "extra", "kind": "var-keyword", "type": "dict[str, Any]"},
                ],
                "returns": "list[str]",
            },
            "ping": {"params": [], "returns": "None"},
        }
    },
    {"jsonSchema": {"type": "object", "properties": {"prix": {"type": "number"}}, "x": None}},
    {"functions": {"f": {"returns": "Any"}}, "jsonSchema": {"title": "größe ✓", "n": [1, 2.5]}},
]


@pytest.mark.parametrize("interface", INTERFACES)
def test_the_sdk_hash_agrees_with_the_bundle_package(interface: dict[str, Any]) -> None:
    assert interface_hash(interface) == reference_hash(Interface.model_validate(interface))


def test_spelled_out_defaults_and_key_order_do_not_change_the_hash() -> None:
    terse = {"functions": {"f": {"params": [{"name": "x"}]}}}
    verbose = {
        "functions": {
            "f": {
                "returns": "Any",
                "params": [
                    {"required": True, "kind": "positional-or-keyword", "type": "Any", "name": "x"}
                ],
            }
        }
    }
    assert interface_hash(terse) == interface_hash(verbose)


@pytest.mark.parametrize(
    ("interface", "message"),
    [
        ({}, "declares nothing"),
        ({"functions": {"1bad": {}}}, "identifier"),
        ({"functions": {"f": {"params": [{"name": "x"}, {"name": "x"}]}}}, "twice"),
        ({"functions": {"f": {"params": [{"name": "x", "kind": "weird"}]}}}, "kind"),
        ({"functions": {"f": {}}, "extra": 1}, "unknown field"),
    ],
)
def test_an_invalid_interface_is_refused_with_a_message(
    interface: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        interface_hash(interface)
