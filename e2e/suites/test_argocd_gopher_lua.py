"""The Argo CD health check and actions, run by Argo CD's own ``util/lua`` on gopher-lua.

``e2e/harness/argolua`` (built from github.com/argoproj/argo-cd/v3, see
``e2e/harness/argocd.py``) is configured from the argocd-cm patch logicbundle
ships, exactly as an Argo CD installation reads it. Every situation the real
rollout state machine produces (``tests/gitops/scenarios.py``) is checked
here against the expectations of the unit tests, and the unit tests' lupa
copy must agree with it message for message; the live objects of the e2e
rollouts go through the same check in ``test_rollout.py`` and
``test_kstatus.py`` (``argocd.checked_health``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from e2e.harness import argocd as argo
from logicbundle.api import LogicBundleStatus, conditions, find_condition, names, parse_action
from logicbundle.gitops import argocd
from tests.gitops import lua_runner, scenarios
from tests.gitops.test_argocd_lua import ENABLED, EXPECTED_HEALTH
from tests.rollout._fixtures import T0
from tests.rollout._fixtures import run as step

TOKEN = re.compile(r"^argocd-\d{8}T\d{6}Z-1001$")


@pytest.mark.parametrize("scenario", sorted(scenarios.SCENARIOS))
def test_argo_cds_lua_gives_each_situation_its_health_and_lupa_agrees(scenario: str) -> None:
    expected_status, message_start = EXPECTED_HEALTH[scenario]
    status, message = argo.checked_health(scenarios.SCENARIOS[scenario]())
    assert (status, message[: len(message_start)]) == (expected_status, message_start)


def test_numbers_as_argo_cd_decodes_them_still_compare_as_numbers() -> None:
    obj = scenarios.first_install_ready()
    obj["metadata"]["generation"] = 2
    obj["status"]["observedGeneration"] = 2
    assert argo.checked_health(obj) == (
        "Progressing",
        "Waiting for the Ready condition of generation 2",
    )


@pytest.mark.parametrize("scenario", sorted(ENABLED))
def test_argo_cd_offers_the_actions_the_operator_would_act_on(scenario: str) -> None:
    obj = scenarios.SCENARIOS[scenario]()
    offered = argo.discovery(obj)
    assert set(offered) == set(argocd.ACTIONS)
    enabled = {name for name, item in offered.items() if not item.get("disabled")}
    assert enabled == ENABLED[scenario]
    lupa = lua_runner.discovery(obj)
    assert {n: bool(s.get("disabled")) for n, s in lupa.items()} == {
        n: bool(item.get("disabled")) for n, item in offered.items()
    }
    assert all(item.get("displayName") and item.get("iconClass") for item in offered.values())


@pytest.mark.parametrize("name", argocd.ACTIONS)
def test_an_action_in_argo_cd_only_sets_the_requested_action_annotation(name: str) -> None:
    obj = scenarios.waiting_for_promotion()
    obj["metadata"]["annotations"] = {"team": "shop"}
    patched = argo.action(name, obj)
    annotations = patched["metadata"].pop("annotations")
    obj["metadata"].pop("annotations")
    assert patched == obj
    assert annotations["team"] == "shop"
    requested = parse_action(annotations[names.ANNOTATION_REQUESTED_ACTION])
    assert requested.action == name
    assert TOKEN.match(requested.token), requested.token


def test_an_action_on_an_object_without_annotations_creates_them() -> None:
    patched = argo.action("promote", scenarios.waiting_for_promotion())
    assert set(patched["metadata"]["annotations"]) == {names.ANNOTATION_REQUESTED_ACTION}


def test_abort_from_argo_cds_lua_stalls_the_rollout_in_the_state_machine() -> None:
    spec, status, reports = scenarios.active_stage(scenarios.JUDGED)
    obj = scenarios.as_object(spec, status)
    value = argo.action("abort", obj)["metadata"]["annotations"][names.ANNOTATION_REQUESTED_ACTION]
    after = step(
        spec=spec,
        status=LogicBundleStatus.model_validate(obj["status"]),
        action=parse_action(value),
        reports=reports,
        now=T0 + 20 * scenarios.S,
    ).status
    stalled = find_condition(after.conditions, conditions.STALLED)
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "Aborted")
    assert argo.checked_health(scenarios.as_object(spec, after))[0] == "Degraded"


def test_an_action_reaching_for_the_global_os_fails_in_argo_cd() -> None:
    # Regression fixture: until this suite ran the actions in Argo CD's own
    # util/lua, they called os.date, which the argocd-cm sandbox does not
    # open as a global ("attempt to index a non-table object(nil) with key
    # 'date'"); the lupa copy had the global. Both now refuse it.
    script = 'obj.metadata.labels = {at = os.date("!%Y")}\nreturn obj'
    data: dict[str, Any] = dict(argocd.configmap_patch()["data"])
    data[f"resource.customizations.actions.{argocd.CONFIGMAP_KEY_SUFFIX}"] = (
        "discovery.lua: return {}\ndefinitions:\n- name: stamp\n  action.lua: |\n"
        + "".join(f"    {line}\n" for line in script.splitlines())
    )
    with pytest.raises(argo.ArgoLuaError, match="attempt to index"):
        argo.action("stamp", scenarios.waiting_for_promotion(), data=data)
    with pytest.raises(Exception, match="attempt to index"):
        lua_runner.run(script, scenarios.waiting_for_promotion())
