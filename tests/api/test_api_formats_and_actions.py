"""Shared formats (durations, references, timestamps), names, conditions and manual actions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from logicbundle import contract
from logicbundle.api import (
    Condition,
    InvalidActionError,
    LabelSelector,
    find_condition,
    format_action,
    format_duration,
    names,
    parse_action,
    parse_duration,
    short_digest,
    with_condition,
)
from logicbundle.api import conditions as c
from logicbundle.api.formats import OCI_REFERENCE_PATTERN, unknown_placeholders
from tests.api._fixtures import DIGEST_A


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta()),
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("2h0m10s", timedelta(hours=2, seconds=10)),
    ],
)
def test_a_go_duration_parses_to_a_timedelta(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "-1s", "1d", "1.h", "m5", "1h 30m"])
def test_a_malformed_duration_is_refused_with_an_example_of_a_good_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '30s'"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "250ms", "45s", "5m", "1h30m", "2h0m10s", "1h1ms"])
def test_a_formatted_duration_parses_back_to_the_same_time(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize(
    ("ref", "valid"),
    [
        ("registry.example.com/team/rules:v1", True),
        ("registry.example.com/a/b/c:1.2.3-rc.1", True),
        ("127.0.0.1:5000/rules:latest", True),
        ("[::1]:5000/rules:v1", True),
        (f"ghcr.io/org/rules@{DIGEST_A}", True),
        (f"ghcr.io/org/rules:v1@{DIGEST_A}", True),
        ("rules:v1", False),
        ("docker.io/rules", False),
        ("ghcr.io/org/rules:", False),
        ("ghcr.io/org/rules@sha512:" + "a" * 128, False),
        ("ghcr.io//rules:v1", False),
        ("https://ghcr.io/org/rules:v1", False),
        ("ghcr.io/org/rules:v1\n", False),
    ],
)
def test_the_oci_reference_format(ref: str, valid: bool) -> None:
    assert bool(re.fullmatch(OCI_REFERENCE_PATTERN, ref)) is valid


def test_a_short_digest_is_the_first_twelve_hex_characters() -> None:
    assert short_digest(DIGEST_A) == "a" * 12


def test_a_template_may_use_only_the_documented_placeholders() -> None:
    template = 'x{ns="{{namespace}}",d="{{ digest }}",s="{{stable_digest}}",p="{{pod}}"}'
    assert unknown_placeholders(template) == ["pod"]


def test_the_longest_bundle_name_names_a_configmap_and_a_state_file() -> None:
    longest = "a" * names.MAX_BUNDLE_NAME_LENGTH
    assert len(contract.state_configmap_name(longest)) <= 253  # a DNS subdomain
    assert contract.state_file_name(longest) == longest + ".json"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "a", "x": "y"}, True),
        ({"matchLabels": {"app": "a"}}, {"app": "b"}, False),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["1"]}]}, {"t": "1"}, True),
        ({"matchExpressions": [{"key": "t", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
        ({"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]}, {"t": ""}, False),
    ],
)
def test_a_label_selector_matches_like_kubernetes(
    selector: dict[str, object], labels: dict[str, str], matches: bool
) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is matches


def _condition(status: str, reason: str, at: datetime) -> Condition:
    return Condition.model_validate(
        {"type": c.READY, "status": status, "reason": reason, "lastTransitionTime": at}
    )


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    start = datetime(2025, 5, 1, tzinfo=UTC)
    later = start + timedelta(minutes=1)
    current = (_condition(c.FALSE, c.PROGRESSING, start),)

    same_status = with_condition(current, _condition(c.FALSE, c.WAITING_FOR_PODS, later))
    assert same_status[0].last_transition_time == start
    assert same_status[0].reason == c.WAITING_FOR_PODS

    flipped = with_condition(same_status, _condition(c.TRUE, c.SUCCEEDED, later))
    assert flipped[0].last_transition_time == later


def test_a_new_condition_type_is_appended_and_found() -> None:
    at = datetime(2025, 5, 1, tzinfo=UTC)
    stalled = Condition(
        type=c.STALLED, status="True", reason=c.ROLLED_BACK, last_transition_time=at
    )
    result = with_condition((_condition(c.FALSE, c.ROLLED_BACK, at),), stalled)
    assert [x.type for x in result] == [c.READY, c.STALLED]
    assert find_condition(result, c.STALLED) == stalled
    assert find_condition(result, c.VERIFIED) is None


def test_a_condition_time_is_written_as_kubernetes_writes_it() -> None:
    at = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    dumped = _condition(c.TRUE, c.SUCCEEDED, at).model_dump(mode="json")
    assert dumped["lastTransitionTime"] == "2025-05-01T12:00:00Z"


def test_a_condition_refuses_a_time_without_a_zone_and_a_reason_with_spaces() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        _condition(c.TRUE, c.SUCCEEDED, datetime(2025, 5, 1))
    with pytest.raises(ValidationError, match="should match pattern"):
        _condition(c.TRUE, "Not CamelCase", datetime(2025, 5, 1, tzinfo=UTC))


def test_every_reason_is_camel_case() -> None:
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", reason) for reason in c.REASONS)
    assert len(set(c.REASONS)) == len(c.REASONS)


@pytest.mark.parametrize(
    ("value", "action", "argument"),
    [
        ("promote@2025-05-01T12:00:00Z", "promote", None),
        ("abort@1", "abort", None),
        ("retry@x", "retry", None),
        (f"rollback={DIGEST_A}@1714564800", "rollback", DIGEST_A),
    ],
)
def test_a_requested_action_parses(value: str, action: str, argument: str | None) -> None:
    parsed = parse_action(value)
    assert (parsed.action, parsed.argument) == (action, argument)
    assert str(parsed) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("promote", "no valid '@<token>' suffix"),
        ("promote@", "no valid '@<token>' suffix"),
        ("deploy@1", "unknown action 'deploy'"),
        ("rollback@1", "rollback needs a digest"),
        ("rollback=v1@1", "rollback needs a digest"),
        ("abort=now@1", "takes no argument"),
    ],
)
def test_a_malformed_requested_action_is_refused_with_a_message(value: str, message: str) -> None:
    with pytest.raises(InvalidActionError, match=re.escape(message)):
        parse_action(value)


def test_an_action_is_formatted_so_that_it_parses_back() -> None:
    value = format_action("rollback", token="t1", argument=DIGEST_A)
    assert parse_action(value).argument == DIGEST_A
    with pytest.raises(InvalidActionError):
        format_action("rollback", token="t1")
