"""The rollout's trace context in the published state (W3C ``traceparent``)."""

from __future__ import annotations

import pytest

from logicbundle import contract

DIGEST = "sha256:" + "a" * 64
CANDIDATE = "sha256:" + "b" * 64
TRACEPARENT = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


@pytest.mark.parametrize(
    "value",
    [
        None,
        7,
        "",
        "01-" + "1" * 32 + "-" + "2" * 16 + "-01",  # version 01 is not version 00's grammar
        "00-" + "0" * 32 + "-" + "2" * 16 + "-01",  # an all-zero trace id
        "00-" + "1" * 32 + "-" + "0" * 16 + "-01",  # an all-zero span id
        "00-" + "A" * 32 + "-" + "2" * 16 + "-01",  # upper case
        TRACEPARENT + "-extra",
    ],
)
def test_anything_but_a_version_00_traceparent_is_refused(value: object) -> None:
    assert contract.parse_traceparent(value) is None


def test_a_traceparent_reads_back_as_written() -> None:
    parsed = contract.parse_traceparent(TRACEPARENT)
    assert parsed == contract.TraceParent(trace_id="1" * 32, span_id="2" * 16, flags=1)
    assert str(parsed) == TRACEPARENT


def test_the_published_state_carries_the_traceparent_and_every_target_with_it() -> None:
    state = contract.RolloutState(
        bundle="b",
        stable=DIGEST,
        candidate=CANDIDATE,
        stage=contract.Everyone(),
        revision=5,
        traceparent=TRACEPARENT,
    )
    body = contract.state_to_json(state)
    assert body["traceparent"] == TRACEPARENT
    back = contract.state_from_json(body)
    assert back.traceparent == TRACEPARENT
    target = contract.target_of(back, contract.PodFacts(key="ns/p"))
    assert target is not None and target.traceparent == TRACEPARENT


def test_a_state_with_a_malformed_traceparent_is_refused() -> None:
    body = {"bundle": "b", "stable": DIGEST, "traceparent": "00-nope"}
    with pytest.raises(contract.StateError, match="traceparent"):
        contract.state_from_json(body)


def test_the_traceparent_is_not_what_a_pod_runs_so_it_changes_no_equality() -> None:
    plain = contract.RolloutState(bundle="b", stable=DIGEST, revision=5)
    traced = contract.RolloutState(bundle="b", stable=DIGEST, revision=5, traceparent=TRACEPARENT)
    assert plain == traced
    assert contract.target_of(plain, contract.PodFacts(key="k")) == contract.target_of(
        traced, contract.PodFacts(key="k")
    )


def test_span_ids_are_derived_the_same_everywhere_and_differ_per_phase() -> None:
    trace = contract.rollout_trace_id(uid="u", digest=CANDIDATE, revision=1)
    assert trace == contract.rollout_trace_id(uid="u", digest=CANDIDATE, revision=1)
    assert trace != contract.rollout_trace_id(uid="u", digest=CANDIDATE, revision=2)
    assert len(trace) == 32 and len(contract.phase_span_id(trace, "stage/0")) == 16
    assert contract.phase_span_id(trace, "stage/0") != contract.phase_span_id(trace, "stage/1")
