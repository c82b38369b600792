"""The slow path: the target rule over the mounted rollout state and the pod's own facts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from logicbundle import contract
from logicbundle.agent import Target
from logicbundle.agent._slow import Reading, SlowPath
from tests.agent.conftest import (
    ADMITTED,
    MakeAgent,
    publish,
    replace_file,
    stable_state,
    unused_port,
    wait_for,
    write_pod,
)

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
INTERNAL = contract.Selector({"logicbundle.io/cohort": "internal"})
STATES: dict[str, contract.Stage] = {
    "percent": contract.Percent(
        threshold=contract.POSITION_LIMIT // 2,
        sealed=ADMITTED + 5,
        carry=contract.Carry(INTERNAL, contract.POSITION_LIMIT // 4),
    ),
    "internal": contract.Internal(INTERNAL),
    "all": contract.Everyone(),
    "requestPercent": contract.Split(30),
}
PODS = [
    contract.PodFacts(
        key=f"shop/web-{i}",
        labels={"logicbundle.io/cohort": "internal"} if i % 3 == 0 else {"app": "shop"},
        admitted=ADMITTED + i,  # the last ones were admitted after the percent stage's seal
    )
    for i in range(12)
]


def _slow(root: Path) -> SlowPath:
    return SlowPath(
        bundles=("pricing",),
        state_dir=root / "state",
        annotations_file=root / "annotations",
        labels_file=root / "labels",
    )


def _read(slow: SlowPath) -> Reading:
    assert slow.changed()
    return slow.read()


@pytest.mark.parametrize("kind", sorted(STATES))
def test_the_slow_path_target_is_the_contracts_rule(tmp_path: Path, kind: str) -> None:
    state = contract.RolloutState(bundle="pricing", stable=D1, candidate=D2, stage=STATES[kind])
    publish(tmp_path, state)
    got = set()
    for pod in PODS:
        write_pod(tmp_path, key=pod.key, admitted=pod.admitted, labels=pod.labels)
        expected = contract.target_of(state, pod)
        assert expected is not None
        target = _read(_slow(tmp_path)).targets["pricing"]
        assert (target.digest, target.candidate, target.weight) == (
            expected.digest,
            expected.candidate,
            expected.weight,
        )
        got.add(target.key)
    if kind in ("percent", "internal"):
        assert {digest for digest, _, _ in got} == {D1, D2}  # both sides of the rule exercised


def test_a_state_without_a_stable_digest_assigns_nothing(tmp_path: Path) -> None:
    write_pod(tmp_path)
    publish(tmp_path, contract.RolloutState(bundle="pricing", stable=None))
    reading = _read(_slow(tmp_path))
    assert reading == Reading(targets={}, told=True)


def test_a_missing_state_file_is_no_target_and_no_complaint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pod(tmp_path)
    slow = _slow(tmp_path)
    assert _read(slow) == Reading(targets={}, told=True)
    publish(tmp_path, stable_state(D1))
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    (tmp_path / "state" / "pricing.json").unlink()  # the ConfigMap was deleted
    assert _read(slow).targets == {}
    assert not caplog.records


def test_without_readable_facts_the_slow_path_has_not_answered(tmp_path: Path) -> None:
    # Nothing is mounted yet: the agent must not call itself ready on the slow path's word.
    assert _read(_slow(tmp_path)) == Reading(targets={}, told=False)


def _unreadable(root: Path) -> None:
    path = root / "state" / "pricing.json"
    path.unlink()
    path.mkdir()


def _drop_labels(root: Path) -> None:
    (root / "labels").unlink()


REFUSALS: dict[str, tuple[Callable[[Path], object], str]] = {
    "state of another bundle": (
        lambda root: publish(root, stable_state(D2, bundle="routing")),
        "published for bundle 'routing', not 'pricing'",
    ),
    "invalid JSON": (lambda root: publish(root, b'{"bundle": "pricing",'), "not JSON"),
    "outside the grammar": (
        lambda root: publish(root, b'{"bundle": "pricing", "stable": "sha256:abc"}'),
        "state.stable must be a digest",
    ),
    "oversized state": (
        # Valid JSON padded past the limit: refused for its size, not its content.
        lambda root: publish(
            root,
            json.dumps(contract.state_to_json(stable_state(D2))).encode()
            + b" " * contract.MAX_STATE_BYTES,
        ),
        f"more than {contract.MAX_STATE_BYTES} bytes",
    ),
    "unreadable state": (_unreadable, "cannot read it"),
    "missing cohort key": (
        lambda root: write_pod(root, key=None),
        "no logicbundle.io/cohort-key annotation",
    ),
    "missing labels file": (_drop_labels, "cannot read the pod's labels"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_input_keeps_the_previous_target_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    break_it, why = REFUSALS[case]
    write_pod(tmp_path)
    publish(tmp_path, stable_state(D1))
    slow = _slow(tmp_path)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}

    caplog.set_level(logging.WARNING, logger="logicbundle.agent")
    break_it(tmp_path)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    replace_file(tmp_path / "other", b"")  # an unrelated file: no new round
    assert not slow.changed()
    os.utime(tmp_path / "annotations", ns=(1, 1))  # a new round, the same problem
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert why in warnings[0]


def test_a_refused_state_with_no_previous_target_assigns_nothing(tmp_path: Path) -> None:
    write_pod(tmp_path)
    publish(tmp_path, b"[]")
    assert _read(_slow(tmp_path)).targets == {}


def test_a_problem_that_goes_away_and_comes_back_is_logged_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="logicbundle.agent")
    write_pod(tmp_path, key=None)
    publish(tmp_path, stable_state(D1))
    slow = _slow(tmp_path)
    assert _read(slow).targets == {}
    write_pod(tmp_path)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    write_pod(tmp_path, key=None)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    assert len(caplog.records) == 2


def _kubelet_publish(volume: Path, version: str, files: dict[str, bytes]) -> None:
    """The kubelet's atomic writer: a new timestamped directory, then ``..data`` swapped to it."""
    directory = volume / f"..{version}"
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    link = volume / "..data_tmp"
    link.symlink_to(directory.name)
    link.replace(volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


def test_a_kubelet_swap_of_the_data_link_is_seen_even_with_identical_sizes(
    tmp_path: Path,
) -> None:
    volume = tmp_path / "state"
    state = {"pricing.json": json.dumps(contract.state_to_json(stable_state(D1))).encode()}
    _kubelet_publish(volume, "2024_01", state)
    write_pod(tmp_path)
    slow = _slow(tmp_path)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    assert not slow.changed()

    same_size = {"pricing.json": json.dumps(contract.state_to_json(stable_state(D2))).encode()}
    _kubelet_publish(volume, "2024_02", same_size)
    shutil.rmtree(volume / "..2024_01")  # as the kubelet removes the old directory
    assert _read(slow).targets == {"pricing": Target(digest=D2)}


def test_a_change_of_the_pods_labels_re_evaluates_the_rule(tmp_path: Path) -> None:
    state = contract.RolloutState(
        bundle="pricing", stable=D1, candidate=D2, stage=contract.Internal(INTERNAL)
    )
    publish(tmp_path, state)
    write_pod(tmp_path)
    slow = _slow(tmp_path)
    assert _read(slow).targets == {"pricing": Target(digest=D1)}
    write_pod(tmp_path, labels={"logicbundle.io/cohort": "internal"})
    assert _read(slow).targets == {"pricing": Target(digest=D2)}


def test_the_agent_follows_the_state_and_ignores_a_refused_one(
    make_agent: MakeAgent, root: Path
) -> None:
    seen: list[tuple[str, str, Target | None]] = []
    registry = f"127.0.0.1:{unused_port()}/shop/pricing"  # refuses at once: nothing to fetch
    agent = make_agent(
        bundle={"source": registry, "insecure": True}, on_target=lambda *a: seen.append(a)
    )
    assert "no target known yet" in agent.ready()[1]
    write_pod(root)
    publish(root, stable_state(D1))
    wait_for(lambda: seen == [("slow", "pricing", Target(digest=D1))], "the state's target")
    publish(root, b"not json")
    publish(root, stable_state(D2, bundle="routing"))
    write_pod(root, key=None)
    publish(root, stable_state(D2))
    write_pod(root)
    wait_for(lambda: seen[-1] == ("slow", "pricing", Target(digest=D2)), "the next good state")
    assert [target for _, _, target in seen] == [Target(digest=D1), Target(digest=D2)]


def test_without_a_distributor_the_agent_is_told_once_its_facts_are_readable(
    make_agent: MakeAgent, root: Path
) -> None:
    agent = make_agent()
    assert not agent.ready()[0]
    write_pod(root)  # no state published yet: nothing assigned, so nothing to wait for
    wait_for(lambda: agent.ready()[0], "ready with nothing assigned")
