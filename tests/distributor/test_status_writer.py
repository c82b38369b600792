"""The one per-pod write left: the readiness condition, only when it changes."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest

from logicbundle.api import names
from logicbundle.distributor import PodActivity, PodStatusWriter
from logicbundle.distributor._status import ready_condition

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def activity(*, ready: bool | None, changed: bool = True) -> PodActivity:
    return PodActivity(
        namespace="shop",
        name="web-0",
        uid="u0",
        active=MappingProxyType({"pricing": "sha256:" + "1" * 64}),
        ready=ready,
        ready_changed=changed,
        message="every assigned bundle is active",
    )


class FakeCore:
    def __init__(self) -> None:
        self.status_patches: list[tuple[str, str, Any]] = []
        self.pod_patches = 0

    def patch_namespaced_pod_status(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        self.status_patches.append((namespace, name, body))

    def patch_namespaced_pod(self, *_: Any, **__: Any) -> None:
        self.pod_patches += 1


def writer(current: Any = None) -> tuple[PodStatusWriter, FakeCore]:
    w = PodStatusWriter(api_client=None, now=lambda: NOW, current=current)
    core = FakeCore()
    w._core = core  # type: ignore[assignment]
    return w, core


def test_a_readiness_change_is_one_status_patch_with_the_uid_and_no_annotation() -> None:
    w, core = writer()
    w.write(activity(ready=True))
    [(ns, name, body)] = core.status_patches
    assert (ns, name) == ("shop", "web-0")
    assert body["metadata"] == {"uid": "u0"}, "the uid is a precondition; nothing else"
    [condition] = body["status"]["conditions"]
    assert condition["type"] == names.POD_CONDITION_READY and condition["status"] == "True"
    assert condition["lastTransitionTime"] == "2026-12-06T12:00:00Z"
    assert core.pod_patches == 0, "no annotation is written on the pod any more"


@pytest.mark.parametrize(
    ("shown", "ready", "changed", "needed"),
    [
        (None, True, True, True),  # nothing known of the pod: what the store says
        (None, True, False, False),
        (True, True, True, False),  # the pod already shows it (a restarted distributor)
        (False, True, False, True),  # the pod shows otherwise: write, whatever the store says
        (None, None, True, False),  # readiness unknown: never written
    ],
)
def test_the_writer_writes_only_what_the_pod_does_not_show(
    shown: bool | None, ready: bool | None, changed: bool, needed: bool
) -> None:
    w, _ = writer(current=lambda ns, name, uid: shown)
    assert w.needed(activity(ready=ready, changed=changed)) is needed


def test_the_current_readiness_is_asked_for_the_right_pod_and_uid() -> None:
    asked: list[tuple[str, str, str]] = []

    def current(ns: str, name: str, uid: str) -> bool | None:
        asked.append((ns, name, uid))
        return None

    w, _ = writer(current=current)
    w.needed(activity(ready=True))
    assert asked == [("shop", "web-0", "u0")]


def test_an_unknown_readiness_has_no_condition() -> None:
    assert ready_condition(activity(ready=None), now=NOW) is None
    pending = ready_condition(activity(ready=False, changed=False), now=NOW)
    assert pending is not None and pending["status"] == "False"
    assert "lastTransitionTime" not in pending, "no transition: the time is kept"
