"""What crosses the pod boundary is defined once, in ``logicbundle.contract``.

The agent, the SDK, the webhook, the distributor and the controller import
the shared volume's names, the environment variable names and the
latency-bucket schema from the contract; none of them spells one out again.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import logicbundle
from logicbundle import contract

PACKAGE_DIR = Path(logicbundle.__file__).parent
CONTRACT_DIR = PACKAGE_DIR / "contract"

BOUNDARY_NAMES = {
    ".versions": contract.VERSIONS_DIR,
    "current": contract.CURRENT_LINK,
    "split.json": contract.SPLIT_FILE,
    ".manifest.json": contract.MANIFEST_SUFFIX,
    "sdk.sock": contract.SOCKET_FILE_NAME,
    "LOGICBUNDLE_AGENT_CONFIG": contract.AGENT_CONFIG_ENV,
    "LOGICBUNDLE_SOCKET": contract.SOCKET_ENV,
    "LOGICBUNDLE_ROOT": contract.ROOT_ENV,
}
"""Each literal, and the contract's name that holds it."""


def _code_strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string constants of a module, docstrings (bare string statements) left out."""
    prose = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            yield node


def _sources_outside_the_contract() -> Iterator[tuple[Path, ast.AST]]:
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if CONTRACT_DIR not in path.parents:
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def spelled_in(tree: ast.AST, names: set[str]) -> list[ast.Constant]:
    """The strings of ``tree`` that are, or have a path component that is, one of ``names``."""
    return [
        node
        for node in _code_strings(tree)
        if node.value in names or names & set(node.value.split("/"))
    ]


def test_the_contract_holds_the_names_the_pods_agree_on() -> None:
    for literal, defined in BOUNDARY_NAMES.items():
        assert defined == literal


def test_no_package_spells_out_a_name_that_crosses_the_pod_boundary() -> None:
    found = [
        f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}: {node.value!r}"
        for path, tree in _sources_outside_the_contract()
        for node in spelled_in(tree, set(BOUNDARY_NAMES))
    ]
    assert found == []


def test_a_name_spelled_out_in_code_is_found_and_one_in_prose_is_not() -> None:
    """The check above can fail: a literal, or a path built around one, is reported."""
    source = (
        '"""Reads split.json."""\n'
        'PATH = f"{ROOT}/split.json"\n'
        'ENV = "LOGICBUNDLE_ROOT"\n'
        'HELP = "config: $LOGICBUNDLE_AGENT_CONFIG"\n'
    )
    found = spelled_in(ast.parse(source), set(BOUNDARY_NAMES))
    assert sorted(node.value for node in found) == ["/split.json", "LOGICBUNDLE_ROOT"]


def test_only_the_contract_computes_a_latency_bucket() -> None:
    computed = [
        f"{path.relative_to(PACKAGE_DIR)}:{node.lineno}"
        for path, tree in _sources_outside_the_contract()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "bit_length"
    ]
    assert computed == []


# --- the latency-bucket schema -----------------------------------------------------------------


def test_a_call_of_no_time_is_in_bucket_zero_and_one_nanosecond_in_bucket_one() -> None:
    assert contract.bucket_of(0) == 0
    assert contract.bucket_of(1) == 1


@pytest.mark.parametrize("k", range(contract.MAX_LATENCY_BUCKETS - 1))
def test_a_power_of_two_opens_the_next_bucket(k: int) -> None:
    assert contract.bucket_of(2**k) == k + 1
    assert contract.bucket_of(2**k - 1) == k
    assert contract.bucket_upper_ns(k) == 2**k


@given(st.integers(min_value=0, max_value=2 ** (contract.MAX_LATENCY_BUCKETS - 1) - 1))
def test_every_duration_is_below_its_buckets_upper_bound_and_not_below_the_previous_one(
    elapsed: int,
) -> None:
    k = contract.bucket_of(elapsed)
    assert 0 <= k < contract.MAX_LATENCY_BUCKETS
    assert elapsed < contract.bucket_upper_ns(k)
    assert k == 0 or elapsed >= contract.bucket_upper_ns(k - 1)


def test_an_upper_bound_names_its_bucket() -> None:
    for k in range(contract.MAX_LATENCY_BUCKETS):
        assert contract.bucket_of_upper_ns(contract.bucket_upper_ns(k)) == k
    assert contract.bucket_of_upper_ns(1000) == 9  # 512 <= 1000 < 1024
    assert contract.bucket_of_upper_ns(0) == -1


def test_the_upper_bound_in_seconds_is_the_bound_in_nanoseconds() -> None:
    assert contract.bucket_upper_seconds(0) == 1e-9
    assert contract.bucket_upper_seconds(30) == 2**30 / 1e9
    assert [contract.bucket_upper_seconds(k) for k in range(64)] == [
        (2**k) / 1e9 for k in range(64)
    ]
