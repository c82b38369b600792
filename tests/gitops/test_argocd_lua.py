"""The Argo CD health check and resource actions, run as real Lua in Argo CD's sandbox.

The objects come from the real rollout state machine (see ``scenarios``),
and the actions' output is fed back into it, so the Lua is checked against
what the operator really writes and really reads.
"""

from __future__ import annotations

import importlib.resources
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from logicbundle.api import LogicBundleStatus, conditions, find_condition, names, parse_action
from logicbundle.gitops import argocd
from logicbundle.gitops.argocd.__main__ import main as generator_main
from tests.gitops import scenarios
from tests.gitops.lua_runner import action, discovery, health, run
from tests.rollout._fixtures import D2, T0, make_spec, pods
from tests.rollout._fixtures import run as step

NOW = int(datetime(2025, 5, 1, 12, 0, tzinfo=UTC).timestamp())

# --- health -------------------------------------------------------------------------

EXPECTED_HEALTH = {
    "no status": ("Progressing", "Waiting for the operator"),
    "waiting for the first digest": ("Progressing", conditions.RESOLVING),
    "first install, agents not reported": ("Progressing", conditions.WAITING_FOR_PODS),
    "first install ready": ("Healthy", conditions.SUCCEEDED),
    "generation not observed": ("Progressing", "Waiting for the operator to observe generation 2"),
    "mid-stage rolling": ("Progressing", conditions.WAITING_FOR_PODS),
    "paused": ("Progressing", conditions.WAITING_FOR_PAUSE),
    "waiting for analysis": ("Progressing", conditions.WAITING_FOR_ANALYSIS),
    "waiting for a manual gate": ("Suspended", conditions.WAITING_FOR_PROMOTION),
    "insufficient data": ("Progressing", conditions.INSUFFICIENT_DATA),
    "rolled back": ("Degraded", conditions.ROLLED_BACK),
    "aborted": ("Degraded", conditions.ABORTED),
    "retried": ("Progressing", conditions.WAITING_FOR_PODS),
    "rolled back by request": ("Healthy", conditions.SUCCEEDED),
    "suspended": ("Suspended", conditions.SUSPENDED),
    "suspended while stalled": ("Suspended", conditions.SUSPENDED),
    "verification failed": ("Degraded", conditions.VERIFICATION_FAILED),
    "resolve failed": ("Degraded", f"{conditions.RESOLVE_FAILED}: RegistryUnavailable: "),
    "invalid source": ("Degraded", f"{conditions.INVALID_SOURCE}: InvalidTrustedRoot: "),
}


def test_every_scenario_has_an_expected_health() -> None:
    assert set(EXPECTED_HEALTH) == set(scenarios.SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
def test_the_health_of_each_situation_the_state_machine_produces(scenario: str) -> None:
    expected_status, message_start = EXPECTED_HEALTH[scenario]
    status, message = health(scenarios.SCENARIOS[scenario]())
    assert (status, message[: len(message_start)]) == (expected_status, message_start)


def test_the_health_message_carries_the_conditions_message() -> None:
    obj = scenarios.insufficient_data()
    reconciling = find_condition(
        LogicBundleStatus.model_validate(obj["status"]).conditions, conditions.RECONCILING
    )
    assert reconciling is not None
    assert health(obj) == ("Progressing", f"InsufficientData: {reconciling.message}")
    assert "too few samples" in reconciling.message


def test_a_suspended_bundle_that_had_stalled_says_so_in_the_message() -> None:
    _, message = health(scenarios.suspended_while_stalled())
    assert "(stalled before: RolledBack: " in message


def test_a_ready_condition_older_than_the_generation_is_not_trusted() -> None:
    obj = scenarios.first_install_ready()
    obj["metadata"]["generation"] = 2
    obj["status"]["observedGeneration"] = 2  # status written, Ready not (yet) recomputed
    assert health(obj) == ("Progressing", "Waiting for the Ready condition of generation 2")


def test_ready_false_without_a_rollout_or_a_stall_is_degraded() -> None:
    obj = scenarios.first_install_ready()
    for condition in obj["status"]["conditions"]:
        if condition["type"] == conditions.READY:
            condition.update(
                status="False", reason=conditions.RESOLVE_FAILED, message="registry unreachable"
            )
    assert health(obj) == ("Degraded", "ResolveFailed: registry unreachable")


def test_a_source_check_failing_while_retried_is_degraded_not_progressing() -> None:
    obj = scenarios.first_install_ready()
    for condition in obj["status"]["conditions"]:
        if condition["type"] == conditions.READY:
            condition.update(
                status="False", reason=conditions.RESOLVE_FAILED, message="registry unreachable"
            )
        if condition["type"] == conditions.RECONCILING:
            condition.update(status="True", reason=conditions.RESOLVE_FAILED, message="retrying")
    assert health(obj) == ("Degraded", "ResolveFailed: registry unreachable")


def test_numbers_that_arrive_as_strings_are_still_compared_as_numbers() -> None:
    # Argo CD hands json.Number values to Lua as strings.
    obj = scenarios.first_install_ready()
    obj["metadata"]["generation"] = "1"
    obj["status"]["observedGeneration"] = "1"
    assert health(obj)[0] == "Healthy"


def test_the_sandbox_has_no_string_library_as_in_argo_cd() -> None:
    with pytest.raises(Exception, match="attempt to index"):
        run('return ("x"):upper()', {})
    with pytest.raises(Exception, match="attempt to index"):
        run("return string.format('%d', 1)", {})
    assert run("return require('os').io", {}) is None
    assert run("return require('os').execute", {}) is None
    date = "return require('os').date('!%Y-%m-%dT%H:%M:%SZ')"
    assert run(date, {}, now=NOW) == "2025-05-01T12:00:00Z"


def test_the_global_os_is_nil_as_in_argo_cds_sandbox_for_argocd_cm_scripts() -> None:
    # Argo CD's util/lua registers its safe os functions under the table
    # library's name: os.date in an argocd-cm action fails there ("attempt to
    # index a non-table object(nil) with key 'date'"); require("os") works.
    with pytest.raises(Exception, match="attempt to index"):
        run("return os.date('!%Y')", {}, now=NOW)
    assert run("local os = require('os') return os.time()", {}, now=NOW) == NOW


# --- actions ------------------------------------------------------------------------


@pytest.mark.parametrize("name", argocd.ACTIONS)
def test_an_action_only_sets_the_requested_action_annotation(name: str) -> None:
    obj = scenarios.waiting_for_promotion()
    obj["metadata"]["annotations"] = {"team": "shop"}
    result = action(name, obj, now=NOW)
    annotations = result["metadata"].pop("annotations")
    obj["metadata"].pop("annotations")
    assert result == obj
    assert annotations["team"] == "shop"
    requested = parse_action(annotations[names.ANNOTATION_REQUESTED_ACTION])
    assert requested.action == name
    assert requested.token == "argocd-20250501T120000Z-1001"


def test_an_action_on_an_object_without_annotations_creates_them() -> None:
    result = action("promote", scenarios.waiting_for_promotion(), now=NOW)
    assert set(result["metadata"]["annotations"]) == {names.ANNOTATION_REQUESTED_ACTION}


def test_the_token_differs_with_the_time_and_with_the_resource_version() -> None:
    obj = scenarios.waiting_for_promotion()

    def token(o: dict[str, Any], now: int) -> str:
        value = action("promote", o, now=now)["metadata"]["annotations"]
        return parse_action(value[names.ANNOTATION_REQUESTED_ACTION]).token

    later = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1002"}}
    assert token(obj, NOW) == token(obj, NOW)
    assert len({token(obj, NOW), token(obj, NOW + 1), token(later, NOW)}) == 3


def test_without_a_pinned_clock_the_token_reads_the_real_time() -> None:
    value = action("abort", scenarios.mid_stage_rolling())["metadata"]["annotations"]
    token = parse_action(value[names.ANNOTATION_REQUESTED_ACTION]).token
    assert token.startswith("argocd-" + datetime.now(UTC).strftime("%Y"))


def test_the_three_actions_differ_only_in_the_action_they_request() -> None:
    texts = {name: argocd.action_script(name).replace(name, "ACTION") for name in argocd.ACTIONS}
    assert len(set(texts.values())) == 1


def _status_after(obj: dict[str, Any], requested: dict[str, Any], **kw: Any) -> LogicBundleStatus:
    """Feed the annotation the Argo CD action wrote to the real state machine."""
    value = requested["metadata"]["annotations"][names.ANNOTATION_REQUESTED_ACTION]
    return step(
        status=LogicBundleStatus.model_validate(obj["status"]), action=parse_action(value), **kw
    ).status


def test_promote_from_argo_cd_moves_a_gated_stage_on() -> None:
    spec, status, reports = scenarios.active_stage(scenarios.GATED, skip_analysis=True)
    obj = scenarios.as_object(spec, status)
    after = _status_after(
        obj, action("promote", obj, now=NOW), spec=spec, reports=reports, now=T0 + 20 * scenarios.S
    )
    assert (status.stage, after.stage) == ("internal", "all")
    assert after.last_handled_action is not None
    assert after.last_handled_action.startswith("promote@argocd-")


def test_abort_from_argo_cd_stalls_the_rollout_in_flight() -> None:
    spec, status, reports = scenarios.active_stage(scenarios.JUDGED)
    obj = scenarios.as_object(spec, status)
    after = _status_after(
        obj, action("abort", obj, now=NOW), spec=spec, reports=reports, now=T0 + 20 * scenarios.S
    )
    stalled = find_condition(after.conditions, conditions.STALLED)
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "Aborted")
    assert health(scenarios.as_object(spec, after))[0] == "Degraded"


def test_retry_from_argo_cd_restarts_a_rolled_back_candidate() -> None:
    obj = scenarios.rolled_back()
    spec = make_spec(stages=scenarios.JUDGED)
    after = _status_after(
        obj,
        action("retry", obj, now=NOW),
        spec=spec,
        reports=pods(10, internal=(0, 1)),
        now=T0 + 30 * scenarios.S,
    )
    assert (after.candidate_digest, after.stage) == (D2, "internal")
    assert health(scenarios.as_object(spec, after))[0] == "Progressing"


# --- discovery ----------------------------------------------------------------------

ENABLED = {
    "no status": set(),
    "first install ready": set(),
    "mid-stage rolling": {"promote", "abort", "retry"},
    "paused": {"promote", "abort", "retry"},
    "waiting for a manual gate": {"promote", "abort", "retry"},
    "insufficient data": {"promote", "abort", "retry"},
    "rolled back": {"retry"},
    "aborted": {"retry"},
    "rolled back by request": {"retry"},
    "suspended": set(),
    "suspended while stalled": set(),
    "verification failed": set(),
    "resolve failed": set(),
    "invalid source": set(),
}


@pytest.mark.parametrize("scenario", sorted(ENABLED))
def test_discovery_offers_the_actions_the_operator_would_act_on(scenario: str) -> None:
    offered = discovery(scenarios.SCENARIOS[scenario]())
    assert set(offered) == set(argocd.ACTIONS)
    enabled = {name for name, settings in offered.items() if not settings.get("disabled")}
    assert enabled == ENABLED[scenario]


# --- packaging and the argocd-cm generator --------------------------------------------


def test_the_lua_files_are_package_data() -> None:
    root = importlib.resources.files("logicbundle.gitops.argocd")
    paths = [
        ("health.lua",),
        ("actions", "discovery.lua"),
        *(("actions", name, "action.lua") for name in argocd.ACTIONS),
    ]
    for path in paths:
        assert root.joinpath(*path).is_file(), path


def test_the_configmap_patch_holds_the_scripts_verbatim() -> None:
    patch = yaml.safe_load(argocd.render_configmap_patch())
    assert patch["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    data = patch["data"]
    assert set(data) == {
        "resource.customizations.health.logicbundle.io_LogicBundle",
        "resource.customizations.actions.logicbundle.io_LogicBundle",
    }
    assert data["resource.customizations.health.logicbundle.io_LogicBundle"] == (
        argocd.health_script()
    )
    actions = yaml.safe_load(data["resource.customizations.actions.logicbundle.io_LogicBundle"])
    assert actions["discovery.lua"] == argocd.discovery_script()
    assert [d["name"] for d in actions["definitions"]] == list(argocd.ACTIONS)
    for definition in actions["definitions"]:
        assert definition["action.lua"] == argocd.action_script(definition["name"])


def test_the_health_check_from_the_generated_configmap_runs() -> None:
    patch = yaml.safe_load(argocd.render_configmap_patch(namespace=None))
    script = patch["data"]["resource.customizations.health.logicbundle.io_LogicBundle"]
    assert "namespace" not in patch["metadata"]
    assert health(scenarios.first_install_ready(), script=script)[0] == "Healthy"


def test_the_generator_prints_yaml_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert generator_main([]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Argo CD health check")
    assert yaml.safe_load(text) == argocd.configmap_patch()
    assert generator_main(["-o", "json", "-n", "gitops"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["metadata"]["namespace"] == "gitops"


def test_an_unknown_action_script_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Argo CD action 'rollback'"):
        argocd.action_script("rollback")
