"""The controller sets ResolveFailed when the source check fails, and clears it after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from logicbundle.api import conditions
from logicbundle.controller._reconcile import Runtime, reconcile
from logicbundle.oci import RegistryUnavailableError
from tests.controller.test_reconcile import SPEC, FakeKube, _body, _snapshots, runtime  # noqa: F401
from tests.rollout._fixtures import T0, installed, pods


def _ready(kube: FakeKube) -> dict[str, Any]:
    (status,) = [call[1][0] for call in kube.calls if call[0] == "status"][-1:]
    return next(c for c in status["conditions"] if c["type"] == conditions.READY)


def test_an_unreachable_registry_is_ready_false_resolve_failed_with_an_event(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, kube, events = runtime
    status, reports = installed(SPEC, pods(2))

    def unreachable(*_: Any, **__: Any) -> None:
        raise RegistryUnavailableError("resolving registry.example/shop/pricing:v1: unreachable")

    monkeypatch.setattr("logicbundle.controller._reconcile.resolve_and_verify", unreachable)
    asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))

    ready = _ready(kube)
    assert (ready["status"], ready["reason"]) == ("False", conditions.RESOLVE_FAILED)
    assert "unreachable" in ready["message"]
    assert any(kind == "Warning" for kind, _, _ in events)
    # No pod is written: the stable digest keeps serving (the state is published as it was).
    assert [kind for kind, _ in kube.calls] == ["status", "state"]
    state = next(call[1][1] for call in kube.calls if call[0] == "state")
    assert state["stable"] == status.stable_digest
