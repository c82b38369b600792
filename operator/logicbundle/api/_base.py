"""The base model of the API and the CEL rules carried into the CRD.

Every model of the API is written once, in Python, and the CRD is generated
from it.  Validation that a JSON schema keyword cannot express (one field
*or* another, a field required only in one mode) is written as a
:class:`CelRule`: the rule's CEL expression goes into the CRD as
``x-kubernetes-validations`` for the API server, and the model checks the
same condition in Python with the *same message*, so a user sees one wording
whether ``kubectl apply`` or ``logicbundle`` refused the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


@dataclass(frozen=True, slots=True)
class CelRule:
    """A Kubernetes validation rule and the message shown when it fails."""

    rule: str
    message: str

    def as_schema(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """The ``json_schema_extra`` that attaches ``rules`` to a model's schema."""
    return {"x-kubernetes-validations": [rule.as_schema() for rule in rules]}


class SpecModel(BaseModel):
    """A frozen value written by users: camelCase in YAML, unknown fields refused.

    Refusing unknown fields turns a typo (``intreval: 5m``) into an error
    instead of a silently ignored setting; the API server does the same with
    ``kubectl apply --validate=strict``, the default.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
        regex_engine="rust-regex",
    )


class StatusModel(BaseModel):
    """A frozen value written by the operator: camelCase in YAML, unknown fields ignored.

    Status is written by machines, possibly by a newer operator during an
    upgrade or a rollback of the operator itself; ignoring fields this
    version does not know keeps an older operator able to read it.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="ignore",
        regex_engine="rust-regex",
    )
