"""A malformed ``spec.source.ref`` is refused in words, offline and by the API server.

The CRD carried the reference's 500-character ``pattern``, and ``kubectl
apply`` of a ref without a tag answered with that expression (issue 13).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from logicbundle.api import LogicBundle
from logicbundle.api.crd import crd_document
from logicbundle.api.formats import OCI_REFERENCE_MESSAGE, OCI_REFERENCE_PATTERN
from tests.api._fixtures import changed, minimal


def _ref_schema() -> dict[str, Any]:
    (version,) = crd_document()["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    node: dict[str, Any] = spec["properties"]["source"]["properties"]["ref"]
    return node


def test_the_crd_checks_the_ref_with_a_rule_and_a_message_not_a_pattern() -> None:
    node = _ref_schema()
    assert "pattern" not in node
    (rule,) = node["x-kubernetes-validations"]
    assert rule["message"] == OCI_REFERENCE_MESSAGE
    assert len(OCI_REFERENCE_MESSAGE) < 250 and "(?:" not in OCI_REFERENCE_MESSAGE
    # The same expression as the models', in a CEL raw string (no quote inside to escape).
    assert rule["rule"] == f"self.matches(r'{OCI_REFERENCE_PATTERN}')"
    assert "'" not in OCI_REFERENCE_PATTERN


@pytest.mark.parametrize(
    "ref",
    ["registry.example.com/team/rules", "team/rules:v1", "registry.example.com/Team/rules:v1"],
)
def test_the_models_refuse_a_malformed_ref_with_the_same_words(ref: str) -> None:
    with pytest.raises(ValidationError) as exc:
        LogicBundle.model_validate(changed(minimal(), "spec.source.ref", ref))
    text = str(exc.value)
    assert OCI_REFERENCE_MESSAGE in text
    assert "(?:" not in text


def test_a_good_ref_still_passes() -> None:
    ref = "registry.example.com/team/rules:v1@sha256:" + "a" * 64
    assert re.fullmatch(OCI_REFERENCE_PATTERN, ref)
    bundle = LogicBundle.model_validate(changed(minimal(), "spec.source.ref", ref))
    assert bundle.spec.source.ref == ref
