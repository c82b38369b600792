"""A LogicBundle in a namespace the operator does not serve is left alone (issue 11, defect 6).

kopf's filters keep the bundle's handlers (finalizer, daemon, status, deletion)
off it, and the published states loaded at start-up skip it; the command line
builds the served set from its flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import pytest

from logicbundle.api.namespaces import ServedNamespaces
from logicbundle.cli import build_parser
from logicbundle.controller._handlers import (
    ControllerSettings,
    Memo,
    _load_rules,
    _served,
    register,
)
from logicbundle.distributor import KubeSource, RuleTargets, TargetStore
from tests.controller.test_reconcile import SPEC
from tests.rollout._fixtures import D1

SERVED = ServedNamespaces.of(operator_namespace="lb-ops")


def _memo(tmp_path: Path, served: ServedNamespaces = SERVED) -> Memo:
    return Memo(settings=ControllerSettings(cache_dir=tmp_path, served=served))


@pytest.mark.parametrize(
    ("namespace", "handled"),
    [("shop", True), ("kube-system", False), ("lb-ops", False), ("kube-public", False)],
)
def test_only_the_logicbundles_of_served_namespaces_are_handled(
    tmp_path: Path, namespace: str, handled: bool
) -> None:
    assert _served(memo=_memo(tmp_path), namespace=namespace) is handled


def test_every_logicbundle_handler_is_filtered_by_the_served_namespaces() -> None:
    """The event, the daemon (status writes) and the deletion (its finalizer)."""
    registry = kopf.OperatorRegistry()
    register(registry)
    handlers = [
        handler
        for handlers in (
            registry._watching.get_all_handlers(),
            registry._spawning.get_all_handlers(),
            registry._changing.get_all_handlers(),
        )
        for handler in handlers
        if handler.selector is not None and handler.selector.any_name == "logicbundles"
    ]
    assert {handler.id for handler in handlers} == {"bundle_changed", "run_bundle", "release"}
    assert all(handler.when is _served for handler in handlers), handlers


def test_the_states_loaded_at_start_up_skip_the_namespaces_not_served() -> None:
    def item(namespace: str) -> dict[str, Any]:
        state = {"bundle": "rules", "stable": D1, "revision": 1}
        return {
            "metadata": {"namespace": namespace, "name": "rules"},
            "spec": SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": {"stableDigest": D1, "targetState": state},
        }

    class Custom:
        def list_cluster_custom_object(self, *_: Any) -> dict[str, Any]:
            return {"items": [item("shop"), item("kube-system"), item("lb-ops")]}

    class Kube:
        custom = Custom()

    rules = RuleTargets(TargetStore())
    assert _load_rules(Kube(), rules, (), SERVED) == 1  # type: ignore[arg-type]
    assert rules.bundles() == {("shop", "rules")}


@pytest.mark.parametrize(
    ("argv", "served"),
    [
        (
            ["operator", "--operator-namespace", "lb-ops", "--exclude-namespace", "batch"],
            ServedNamespaces.of(operator_namespace="lb-ops", exclude=["batch"]),
        ),
        (
            ["operator", "-n", "kube-system", "-n", "team-a"],
            ServedNamespaces(named=("kube-system", "team-a")),
        ),
    ],
    ids=["cluster-wide", "named"],
)
def test_the_command_line_serves_what_its_flags_say(
    argv: list[str], served: ServedNamespaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logicbundle import cli

    seen: list[Any] = []

    def run_operator(settings: Any) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr("logicbundle.controller.run_operator", run_operator)
    assert cli.main(argv) == 0
    assert seen[0].served == served
    args = build_parser().parse_args(
        ["distributor", "--cache-dir", "/c", "--exclude-namespace", "lb-ops"]
    )
    assert args.exclude_namespace == ["lb-ops"]


def test_the_replicas_cluster_wide_watches_leave_out_the_namespaces_not_served() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Api:
        def __getattr__(self, name: str) -> Any:
            return lambda *_, **params: calls.append((name, params))

    source = KubeSource(None, field_selector=SERVED.field_selector)
    source._core = Api()  # type: ignore[assignment]
    source._custom = Api()  # type: ignore[assignment]
    source.bundles(None, watch=True)
    source.pods(None)
    source.pods("shop")
    selectors = [params.get("field_selector") for _, params in calls]
    assert selectors == [SERVED.field_selector, SERVED.field_selector, None]
