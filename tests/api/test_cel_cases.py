"""Every CEL rule of the generated CRD has a case the real API server evaluates.

The e2e suite (``e2e/suites/test_crd.py``) sends, for each case, an object
that breaks exactly one rule and asserts that rule's message.  A rule added to
the models without a case fails here, before any cluster runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from e2e.suites.test_crd import CEL_CASES
from logicbundle.api.crd import crd_document


def _rules(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, str]]:
    """(schema path, message) of every x-kubernetes-validations rule under ``schema``."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["message"]
    for name, sub in schema.get("properties", {}).items():
        yield from _rules(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _rules(schema["additionalProperties"], f"{path}{{}}")


def _crd_rules() -> list[tuple[str, str]]:
    (version,) = crd_document()["spec"]["versions"]
    return list(_rules(version["schema"]["openAPIV3Schema"]))


def test_every_cel_rule_of_the_crd_has_exactly_one_case_and_every_case_names_a_rule() -> None:
    rules = _crd_rules()
    cases = [(case.path, case.message) for case in CEL_CASES.values()]
    assert len(set(rules)) == len(rules), "two rules share a path and a message"
    missing = sorted(set(rules) - set(cases))
    assert missing == [], "rules without a case in e2e/suites/test_crd.py CEL_CASES"
    stale = sorted(set(cases) - set(rules))
    assert stale == [], "cases for rules the CRD no longer has"
    assert len(cases) == len(set(cases)), "one case per rule"


def test_the_status_cases_are_exactly_the_rules_under_status() -> None:
    """Status rules are evaluated on a status write; a create never reaches them."""
    for name, case in CEL_CASES.items():
        assert case.status == case.path.startswith(".status"), name
