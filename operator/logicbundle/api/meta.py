"""Kubernetes shapes the API reuses: label selectors and object references.

They mirror ``metav1.LabelSelector`` and the ``LocalObjectReference`` family
closely enough that users can paste what they know from other resources.
References are always *local*: a ``LogicBundle`` only ever reads Secrets and
ConfigMaps from its own namespace, so a namespace tenant cannot point the
operator at another tenant's credentials.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from logicbundle.api._base import CelRule, SpecModel, cel_rules
from logicbundle.api.formats import ObjectName

LabelKey = Annotated[
    str,
    StringConstraints(
        pattern=(
            r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
            r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        ),
        max_length=317,
    ),
]
LabelValue = Annotated[
    str,
    StringConstraints(pattern=r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", max_length=63),
]
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

SELECTOR_VALUES_RULE = CelRule(
    rule="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
    message=(
        "values must be non-empty for the operators In and NotIn, "
        "and absent for Exists and DoesNotExist"
    ),
)


class LabelSelectorRequirement(SpecModel):
    """One ``matchExpressions`` entry: a key, an operator and values."""

    model_config = ConfigDict(json_schema_extra=cel_rules(SELECTOR_VALUES_RULE))

    key: LabelKey = Field(description="The label key the requirement applies to. Required.")
    operator: SelectorOperator = Field(
        description=(
            "How the key's value is matched: `In`, `NotIn`, `Exists` or `DoesNotExist`. Required."
        )
    )
    values: tuple[LabelValue, ...] | None = Field(
        default=None,
        max_length=64,
        description=(
            "The values for `In` and `NotIn` (non-empty); must be absent for "
            "`Exists` and `DoesNotExist`. Default: none."
        ),
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if (self.operator in ("In", "NotIn")) != bool(self.values):
            raise ValueError(SELECTOR_VALUES_RULE.message)
        return self


class LabelSelector(SpecModel):
    """A Kubernetes label selector (``metav1.LabelSelector``).

    ``matchLabels`` and ``matchExpressions`` are ANDed.  An empty selector
    (`{}`) selects everything in scope.
    """

    match_labels: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        description=(
            "Labels that must all be present with exactly these values. "
            "Default: none (no constraint). ANDed with `matchExpressions`."
        ),
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] | None = Field(
        default=None,
        max_length=32,
        description=(
            "Requirements that must all hold. Default: none (no constraint). "
            "ANDed with `matchLabels`."
        ),
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a set of labels satisfies this selector (the Kubernetes semantics)."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for requirement in self.match_expressions or ():
            present = requirement.key in labels
            values = requirement.values or ()
            if requirement.operator == "In" and labels.get(requirement.key) not in values:
                return False
            if requirement.operator == "NotIn" and present and labels[requirement.key] in values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class LocalObjectReference(SpecModel):
    """A reference to an object in the ``LogicBundle``'s own namespace."""

    name: ObjectName = Field(description="Name of the object, in the same namespace. Required.")


class SecretKeyReference(SpecModel):
    """A key of a Secret in the ``LogicBundle``'s own namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace. Required.")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret's data. Default: depends on the field (stated there).",
    )


class ConfigMapKeyReference(SpecModel):
    """A key of a ConfigMap in the ``LogicBundle``'s own namespace."""

    name: ObjectName = Field(description="Name of the ConfigMap, in the same namespace. Required.")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the ConfigMap's data. Default: depends on the field (stated there).",
    )
