"""The example manifests in docs/examples are valid LogicBundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from logicbundle.api import LogicBundle
from logicbundle.api.crd import crd_document
from tests.api._openapi import schema_errors

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "examples").glob("*.yaml"))
ROOT = crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_there_are_examples_for_keyless_keys_and_prometheus() -> None:
    assert {path.stem for path in EXAMPLES} >= {
        "keyless-minimal",
        "key-based",
        "prometheus-analysis",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_an_example_is_accepted_by_the_models_and_the_crd_schema(path: Path) -> None:
    (body,) = yaml.safe_load_all(path.read_text())
    LogicBundle.model_validate(body)
    assert schema_errors(body, ROOT) == []


def test_the_examples_show_both_signature_kinds_and_both_providers() -> None:
    bundles = [LogicBundle.model_validate(yaml.safe_load(p.read_text())) for p in EXAMPLES]
    assert any(b.spec.verify.keyless is not None for b in bundles)
    assert any(b.spec.verify.keys is not None for b in bundles)
    assert {b.spec.rollout.analysis.provider for b in bundles} == {"builtin", "prometheus"}
