"""The injected agent's user, group and pull policy are settings (issue 13 part 4).

OpenShift's restricted SCC assigns each namespace its own UID range and refuses
a pod that asks for another: there the operator is started with
``--agent-run-as-user=none --agent-run-as-group=none`` (the chart's
``agent.securityContext`` set to null), and the agent's container leaves both
to the platform while keeping the rest of its hardening.
"""

from __future__ import annotations

import dataclasses

import pytest

from logicbundle.cli import build_parser
from logicbundle.webhook import DEFAULT_RUN_AS, InjectionSettings
from tests.webhook._fixtures import OPTED_IN, SETTINGS, agent_of, logic_bundle, mutate, pod

HARDENING = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _agent(settings: InjectionSettings) -> dict[str, object]:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()], settings=settings)
    return agent_of(patched)


def test_by_default_the_agent_runs_as_the_images_non_root_ids() -> None:
    agent = _agent(SETTINGS)
    assert agent["securityContext"] == {
        **HARDENING,
        "runAsUser": DEFAULT_RUN_AS,
        "runAsGroup": DEFAULT_RUN_AS,
    }
    assert agent["imagePullPolicy"] == "IfNotPresent"


def test_unset_ids_are_left_to_the_platform_and_the_hardening_stays() -> None:
    settings = dataclasses.replace(SETTINGS, run_as_user=None, run_as_group=None)
    assert _agent(settings)["securityContext"] == HARDENING


def test_the_pull_policy_and_other_ids_are_what_the_settings_say() -> None:
    settings = dataclasses.replace(
        SETTINGS, run_as_user=1000680000, run_as_group=None, image_pull_policy="Always"
    )
    agent = _agent(settings)
    assert agent["securityContext"] == {**HARDENING, "runAsUser": 1000680000}
    assert agent["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(
    "change",
    [{"run_as_user": 0}, {"run_as_group": 0}, {"image_pull_policy": "Sometimes"}],
    ids=["root user", "root group", "unknown pull policy"],
)
def test_root_ids_and_unknown_pull_policies_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"root|image_pull_policy"):
        dataclasses.replace(SETTINGS, **change)  # type: ignore[arg-type]


def test_the_operator_flags_say_none_for_the_platform_and_refuse_root(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    defaults = parser.parse_args(["operator"])
    assert (defaults.agent_run_as_user, defaults.agent_run_as_group) == (65532, 65532)
    assert defaults.agent_image_pull_policy == "IfNotPresent"
    openshift = parser.parse_args(
        ["operator", "--agent-run-as-user=none", "--agent-run-as-group=none"]
    )
    assert (openshift.agent_run_as_user, openshift.agent_run_as_group) == (None, None)
    for bad in ("--agent-run-as-user=0", "--agent-run-as-group=root"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["operator", bad])
        assert exited.value.code == 2
    assert "non-root numeric id or none" in capsys.readouterr().err
