"""A LogicBundle no operator has seen yet must read as in progress, not done.

kstatus (what Flux's health checks and ``kubectl wait``-style tools use) reads
an object without ``status`` as ``Current``: a Kustomization with ``wait: true``
passed its health check 20 ms after applying a new LogicBundle, before the
operator had looked at it (found by ``e2e/suites/test_flux.py``). The CRD's
schema therefore defaults ``status.observedGeneration`` to 0: the API server
serves a new object with ``status: {observedGeneration: 0}``, which kstatus
reads as ``InProgress`` (generation 1 not observed) until the operator writes
its first status. The real kstatus and API server check it in
``e2e/suites/test_kstatus.py``.
"""

from __future__ import annotations

from typing import Any

from logicbundle.api import LogicBundleStatus, crd
from tests.gitops import scenarios
from tests.gitops.lua_runner import health


def _status_schema() -> dict[str, Any]:
    version = crd.crd_document()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def test_the_crd_defaults_a_missing_status_to_generation_0_observed() -> None:
    default = _status_schema()["default"]
    assert default == {"observedGeneration": 0}
    # A valid status for the operator to read, that no generation (>= 1) matches.
    assert LogicBundleStatus.model_validate(default).observed_generation == 0


def test_argo_cd_reads_the_defaulted_status_as_waiting_for_the_operator() -> None:
    obj = scenarios.no_status()
    obj["status"] = dict(_status_schema()["default"])
    status, message = health(obj)
    assert (status, message) == ("Progressing", "Waiting for the operator to report a status")
