"""Errors decide the conditions: every error of the source step, through one reconcile.

Issue 11, defect 2.  Each error the source step can raise before a digest is
known is classified in one place (``controller._source.failure_of``): a
retry may fix it (``ResolveFailed``: Ready=False, Reconciling=True,
Stalled=False, retried with backoff) or only a change of the spec or of a
Secret/ConfigMap it names fixes it (``InvalidSource``: Stalled=True, no
backoff retries).  Either way the stable digest keeps serving, a warning
event names the cause, and the status says it (before, every such error was
``ResolveFailed`` retried every 15 s, and a trusted root that does not load
failed whatever digest was being checked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from logicbundle.api import conditions
from logicbundle.controller import _reconcile, _source
from logicbundle.controller._reconcile import RETRY_REQUEUE, Runtime, reconcile
from logicbundle.controller._source import ConfigError, SourceCheckError
from logicbundle.errors import LogicBundleError
from logicbundle.oci import (
    AccessDeniedError,
    AuthenticationError,
    InsecureTransportError,
    InvalidManifestError,
    InvalidReferenceError,
    NotFoundError,
    RegistryRequestError,
    RegistryUnavailableError,
    TLSVerificationError,
)
from tests.controller.test_reconcile import SPEC, FakeKube, _body, _snapshots, runtime  # noqa: F401
from tests.rollout._fixtures import T0, installed, pods

Runtime_ = tuple[Runtime, FakeKube, list[tuple[str, str, str]]]

RETRIED: list[Callable[[], LogicBundleError]] = [
    lambda: RegistryUnavailableError("resolving registry.example/shop/pricing:v1: unreachable"),
    lambda: NotFoundError("registry.example/shop/nothing:v1 not found"),
    lambda: AuthenticationError("registry.example refused the credentials (401)"),
    lambda: AccessDeniedError("registry.example denied pull of shop/pricing (403)"),
    lambda: TLSVerificationError("registry.example: certificate verify failed"),
    lambda: RegistryRequestError("registry.example answered 400"),
    lambda: InvalidManifestError("the manifest of v1 is not JSON"),
    lambda: ConfigError("Secret shop/creds not found"),
    lambda: SourceCheckError("checking the source failed unexpectedly (KeyError)"),
]
STALLING: list[Callable[[], LogicBundleError]] = [
    lambda: InvalidReferenceError("'registry.example/Shop' is not a valid reference"),
    lambda: InsecureTransportError("registry.example speaks plain HTTP; source.insecure is false"),
    lambda: _source.InvalidTrustedRootError("the trusted root has no transparency logs (Rekor)"),
]
RETRIED_IDS = [
    "RegistryUnavailable",
    "ArtifactNotFound",
    "AuthenticationFailed",
    "AccessDenied",
    "TLSVerificationFailed",
    "RegistryRequestRejected",
    "InvalidManifest",
    "InvalidConfiguration",
    "SourceCheckFailed",
]
STALLING_IDS = ["InvalidReference", "InsecureTransportRefused", "InvalidTrustedRoot"]


def _by_type(kube: FakeKube) -> dict[str, dict[str, Any]]:
    written = [call[1][0] for call in kube.calls if call[0] == "status"][-1]
    return {c["type"]: c for c in written["conditions"]}


def _newer(body: dict[str, Any], generation: int) -> dict[str, Any]:
    """``body`` edited: a newer generation, newer than anything the fake API server echoed."""
    body["metadata"]["generation"] = generation
    body["metadata"]["resourceVersion"] = "100000"
    return body


def _fake_clock(rt: Runtime) -> list[float]:
    """The runtime's clock, moved by hand from now on (a started operator's)."""
    clock = [rt.clock()]
    rt.clock = lambda: clock[0]
    return clock


def _failing(monkeypatch: pytest.MonkeyPatch, make: Callable[[], LogicBundleError]) -> list[int]:
    """Make every source check raise ``make()``; return the list the checks are counted in."""
    calls: list[int] = []

    def failing(*_: Any, **__: Any) -> None:
        calls.append(1)
        raise make()

    monkeypatch.setattr("logicbundle.controller._reconcile.resolve_and_verify", failing)
    return calls


@pytest.mark.parametrize("make", RETRIED, ids=RETRIED_IDS)
def test_an_error_a_retry_may_fix_is_resolve_failed_reconciling_and_retried(
    runtime: Runtime_,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[], LogicBundleError],
) -> None:
    rt, kube, events = runtime
    error = make()
    status, reports = installed(SPEC, pods(2))
    _failing(monkeypatch, make)

    wait = asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))

    by_type = _by_type(kube)
    assert {t: (c["status"], c["reason"]) for t, c in by_type.items() if t != "Verified"} == {
        "Ready": ("False", conditions.RESOLVE_FAILED),
        "Reconciling": ("True", conditions.RESOLVE_FAILED),
        "Stalled": ("False", conditions.RESOLVE_FAILED),
    }
    assert by_type["Ready"]["message"].startswith(f"{error.reason}: {error.message}")
    assert "pods keep" in by_type["Ready"]["message"]
    assert [(kind, reason) for kind, reason, _ in events] == [("Warning", error.reason)]
    state = next(call[1][1] for call in kube.calls if call[0] == "state")
    assert state["stable"] == status.stable_digest, "the stable digest keeps serving"
    assert wait == RETRY_REQUEUE


@pytest.mark.parametrize("make", STALLING, ids=STALLING_IDS)
def test_an_error_only_a_change_fixes_is_stalled_invalid_source_and_not_retried(
    runtime: Runtime_,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[], LogicBundleError],
) -> None:
    rt, kube, events = runtime
    error = make()
    status, reports = installed(SPEC, pods(2))
    kube.spec = _body(SPEC, status)["spec"]
    checks = _failing(monkeypatch, make)
    clock = _fake_clock(rt)
    body = _body(SPEC, status)

    wait = asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))

    by_type = _by_type(kube)
    assert {t: (c["status"], c["reason"]) for t, c in by_type.items() if t != "Verified"} == {
        "Ready": ("False", conditions.INVALID_SOURCE),
        "Reconciling": ("False", conditions.INVALID_SOURCE),
        "Stalled": ("True", conditions.INVALID_SOURCE),
    }
    assert by_type["Stalled"]["message"].startswith(f"{error.reason}: {error.message}")
    assert by_type["Verified"] == next(
        c
        for c in status.model_dump(mode="json", by_alias=True)["conditions"]
        if c["type"] == conditions.VERIFIED
    ), "no digest is failed for it"
    assert [(kind, reason) for kind, reason, _ in events] == [("Warning", error.reason)]
    state = next(call[1][1] for call in kube.calls if call[0] == "state")
    assert state["stable"] == status.stable_digest, "the stable digest keeps serving"
    interval = 300.0  # SPEC's source interval (the default, 5m)
    assert wait == interval, "no backoff retries: the next look is at the source interval"

    # Woken well past the first retry of a retryable error: not checked again.
    clock[0] += 4 * RETRY_REQUEUE
    asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))
    assert len(checks) == 1
    # A change of the spec is checked at once.
    body = _newer(_body(SPEC, status), 2)
    asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))
    assert len(checks) == 2


def test_retries_back_off_from_15_s_doubling_up_to_the_source_interval(
    runtime: Runtime_,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, kube, events = runtime
    status, reports = installed(SPEC, pods(2))
    kube.spec = _body(SPEC, status)["spec"]
    checks = _failing(monkeypatch, lambda: RegistryUnavailableError("registry.example: down"))
    clock = _fake_clock(rt)
    body = _body(SPEC, status)

    waits = []
    for _ in range(7):
        wait = asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))
        waits.append(wait)
        # Woken just before the wait is over (a pod changed): no check in between.
        clock[0] += wait - 1
        asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0))
        clock[0] += 1
    assert waits == [15.0, 30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert _reconcile.RETRY_LIMIT == 300.0
    assert len(checks) == 7
    assert len(events) == 1, "the same warning is posted once"

    # A new generation starts the backoff over.
    monkeypatch.setattr(
        "logicbundle.controller._reconcile.resolve_and_verify",
        lambda *_, **__: (_ for _ in ()).throw(NotFoundError("registry.example/shop: gone")),
    )
    body = _newer(body, 2)
    assert asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0)) == 15.0


def test_a_short_source_interval_caps_the_backoff_but_never_below_15_s(
    runtime: Runtime_,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, kube, _ = runtime
    spec = SPEC.model_copy(update={"source": SPEC.source.model_copy(update={"interval": "40s"})})
    status, reports = installed(spec, pods(2))
    kube.spec = _body(spec, status)["spec"]
    _failing(monkeypatch, lambda: RegistryUnavailableError("registry.example: down"))
    clock = _fake_clock(rt)
    body = _body(spec, status)
    waits = []
    for _ in range(4):
        waits.append(asyncio.run(reconcile(rt, body=body, pods=_snapshots(reports), now=T0)))
        clock[0] += waits[-1]
    assert waits == [15.0, 30.0, 40.0, 40.0]


def test_the_classification_is_one_table_and_covers_every_error_above() -> None:
    assert [make().reason for make in RETRIED] == RETRIED_IDS
    assert [make().reason for make in STALLING] == STALLING_IDS
    for make in RETRIED:
        failure = _source.failure_of(make())
        assert (failure.reason, failure.stalled) == (conditions.RESOLVE_FAILED, False)
    for make in STALLING:
        failure = _source.failure_of(make())
        assert (failure.reason, failure.stalled) == (conditions.INVALID_SOURCE, True)
    assert {type(make()) for make in STALLING} == set(_source.STALLING)
