"""A template's arguments fill the slots the template left, and never change the query's shape.

Hostile values (quotes, closing braces, operators, newlines, keywords) are
escaped inside strings and refused outside them; the refusal never quotes
the value (it may be a secret pasted by mistake, and it lands in a condition).
"""

from __future__ import annotations

import pytest

from logicbundle import rollout
from logicbundle.api import MetricTemplateArgument
from tests.rollout._fixtures import BUNDLE, D1, D2, NS


def render(template: str, **args: str) -> str:
    return rollout.render_template_query(
        template, args=args, namespace=NS, bundle=BUNDLE, digest=D2, stable_digest=D1
    )


def test_arguments_and_builtins_are_substituted() -> None:
    query = render(
        'sum(rate(http_requests_total{job="{{args.job}}",ns="{{namespace}}",'
        'digest="{{digest}}"}[{{args.window}}])) > {{args.floor}}',
        job="shop-api",
        window="5m",
        floor="0.5",
    )
    assert query == (
        f'sum(rate(http_requests_total{{job="shop-api",ns="{NS}",digest="{D2}"}}[5m])) > 0.5'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('x"} or vector(1) #', 'x\\"} or vector(1) #'),
        ("back\\slash", "back\\\\slash"),
        ('\\"', '\\\\\\"'),
        ("{{args.other}}", "{{args.other}}"),
    ],
)
def test_a_hostile_value_inside_double_quotes_stays_inside_them(value: str, expected: str) -> None:
    query = render('up{job="{{args.job}}"}', job=value)
    assert query == f'up{{job="{expected}"}}'


def test_a_hostile_value_inside_single_quotes_is_escaped_for_them() -> None:
    assert render("up{job='{{args.job}}'}", job="a'}or(1)") == "up{job='a\\'}or(1)'}"


def test_a_backquote_cannot_end_a_raw_string() -> None:
    assert render("up{job=`{{args.job}}`}", job='a"b') == 'up{job=`a"b`}'
    with pytest.raises(rollout.TemplateError, match="backquote"):
        render("up{job=`{{args.job}}`}", job="a`} or vector(1) #")


@pytest.mark.parametrize(
    "value",
    [
        "5m]) or vector(1",
        "vector(1)",
        "or",
        "OFFSET",
        "1 + 1",
        "",
        "5m\n",
        'x"',
        "-1",
    ],
)
def test_a_value_outside_any_string_must_be_a_number_duration_or_name(value: str) -> None:
    with pytest.raises(rollout.TemplateError, match=r"outside a quoted|control char") as caught:
        render("rate(x[{{args.window}}])", window=value)
    assert len(value) < 4 or value.strip() not in str(caught.value)


@pytest.mark.parametrize("value", ["5m", "1h30m", "0.99", "http_requests_total", "le"])
def test_plain_numbers_durations_and_names_are_accepted_outside_strings(value: str) -> None:
    assert render("q({{args.v}})", v=value) == f"q({value})"


def test_control_characters_are_refused_even_in_strings() -> None:
    with pytest.raises(rollout.TemplateError, match="control character"):
        render('up{job="{{args.job}}"}', job="a\nb")


def test_a_placeholder_in_a_comment_counts_as_outside_strings() -> None:
    with pytest.raises(rollout.TemplateError, match="outside a quoted string"):
        render('up # "{{args.x}}"', x="a b")


def test_an_escaped_quote_in_the_template_does_not_end_its_string() -> None:
    assert render('up{a="\\"{{args.x}}"}', x='"') == 'up{a="\\"\\""}'


def test_an_unterminated_string_is_refused() -> None:
    with pytest.raises(rollout.TemplateError, match="unterminated"):
        render('up{a="{{args.x}}}', x="y")


def test_missing_and_unknown_arguments_are_refused_and_defaults_fill_in() -> None:
    declared = (
        MetricTemplateArgument(name="job"),
        MetricTemplateArgument(name="window", default="5m"),
    )
    assert rollout.template_args(declared=declared, given={"job": "api"}) == {
        "job": "api",
        "window": "5m",
    }
    with pytest.raises(rollout.TemplateError, match="missing required argument"):
        rollout.template_args(declared=declared, given={})
    with pytest.raises(rollout.TemplateError, match=r"unknown argument.*jb"):
        rollout.template_args(declared=declared, given={"jb": "api", "job": "api"})
