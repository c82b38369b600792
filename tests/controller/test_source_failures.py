"""Whatever goes wrong in the source step ends as a condition and an event, never an escape.

Issue 11, defect 3: an exception outside the project's errors (an ``OSError``,
a library's own) failed the reconcile on every retry, with no condition and no
event.  Tied to a digest, it is that digest's ``Verified=False``
(``tests/controller/test_source_step.py``); before the digest is known, it is
a retryable ``SourceCheckFailed``: ``Ready=False`` with ``ResolveFailed``, the
stable digest serving, and a warning event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from logicbundle.api import conditions
from logicbundle.controller._reconcile import Runtime, reconcile
from tests.controller.test_reconcile import SPEC, FakeKube, _body, _snapshots, runtime  # noqa: F401
from tests.rollout._fixtures import T0, installed, pods


def test_a_foreign_exception_before_the_digest_is_ready_false_with_an_event_not_an_escape(
    runtime: tuple[Runtime, FakeKube, list[tuple[str, str, str]]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rt, kube, events = runtime
    status, reports = installed(SPEC, pods(2))

    def library_bug(*_: Any, **__: Any) -> None:
        raise KeyError("a library's own error, quoting its input")

    monkeypatch.setattr("logicbundle.controller._source.trust_policy", library_bug)
    asyncio.run(reconcile(rt, body=_body(SPEC, status), pods=_snapshots(reports), now=T0))

    written = [call[1][0] for call in kube.calls if call[0] == "status"][-1]
    ready = next(c for c in written["conditions"] if c["type"] == conditions.READY)
    assert (ready["status"], ready["reason"]) == ("False", conditions.RESOLVE_FAILED)
    assert "failed unexpectedly (KeyError)" in ready["message"]
    assert "quoting its input" not in ready["message"]
    assert [reason for kind, reason, _ in events if kind == "Warning"] == ["SourceCheckFailed"]
    assert all("quoting its input" not in message for _, _, message in events)
    state = next(call[1][1] for call in kube.calls if call[0] == "state")
    assert state["stable"] == status.stable_digest, "the stable digest keeps serving"
