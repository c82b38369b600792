"""A metric's PromQL and its Prometheus, from the metric itself or the template it names.

:func:`resolve` turns one metric (an inline ``query``, or a ``templateRef``
with ``templateArgs``) into a :class:`ResolvedMetric`: a function giving the
query for a digest and the endpoint to send it to.  Everything that can be
wrong with a template (missing, invalid, an argument missing, unknown or
refused by the escaping rule, no Prometheus to ask, a Secret missing) is a
:class:`MetricTemplateError` whose message names the template and says why,
never with a credential in it; the analysis step turns it into a measurement
without data (the stage never passes on it) and a ``MetricTemplateInvalid``
event.

Templates are read at every measurement (one GET per templated metric): a
fixed template takes effect at the next measurement, with no watch to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from logicbundle import rollout
from logicbundle.api import Analysis, LogicBundleMetricTemplate, Metric, Prometheus, names
from logicbundle.controller._prometheus import PrometheusEndpoint, endpoint, redact
from logicbundle.controller._source import ObjectReader
from logicbundle.errors import LogicBundleError

EVENT_TEMPLATE_INVALID = "MetricTemplateInvalid"
"""Reason of the Warning event posted when a metric's template cannot be evaluated."""


class MetricTemplateError(LogicBundleError):
    """The metric's template cannot be evaluated; the message says which and why."""

    reason = EVENT_TEMPLATE_INVALID
    retryable = True  # creating or fixing the template fixes it without a spec change


class TemplateReader(Protocol):
    """Reads metric templates (the operator's API client)."""

    def metric_template(self, *, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The template object; None when it does not exist."""


@dataclass(frozen=True, kw_only=True)
class ResolvedMetric:
    """What to ask and whom: ``render(digest)`` is the PromQL for that digest."""

    render: Callable[[str], str]
    endpoint: PrometheusEndpoint


def _describe(kind: str, namespace: str, name: str) -> str:
    if kind == names.CLUSTER_TEMPLATE_KIND:
        return f"{kind} {name}"
    return f"{kind} {namespace}/{name}"


def _endpoint(
    settings: Prometheus | None, *, what: str, namespace: str, reader: ObjectReader
) -> PrometheusEndpoint:
    if settings is None:
        raise MetricTemplateError(
            f"{what} names no Prometheus and analysis.prometheus is not set",
            hint="Set spec.prometheus in the template or analysis.prometheus in the LogicBundle.",
        )
    try:
        return endpoint(settings, namespace=namespace, reader=reader)
    except LogicBundleError as exc:
        raise MetricTemplateError(f"{what}: {exc}", hint=exc.hint) from None


def resolve(
    *,
    metric: Metric,
    analysis: Analysis,
    namespace: str,
    bundle: str,
    stable_digest: str,
    reader: ObjectReader,
    templates: TemplateReader,
) -> ResolvedMetric:
    """How to measure ``metric`` (one with ``query`` or ``templateRef``)."""
    if metric.query is not None:
        query = metric.query
        target = _endpoint(
            analysis.prometheus,
            what=f"metric {metric.name}",
            namespace=namespace,
            reader=reader,
        )
        return ResolvedMetric(
            render=lambda digest: rollout.render_query(
                query,
                namespace=namespace,
                bundle=bundle,
                digest=digest,
                stable_digest=stable_digest,
            ),
            endpoint=target,
        )
    ref = metric.template_ref
    if ref is None:
        raise ValueError(f"metric {metric.name!r} has neither a query nor a templateRef")
    what = _describe(ref.kind, namespace, ref.name)
    cluster = ref.kind == names.CLUSTER_TEMPLATE_KIND
    try:
        body = templates.metric_template(
            kind=ref.kind, namespace="" if cluster else namespace, name=ref.name
        )
    except LogicBundleError as exc:
        raise MetricTemplateError(f"cannot read {what}: {exc}", hint=exc.hint) from None
    if body is None:
        raise MetricTemplateError(
            f"{what} not found", hint=f"Create it, or fix templateRef of metric {metric.name}."
        )
    try:
        template = LogicBundleMetricTemplate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MetricTemplateError(f"{what} is invalid: {where}: {first['msg']}") from None
    try:
        args = rollout.template_args(declared=template.spec.args or (), given=metric.template_args)
    except rollout.TemplateError as exc:
        raise MetricTemplateError(f"metric {metric.name} with {what}: {exc}") from None
    target = _endpoint(
        template.spec.prometheus or analysis.prometheus,
        what=what,
        namespace=namespace,
        reader=reader,
    )
    query = template.spec.query

    def render(digest: str) -> str:
        try:
            return rollout.render_template_query(
                query,
                args=args,
                namespace=namespace,
                bundle=bundle,
                digest=digest,
                stable_digest=stable_digest,
            )
        except rollout.TemplateError as exc:
            message = redact(str(exc), target.secrets)
            raise MetricTemplateError(f"metric {metric.name} with {what}: {message}") from None

    render(stable_digest)  # refuse a bad argument now, before any query is sent
    return ResolvedMetric(render=render, endpoint=target)
