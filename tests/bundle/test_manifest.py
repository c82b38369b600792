"""The manifest contract: parsing validates, the interface hash is canonical, errors are clear."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from logicbundle.bundle import (
    BundleManifest,
    Interface,
    InvalidManifestError,
    canonical_json,
    interface_hash,
    parse_manifest,
)
from logicbundle.errors import LogicBundleError

INTERFACE: dict[str, Any] = {
    "functions": {"decide": {"params": [{"name": "request", "type": "dict"}], "returns": "bool"}}
}


def manifest_data(**overrides: Any) -> dict[str, Any]:
    iface = Interface.model_validate(overrides.pop("interface", INTERFACE))
    data: dict[str, Any] = {
        "name": "pricing-rules",
        "version": "1.2.3",
        "entrypoint": "rules.core:decide",
        "interface": iface.model_dump(mode="json", by_alias=True, exclude_none=True),
        "interfaceHash": interface_hash(iface),
        "minAgentVersion": "0.1.0",
        "files": [
            {"path": "rules/core.py", "sha256": "a" * 64, "size": 10, "mode": 0o644},
            {"path": "rules/__init__.py", "sha256": "b" * 64, "size": 0, "mode": 0o644},
        ],
        "labels": {"team": "pricing"},
    }
    data.update(overrides)
    return data


def test_a_valid_manifest_parses_and_keeps_its_files_sorted() -> None:
    manifest = parse_manifest(manifest_data())
    assert [f.path for f in manifest.files] == ["rules/__init__.py", "rules/core.py"]
    assert manifest.total_size == 10
    assert manifest.file("rules/core.py") is not None
    assert manifest.file("missing.py") is None


def test_the_manifest_is_frozen() -> None:
    manifest = parse_manifest(manifest_data())
    with pytest.raises(ValueError, match="frozen"):
        manifest.name = "other"  # type: ignore[misc]


def test_the_canonical_json_round_trips_byte_for_byte() -> None:
    manifest = parse_manifest(manifest_data())
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    assert again.to_json() == manifest.to_json()
    assert b" " not in manifest.to_json().replace(b"pricing-rules", b"")


def test_the_interface_hash_ignores_key_order_and_spelled_out_defaults() -> None:
    terse = Interface.model_validate({"functions": {"f": {"params": [{"name": "x"}]}}})
    verbose = Interface.model_validate(
        {
            "functions": {
                "f": {
                    "returns": "Any",
                    "params": [
                        {
                            "required": True,
                            "kind": "positional-or-keyword",
                            "type": "Any",
                            "name": "x",
                        }
                    ],
                }
            }
        }
    )
    assert interface_hash(terse) == interface_hash(verbose)


def test_the_interface_hash_is_the_sha256_of_the_documented_canonical_json() -> None:
    iface = Interface.model_validate({"jsonSchema": {"type": "object", "title": "Limits"}})
    expected = canonical_json(
        {"functions": {}, "jsonSchema": {"title": "Limits", "type": "object"}}
    )
    assert expected == b'{"functions":{},"jsonSchema":{"title":"Limits","type":"object"}}'
    assert interface_hash(iface) == "sha256:" + hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        lambda i: i["functions"]["decide"].update(returns="int"),
        lambda i: i["functions"]["decide"]["params"][0].update(type="list"),
        lambda i: i["functions"]["decide"]["params"][0].update(required=False),
        lambda i: i["functions"].update(other={}),
    ],
)
def test_any_change_to_the_interface_changes_its_hash(change: Any) -> None:
    changed = copy.deepcopy(INTERFACE)
    change(changed)
    assert interface_hash(Interface.model_validate(changed)) != interface_hash(
        Interface.model_validate(INTERFACE)
    )


def test_a_manifest_whose_interface_hash_does_not_match_is_rejected() -> None:
    with pytest.raises(InvalidManifestError, match="does not match the interface"):
        parse_manifest(manifest_data(interfaceHash="sha256:" + "0" * 64))


def test_an_empty_interface_is_rejected() -> None:
    with pytest.raises(ValueError, match="declares nothing"):
        Interface.model_validate({})


def test_a_function_with_a_parameter_declared_twice_is_rejected() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Interface.model_validate({"functions": {"f": {"params": [{"name": "a"}, {"name": "a"}]}}})


def test_unknown_fields_are_rejected_rather_than_ignored() -> None:
    with pytest.raises(InvalidManifestError, match="signature: Extra inputs"):
        parse_manifest(manifest_data(signature="trust me"))


@pytest.mark.parametrize(
    "path", ["/abs.py", "../up.py", "a/../b.py", "a//b.py", "./a.py", "a/", "a\\b.py", "a\x00b"]
)
def test_a_file_path_that_is_not_canonical_is_rejected(path: str) -> None:
    data = manifest_data(entrypoint=None)
    data["files"].append({"path": path, "sha256": "c" * 64, "size": 1})
    with pytest.raises(InvalidManifestError, match=r"files\.2\.path"):
        parse_manifest(data)


def test_two_files_that_collide_on_a_case_insensitive_file_system_are_rejected() -> None:
    data = manifest_data()
    data["files"].append({"path": "rules/CORE.py", "sha256": "c" * 64, "size": 1})
    with pytest.raises(InvalidManifestError, match="same file"):
        parse_manifest(data)


def test_one_directory_spelled_two_ways_is_rejected() -> None:
    """ "Ŕ/0" and "ŕ/1" collide as directories, not as files: before, the unpacker made one
    directory and failed open(2) on the other spelling with a bare FileNotFoundError."""
    data = manifest_data()
    data["files"] += [
        {"path": "\u0154/0", "sha256": "c" * 64, "size": 1},
        {"path": "\u0155/1", "sha256": "d" * 64, "size": 1},
    ]
    with pytest.raises(InvalidManifestError, match="same directory"):
        parse_manifest(data)


def test_a_file_that_would_have_to_be_a_directory_is_rejected() -> None:
    data = manifest_data()
    data["files"].append({"path": "rules/core.py/x", "sha256": "c" * 64, "size": 1})
    with pytest.raises(InvalidManifestError, match="needs it to be a directory"):
        parse_manifest(data)


def test_an_entrypoint_whose_module_is_not_in_the_bundle_is_rejected() -> None:
    with pytest.raises(InvalidManifestError, match="not in `files`"):
        parse_manifest(manifest_data(entrypoint="rules.missing:decide"))


def test_an_entrypoint_may_name_a_package() -> None:
    assert parse_manifest(manifest_data(entrypoint="rules:decide")).entrypoint == "rules:decide"


@pytest.mark.parametrize("entrypoint", ["rules.core", "rules.core:", ":decide", "rules-x:y"])
def test_an_entrypoint_not_shaped_module_colon_object_is_rejected(entrypoint: str) -> None:
    with pytest.raises(InvalidManifestError, match="entrypoint"):
        parse_manifest(manifest_data(entrypoint=entrypoint))


def test_a_data_bundle_needs_no_entrypoint() -> None:
    manifest = parse_manifest(
        manifest_data(entrypoint=None, interface={"jsonSchema": {"type": "object"}})
    )
    assert manifest.entrypoint is None
    assert b"entrypoint" not in manifest.to_json()


@pytest.mark.parametrize("mode", [0o777, 0o4755, 0o600, "0644"])
def test_a_file_mode_other_than_0644_or_0755_is_rejected(mode: object) -> None:
    data = manifest_data()
    data["files"][0]["mode"] = mode
    with pytest.raises(InvalidManifestError, match="mode"):
        parse_manifest(data)


@pytest.mark.parametrize("size", ["10", -1, 1.5])
def test_a_file_size_must_be_a_non_negative_integer(size: object) -> None:
    data = manifest_data()
    data["files"][0]["size"] = size
    with pytest.raises(InvalidManifestError, match="size"):
        parse_manifest(data)


@pytest.mark.parametrize("name", ["Pricing", "-rules", "rules-", "a_b", "x" * 57, ""])
def test_a_name_that_is_not_a_short_dns_label_is_rejected(name: str) -> None:
    with pytest.raises(InvalidManifestError, match="name"):
        parse_manifest(manifest_data(name=name))


def test_a_manifest_without_files_is_rejected() -> None:
    with pytest.raises(InvalidManifestError, match="files"):
        parse_manifest(manifest_data(entrypoint=None, files=[]))


def test_a_manifest_that_is_not_json_is_rejected_with_an_actionable_error() -> None:
    with pytest.raises(InvalidManifestError) as caught:
        parse_manifest(b"{not json")
    assert isinstance(caught.value, LogicBundleError)
    assert caught.value.reason == "InvalidManifest"
    assert "Hint:" in str(caught.value)


def test_every_problem_of_a_manifest_is_listed_at_once() -> None:
    with pytest.raises(InvalidManifestError) as caught:
        parse_manifest(manifest_data(name="BAD", version="", minAgentVersion="one"))
    message = str(caught.value)
    assert "3 problem(s)" in message
    for field in ("name", "version", "minAgentVersion"):
        assert f"  {field}:" in message


@pytest.mark.parametrize(
    ("agent", "accepted"),
    [
        ("0.1.0", True),
        ("0.1.1", True),
        ("1.0.0", True),
        ("0.1.0+local", True),
        ("0.0.9", False),
        ("0.1.0.dev0", False),
        ("0.1.0rc1", False),
        ("garbage", False),
    ],
)
def test_the_minimum_agent_version_is_enforced_fail_closed(agent: str, accepted: bool) -> None:
    manifest: BundleManifest = parse_manifest(manifest_data(minAgentVersion="0.1.0"))
    assert manifest.accepts_agent(agent) is accepted
