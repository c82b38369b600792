"""Metric templates: a template's query with its arguments substituted, safely.

Pure.  The controller reads the ``LogicBundleMetricTemplate`` (or the cluster
one) a metric names, and this module turns it and the metric's
``templateArgs`` into the PromQL text to send, or refuses with a
:class:`TemplateError` that says why, in words fit for a condition.

The escaping rule.  Argument values come from whoever may write a
``LogicBundle``; the template from whoever wrote the template.  A value must
never change the *shape* of the query, only fill a slot the template author
left.  So the position of each ``{{args.<name>}}`` decides what it accepts:

- inside a double- or single-quoted PromQL string: any text without control
  characters, escaped for that string (``\\`` and the quote), so it cannot
  end the string (a regex matcher ``=~"{{args.x}}"`` still reads it as a
  regex: that is the template's choice);
- inside a backquoted (raw) string, which has no escapes: any text without
  control characters and without a backquote;
- anywhere else (a range ``[{{args.window}}]``, a number, a metric name): only
  a number, a duration (``5m``, ``1h30m``) or a name
  (``[a-zA-Z_:][a-zA-Z0-9_:]*``) that is not a PromQL keyword (``or``,
  ``and``, ``unless``, ``offset``, ...); nothing with a space, a bracket, a
  quote or an operator.

The built-in placeholders (``{{namespace}}``, ``{{bundle}}``, ``{{digest}}``,
``{{stable_digest}}``) are checked against their formats and escaped as in
:func:`render_query`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from logicbundle.api import MetricTemplateArgument
from logicbundle.api.formats import DIGEST_PATTERN, DNS_SUBDOMAIN_PATTERN
from logicbundle.api.v1alpha1 import TEMPLATE_ARG_PREFIX

_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_DIGEST_RE: Final = re.compile(DIGEST_PATTERN)
_NAME_RE: Final = re.compile(DNS_SUBDOMAIN_PATTERN)
_BARE_RE: Final = re.compile(
    r"[0-9]+(?:\.[0-9]+)?"  # a number
    r"|(?:[0-9]+(?:ms|s|m|h|d|w|y))+"  # a duration
    r"|[a-zA-Z_:][a-zA-Z0-9_:]*"  # a metric or label name
)
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
PROMQL_KEYWORDS: Final = frozenset(
    {
        "and", "or", "unless", "atan2", "by", "without", "on", "ignoring", "group_left",
        "group_right", "bool", "offset", "start", "end", "inf", "nan",
    }
)  # fmt: skip
"""Words that would change an expression's shape if a value put them outside a string."""


class TemplateError(ValueError):
    """The template cannot be evaluated as the metric asks: its message says why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class _Slot:
    """Where a placeholder sits: its span, its name, and the quote it is inside (or None)."""

    start: int
    end: int
    name: str
    quote: str | None


def _slots(template: str) -> list[_Slot]:
    """Every placeholder of ``template`` and the PromQL string it sits in.

    A small lexer: double- and single-quoted strings with backslash escapes,
    backquoted strings without, ``#`` comments to the end of the line
    (a placeholder there counts as bare: a value with a newline would end it).
    """
    slots: list[_Slot] = []
    quote: str | None = None
    i = 0
    while i < len(template):
        match = _PLACEHOLDER_RE.match(template, i)
        if match is not None:
            slots.append(_Slot(start=i, end=match.end(), name=match.group(1), quote=quote))
            i = match.end()
            continue
        char = template[i]
        if quote is None:
            if char in "\"'`":
                quote = char
            elif char == "#":
                end = template.find("\n", i)
                comment_end = len(template) if end < 0 else end
                for inner in _PLACEHOLDER_RE.finditer(template, i, comment_end):
                    slots.append(
                        _Slot(start=inner.start(), end=inner.end(), name=inner.group(1), quote=None)
                    )
                i = comment_end
                continue
        elif char == "\\" and quote != "`":
            i += 2
            continue
        elif char == quote:
            quote = None
        i += 1
    if quote is not None:
        raise TemplateError(f"the query has an unterminated {quote}-quoted string")
    return slots


def _escaped(value: str, quote: str | None, *, what: str) -> str:
    """``value`` fit for a slot inside ``quote`` (None: outside any string)."""
    if _CONTROL_RE.search(value):
        raise TemplateError(f"{what} contains a control character")
    if quote is None:
        if not _BARE_RE.fullmatch(value) or value.lower() in PROMQL_KEYWORDS:
            raise TemplateError(
                f"{what} is outside a quoted string in the query, where only a number, a "
                "duration or a metric/label name (not a PromQL keyword) is accepted"
            )
        return value
    if quote == "`":
        if "`" in value:
            raise TemplateError(f"{what} contains a backquote, which ends a raw string")
        return value
    return value.replace("\\", "\\\\").replace(quote, "\\" + quote)


def template_args(
    *, declared: Sequence[MetricTemplateArgument], given: Mapping[str, str] | None
) -> dict[str, str]:
    """The value of every declared argument: the metric's, else the default.

    Refuses an argument the template does not declare (a typo would otherwise
    be silently replaced by a default) and a required one left out.
    """
    given = dict(given or {})
    names = {arg.name for arg in declared}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TemplateError(
            f"unknown argument(s) {', '.join(unknown)}; the template declares "
            f"{', '.join(sorted(names)) or 'none'}"
        )
    values: dict[str, str] = {}
    missing: list[str] = []
    for arg in declared:
        value = given.get(arg.name, arg.default)
        if value is None:
            missing.append(arg.name)
        else:
            values[arg.name] = value
    if missing:
        raise TemplateError(f"missing required argument(s) {', '.join(missing)} in templateArgs")
    return values


def render_template_query(
    template: str,
    *,
    args: Mapping[str, str],
    namespace: str,
    bundle: str,
    digest: str,
    stable_digest: str,
) -> str:
    """``template`` with its placeholders filled by the escaping rule of this module."""
    if not _DIGEST_RE.fullmatch(digest) or not _DIGEST_RE.fullmatch(stable_digest):
        raise TemplateError("digest and stable_digest must be sha256:<64 hex> digests")
    if not _NAME_RE.fullmatch(namespace) or not _NAME_RE.fullmatch(bundle):
        raise TemplateError("namespace and bundle must be Kubernetes object names")
    builtins = {
        "namespace": namespace,
        "bundle": bundle,
        "digest": digest,
        "stable_digest": stable_digest,
    }
    parts: list[str] = []
    position = 0
    for slot in _slots(template):
        parts.append(template[position : slot.start])
        position = slot.end
        if slot.name in builtins:
            # Formats checked above: no quote, backslash or space can occur in them.
            parts.append(builtins[slot.name])
            continue
        arg = slot.name.removeprefix(TEMPLATE_ARG_PREFIX)
        if not slot.name.startswith(TEMPLATE_ARG_PREFIX) or arg not in args:
            raise TemplateError(f"unknown placeholder {{{{{slot.name}}}}} in the query")
        parts.append(_escaped(args[arg], slot.quote, what=f"argument {arg!r}"))
    parts.append(template[position:])
    return "".join(parts)
