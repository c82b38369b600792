"""promote, abort, retry, rollback, status and history: parsing, requests, waiting, rendering.

Everything that talks to the API server goes through ``_actions.Cluster``;
here it is a fake that records patches and replays watch events, with a fake
clock, so waiting is tested without sleeping and without a cluster.  The
objects come from the real rollout state machine (``tests.gitops.scenarios``).
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from logicbundle.api import names, parse_action
from logicbundle.cli import _actions, _plugin, main
from tests.gitops import scenarios
from tests.rollout._fixtures import D1, D2, D3

NOW = datetime(2025, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
EXPIRED = ("EXPIRED", {})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeCluster:
    """One LogicBundle; each ``watch`` call replays the next batch of events.

    An empty batch is a server-side watch timeout: the clock moves on by the
    whole timeout the caller asked for; a batch with events ends early (the
    server closed the watch) a second later.
    """

    namespace = "shop"

    def __init__(
        self,
        obj: dict[str, Any] | None,
        batches: list[list[tuple[str, dict[str, Any]]]] | None = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.obj = copy.deepcopy(obj)
        self.batches = list(batches or [])
        self.clock = clock or FakeClock()
        self.patches: list[Mapping[str, Any]] = []
        self.watched: list[tuple[str | None, float]] = []
        self.gets = 0

    def get(self, name: str) -> dict[str, Any] | None:
        self.gets += 1
        if self.obj is None or self.obj["metadata"]["name"] != name:
            return None
        return copy.deepcopy(self.obj)

    def patch(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        assert self.obj is not None and self.obj["metadata"]["name"] == name
        self.patches.append(body)
        meta = self.obj["metadata"]
        meta.setdefault("annotations", {}).update(body["metadata"]["annotations"])
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)

    def watch(
        self, name: str, *, resource_version: str | None, timeout: float
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.watched.append((resource_version, timeout))
        batch = self.batches.pop(0) if self.batches else []
        for event in batch:
            if event is EXPIRED:
                raise _actions.ResourceExpiredError("too old resource version")
            if event[0] != "DELETED":
                self.obj = copy.deepcopy(event[1])
            yield event
        self.clock.now += 1 if batch else timeout


def version(obj: dict[str, Any], rv: int, **status: Any) -> dict[str, Any]:
    """``obj`` at resourceVersion ``rv``, with some status fields replaced."""
    new = copy.deepcopy(obj)
    new["metadata"]["resourceVersion"] = str(rv)
    new.setdefault("status", {}).update(status)
    return new


def handled(obj: dict[str, Any], rv: int, value: str) -> dict[str, Any]:
    new = version(obj, rv, lastHandledAction=value)
    new["metadata"].setdefault("annotations", {})[names.ANNOTATION_REQUESTED_ACTION] = value
    return new


# --- parsing --------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _actions.add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_an_action_takes_a_name_a_namespace_and_a_wait_deadline() -> None:
    args = parse(["promote", "rules", "-n", "shop", "--wait", "--timeout", "1m30s"])
    assert (args.action, args.name, args.namespace, args.wait, args.timeout) == (
        "promote",
        "rules",
        "shop",
        True,
        90.0,
    )
    assert args.func is _actions._cmd_action


def test_without_flags_an_action_does_not_wait_and_leaves_the_namespace_to_the_kubeconfig() -> None:
    args = parse(["abort", "rules"])
    assert (args.wait, args.force, args.timeout) == (False, False, _actions.DEFAULT_WAIT_TIMEOUT)
    assert getattr(args, "namespace", None) is None


def test_rollback_needs_to_and_accepts_a_full_digest_or_a_hex_prefix() -> None:
    assert parse(["rollback", "rules", "--to", D1]).to == D1
    assert parse(["rollback", "rules", "--to", "1111111"]).to == "1111111"


@pytest.mark.parametrize(
    "argv",
    [
        ["rollback", "rules"],
        ["rollback", "rules", "--to", "latest"],
        ["rollback", "rules", "--to", "sha256:12"],
        ["status", "rules", "-o", "xml"],
        ["promote", "rules", "--timeout", "soon"],
        ["promote"],
    ],
    ids=["no --to", "a tag", "too short", "unknown output", "bad timeout", "no name"],
)
def test_a_malformed_command_line_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "shop", "--context", "staging", "status", "rules"],
        ["status", "rules", "--namespace", "shop", "--context", "staging"],
        ["--namespace=other", "status", "rules", "-n", "shop", "--context=staging"],
    ],
    ids=["before", "after", "after wins"],
)
def test_the_kubectl_plugin_reads_kubectl_flags_before_or_after_the_sub_command(
    argv: list[str],
) -> None:
    args = _plugin.build_parser().parse_args(argv)
    assert (args.command, args.name, args.namespace, args.context) == (
        "status",
        "rules",
        "shop",
        "staging",
    )
    assert args.kubeconfig is None


def test_the_kubectl_plugin_offers_the_same_sub_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _plugin.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl logicbundle")
    for command in ("promote", "abort", "retry", "rollback", "status"):
        assert command in out


def test_the_annotation_name_is_the_apis(monkeypatch: pytest.MonkeyPatch) -> None:
    assert names.ANNOTATION_REQUESTED_ACTION == _actions._ANNOTATION
    assert (names.GROUP, names.VERSION, names.PLURAL) == (
        _actions._GROUP,
        _actions._VERSION,
        _actions._PLURAL,
    )


# --- the request --------------------------------------------------------------------


def test_the_patch_sets_only_the_requested_action_annotation_with_a_fresh_token() -> None:
    value = _actions.request_value("promote", token=_actions.new_token(NOW))
    assert value == "promote@2025-05-01T12:00:00.123456Z"
    assert _actions.request_patch(value) == {
        "metadata": {"annotations": {"logicbundle.io/requested-action": value}}
    }
    assert _actions.new_token() != _actions.new_token(NOW)


def test_promote_patches_the_annotation_and_says_what_it_requested(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = FakeCluster(scenarios.waiting_for_promotion())
    assert _actions.request_action(cluster, "rules", action="promote", now=NOW) == 0
    value = "promote@2025-05-01T12:00:00.123456Z"
    assert cluster.patches == [
        {"metadata": {"annotations": {names.ANNOTATION_REQUESTED_ACTION: value}}}
    ]
    assert capsys.readouterr().out == f"requested {value} on logicbundle shop/rules\n"
    assert cluster.watched == []


def test_rollback_is_refused_when_the_digest_is_not_in_the_history() -> None:
    cluster = FakeCluster(scenarios.rolled_back_by_request())
    with pytest.raises(_actions.RefusedError) as exc:
        _actions.request_action(cluster, "rules", action="rollback", argument=D3)
    assert "not in the status.history of rules" in exc.value.message
    assert "history: 111111111111, 222222222222" in exc.value.message
    assert cluster.patches == []


def test_rollback_names_the_full_digest_even_when_given_a_prefix() -> None:
    cluster = FakeCluster(scenarios.rolled_back_by_request())
    _actions.request_action(cluster, "rules", action="rollback", argument="2222222", now=NOW)
    value = cluster.patches[0]["metadata"]["annotations"][names.ANNOTATION_REQUESTED_ACTION]
    assert parse_action(value).argument == D2


def test_a_prefix_matching_two_history_digests_is_refused() -> None:
    obj = scenarios.rolled_back_by_request()
    obj["status"]["history"] = [
        {"digest": "sha256:ab" + "1" * 62},
        {"digest": "sha256:ab" + "2" * 62},
    ]
    with pytest.raises(_actions.RefusedError, match="matches 2 digests"):
        _actions.request_action(FakeCluster(obj), "rules", action="rollback", argument="ab")


@pytest.mark.parametrize(
    ("action", "scenario", "reason"),
    [
        ("promote", scenarios.first_install_ready, "needs a rollout in flight"),
        ("abort", scenarios.rolled_back, "needs a rollout in flight"),
        ("retry", scenarios.first_install_ready, "needs a candidate digest"),
        ("promote", scenarios.suspended, "is suspended"),
    ],
    ids=["promote when steady", "abort when held", "retry without candidate", "suspended"],
)
def test_an_action_the_operator_would_ignore_is_refused_unless_forced(
    action: str, scenario: Any, reason: str
) -> None:
    cluster = FakeCluster(scenario())
    with pytest.raises(_actions.RefusedError, match=reason):
        _actions.request_action(cluster, "rules", action=action)
    assert cluster.patches == []
    assert _actions.request_action(cluster, "rules", action=action, force=True) == 0
    assert len(cluster.patches) == 1


def test_a_missing_bundle_is_reported_with_its_namespace() -> None:
    with pytest.raises(_actions.NotFoundError, match="logicbundle shop/nope not found"):
        _actions.request_action(FakeCluster(scenarios.paused()), "nope", action="promote")


def test_replacing_a_request_not_handled_yet_is_noted(capsys: pytest.CaptureFixture[str]) -> None:
    obj = scenarios.paused()
    obj["metadata"]["annotations"] = {names.ANNOTATION_REQUESTED_ACTION: "abort@t9"}
    _actions.request_action(FakeCluster(obj), "rules", action="promote", now=NOW)
    assert "replacing the request abort@t9, not handled yet" in capsys.readouterr().err


# --- waiting ---------------------------------------------------------------------------


def test_wait_watches_from_the_patched_version_until_the_request_is_handled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    obj = scenarios.waiting_for_promotion()
    value = "promote@2025-05-01T12:00:00.123456Z"
    after = scenarios.mid_stage_rolling()  # any later status; its conditions are printed
    batches = [
        [("MODIFIED", version(obj, 1003, phase="WaitingForPromotion"))],
        [("ADDED", version(obj, 1003)), ("MODIFIED", handled(after, 1004, value))],
    ]
    cluster = FakeCluster(obj, batches)
    code = _actions.request_action(
        cluster, "rules", action="promote", wait=True, timeout=60, now=NOW, clock=cluster.clock
    )
    assert code == 0
    assert [rv for rv, _ in cluster.watched] == ["1002", "1003"]
    assert cluster.gets == 1  # the patch's answer is the starting point: no second GET
    out = capsys.readouterr().out
    assert f"handled {value}:" in out
    assert "  Reconciling  True    WaitingForPods: stage internal (1/2)" in out


def test_an_expired_watch_lists_again_and_carries_on() -> None:
    obj = scenarios.waiting_for_promotion()
    value = "promote@2025-05-01T12:00:00.123456Z"
    cluster = FakeCluster(obj, [[EXPIRED]])
    cluster.obj = handled(obj, 1010, value)  # what a fresh GET returns after the 410
    result = _actions.wait_for(
        cluster,
        "rules",
        lambda o: o["status"].get("lastHandledAction") == value,
        timeout=60,
        first=obj,
        clock=cluster.clock,
    )
    assert result["metadata"]["resourceVersion"] == "1010"


def test_waiting_gives_up_at_the_deadline_with_a_hint() -> None:
    cluster = FakeCluster(scenarios.waiting_for_promotion())
    with pytest.raises(_actions.TimedOutError) as exc:
        _actions.request_action(
            cluster, "rules", action="promote", wait=True, timeout=90, now=NOW, clock=cluster.clock
        )
    assert "has not handled promote@2025-05-01T12:00:00.123456Z within 90s" in exc.value.message
    assert "Is the operator running?" in (exc.value.hint or "")
    assert [timeout for _, timeout in cluster.watched] == [90.0]


def test_a_bundle_deleted_while_waiting_ends_the_wait() -> None:
    obj = scenarios.paused()
    cluster = FakeCluster(obj, [[("DELETED", obj)]])
    with pytest.raises(_actions.NotFoundError, match="was deleted"):
        _actions.request_action(
            cluster, "rules", action="abort", wait=True, now=NOW, clock=cluster.clock
        )


def test_a_rollback_the_operator_refused_fails_after_waiting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    obj = scenarios.rolled_back_by_request()
    value = f"rollback={D2}@2025-05-01T12:00:00.123456Z"
    cluster = FakeCluster(obj, [[("MODIFIED", handled(obj, 1003, value))]])
    code = _actions.request_action(
        cluster, "rules", action="rollback", argument=D2, wait=True, now=NOW, clock=cluster.clock
    )
    assert code == 1
    assert "the operator refused the rollback: stable is 111111111111" in capsys.readouterr().out


# --- status ---------------------------------------------------------------------------


def test_status_text_shows_phase_stage_digests_pods_and_conditions() -> None:
    text = _actions.render_status(scenarios.paused())
    assert text.splitlines()[:5] == [
        "LogicBundle shop/rules",
        "  Phase:      Progressing",
        "  Stage:      internal (1/2), started 2025-05-01T12:00:10Z",
        "  Stable:     111111111111",
        "  Candidate:  222222222222",
    ]
    assert "  Pods:       10/10 active, 0 pending, 0 failed, 0 without agent" in text
    assert "    111111111111  stable     assigned    8  active    8" in text
    assert "    222222222222  candidate  assigned    2  active    2" in text
    assert (
        "    Reconciling  True    WaitingForPause        stage internal (1/2): pause 5m, 300s left"
        in text
    )
    assert "  History (newest first):\n    222222222222  Progressing  2025-05-01T12:00:10Z" in text
    assert "    111111111111  Installed    2025-05-01T12:00:00Z" in text


def test_status_text_shows_the_last_analysis_figures() -> None:
    text = _actions.render_status(scenarios.insufficient_data())
    assert (
        "  Analysis:   stage internal: NoData, 1 measurement(s), 0 consecutive failure(s)" in text
    )
    assert (
        "    error-rate       NoData  candidate 0 (3 samples)  stable 0.001 (4000 samples)" in text
    )


def test_status_text_explains_a_held_candidate_and_the_last_action() -> None:
    text = _actions.render_status(scenarios.aborted())
    assert "  Phase:      Aborted" in text
    assert (
        "  Candidate:  222222222222 (held: every pod on stable until retry or a new digest)" in text
    )
    assert "    Stalled      True    Aborted" in text
    assert "  Last action: abort@t1" in text


def test_status_text_says_when_the_operator_has_not_caught_up() -> None:
    text = _actions.render_status(scenarios.generation_not_observed())
    assert "  Generation: 2, the operator has seen 1 (catching up)" in text
    assert "[generation 1]" in text
    assert _actions.render_status(scenarios.no_status()).endswith(
        "no status yet: is the operator running?"
    )


def test_status_json_is_the_identity_and_the_whole_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    obj = scenarios.paused()
    assert _actions.show_status(FakeCluster(obj), "rules", output="json") == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert (data["name"], data["namespace"], data["generation"]) == ("rules", "shop", 1)
    assert data["status"] == obj["status"]


def test_status_watch_prints_each_change_until_ready(capsys: pytest.CaptureFixture[str]) -> None:
    rolling, ready = scenarios.first_install_rolling(), scenarios.first_install_ready()
    batches = [
        [("MODIFIED", version(rolling, 1002)), ("MODIFIED", version(rolling, 1003))],
        [("MODIFIED", version(ready, 1004))],
    ]
    cluster = FakeCluster(rolling, batches)
    assert _actions.show_status(cluster, "rules", watch=True, clock=cluster.clock) == 0
    out = capsys.readouterr().out
    assert out.count("LogicBundle shop/rules") == 2  # 1002 and 1003 render the same
    assert out.count("\n--- ") == 1
    assert "Ready        True    Succeeded" in out.split("\n--- ")[1]


def test_status_watch_of_a_stalled_bundle_exits_with_failure() -> None:
    cluster = FakeCluster(scenarios.rolled_back())
    assert _actions.show_status(cluster, "rules", watch=True, clock=cluster.clock) == 1
    assert cluster.watched == []


def test_status_watch_with_a_deadline_times_out() -> None:
    cluster = FakeCluster(scenarios.paused())
    with pytest.raises(_actions.TimedOutError):
        _actions.show_status(cluster, "rules", watch=True, timeout=30, clock=cluster.clock)


# --- wiring and exit codes --------------------------------------------------------------------


def test_the_commands_connect_lazily_and_map_failures_to_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster(scenarios.paused())
    seen: list[argparse.Namespace] = []

    def connect(args: argparse.Namespace) -> FakeCluster:
        seen.append(args)
        return cluster

    monkeypatch.setattr(_actions, "connect", connect)
    assert main(["abort", "rules", "-n", "shop"]) == 0
    assert seen[0].namespace == "shop"
    assert (
        parse_action(
            cluster.patches[0]["metadata"]["annotations"][names.ANNOTATION_REQUESTED_ACTION]
        ).action
        == "abort"
    )
    assert _plugin.main(["status", "missing"]) == 1
    assert "error: logicbundle shop/missing not found" in capsys.readouterr().err


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [
        {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
        {"name": "staging", "context": {"cluster": "c", "user": "u"}},
    ],
    "current-context": "dev",
}


def test_the_namespace_comes_from_the_flag_then_the_kubeconfig_context(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(KUBECONFIG))

    def ns(**flags: Any) -> str:
        args = argparse.Namespace(kubeconfig=str(path), **flags)
        return _actions.connect(args).namespace

    assert ns() == "shop"
    assert ns(namespace="other") == "other"
    assert ns(context="staging") == "default"


def test_kubeconfig_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert _actions.connect(argparse.Namespace()).namespace == "shop"


def test_a_broken_kubeconfig_is_an_error_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({**KUBECONFIG, "current-context": "nowhere"}))
    with pytest.raises(_actions.ConnectionConfigError) as exc:
        _actions.connect(argparse.Namespace(kubeconfig=str(path)))
    assert "--kubeconfig" in (exc.value.hint or "")


def test_without_kubeconfig_and_outside_a_cluster_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(_actions.ConnectionConfigError, match="not running in a cluster"):
        _actions.connect(argparse.Namespace())


# --- history ---------------------------------------------------------------------------


def test_history_text_shows_each_rollout_with_its_outcome_stages_and_verdicts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = FakeCluster(scenarios.rolled_back())
    assert _actions.show_history(cluster, "rules") == 0
    text = capsys.readouterr().out
    assert text.startswith("LogicBundle shop/rules: 2 rollout(s), newest first\n")
    rolled, installed = text.split("\n\n")[1:]
    assert rolled.startswith("  222222222222  RolledBack ")
    assert "    rolled back" in rolled
    assert "      internal  Failed" in rolled and "error-rate" in rolled
    assert installed.startswith("  111111111111  Installed ")


def test_history_json_and_yaml_are_the_stored_entries(capsys: pytest.CaptureFixture[str]) -> None:
    obj = scenarios.rolled_back()
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        assert _actions.show_history(FakeCluster(obj), "rules", output=output) == 0
        document = load(capsys.readouterr().out)
        assert document == {
            "name": "rules",
            "namespace": "shop",
            "history": obj["status"]["history"],
        }
        assert [e["outcome"] for e in document["history"]] == ["RolledBack", "Installed"]


def test_history_of_a_missing_bundle_is_not_found() -> None:
    with pytest.raises(_actions.NotFoundError):
        _actions.show_history(FakeCluster(None), "rules")


def test_history_is_a_sub_command_of_both_commands() -> None:
    from logicbundle.cli import build_parser

    for parser in (build_parser(), _plugin.build_parser()):
        args = parser.parse_args(["history", "rules", "-n", "shop", "-o", "yaml"])
        assert (args.name, args.namespace, args.output) == ("rules", "shop", "yaml")
        assert args.func is _actions._cmd_history


def test_rollback_offers_only_digests_that_were_stable() -> None:
    obj = scenarios.rolled_back()  # D2 only ever rolled back
    assert _actions.history_digests(obj) == [D1]
    with pytest.raises(_actions.RefusedError, match=r"not in the status\.history"):
        _actions.request_action(FakeCluster(obj), "rules", action="rollback", argument=D2)
