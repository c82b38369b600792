"""API writes per rollout step, counted by the API server itself: issue 10's BEFORE figure.

``python -m e2e.bench.bench_api_writes [--pods 20,200,2000]`` starts the local real control
plane (kwok nodes), the harness registry and ``logicbundle operator`` (a real process with its
embedded distributor), and for each size N sets up:

- two Deployments of opted-in pods, N pods in all, of which 1 % (at least one) carry
  ``logicbundle.io/cohort: internal`` (the canary's 5 % counts them: it adds 4 %);
- one simulated agent per pod (:class:`OrderedFleet`, bench_rollout's: a token bound to the
  pod from the TokenRequest API, a long-poll on the distributor, and a report each time its
  target changes; a real agent's periodic reports that change nothing cost no API write);
- a LogicBundle on v1, every pod reporting v1, with the default stage names (internal,
  canary 5 %, all), each held by a manual gate, so that each stage advance is one step.

Then, for every step, it scrapes kube-apiserver's ``/metrics`` just before triggering the step
and again once the step has settled, and prints the difference of ``apiserver_request_total``
for the mutating verbs (POST, PUT, PATCH, DELETE, DELETECOLLECTION, APPLY), grouped by
resource and subresource. The steps:

1. ``v2 apply -> internal``: ``kubectl apply`` of the v2 ref, until the first stage is entered
   and its pods report v2;
2. ``promote -> canary`` and 3. ``promote -> all``: the ``promote`` request (the
   ``logicbundle.io/requested-action`` annotation), until the next stage's pods report v2;
4. ``promote -> v2 stable``: the last gate, until the rollout completes;
5. ``v3 apply -> all on v3``: a bad v3 with builtin analysis and one ``all`` stage held by a
   pause (bench_rollout's rollback set-up), until every pod reports v3;
6. ``v3 analysis fails -> rollback``: the agents report 50 % errors for v3, until the
   analysis rolled every pod back to v2 (``Stalled``, ``RolledBack``);
7. ``v4 apply -> internal`` and 8. ``promote -> canary``: as 1 and 2;
9. ``abort -> all on v2``: the ``abort`` request, until every pod is back on v2 (``Stalled``,
   ``Aborted``).

The install of v1 is measured too, for reference.

Two more figures per step, to read the requests by: the pods whose target changed
(``moved``), and, from a watch on the size's pods (:class:`PodChanges`), the writes that
actually changed a pod and what they changed (the target annotation, the active annotation,
the ``bundles-ready`` condition, anything else). A PATCH that changes nothing is still a
request the API server admits, authorises and answers, but it writes nothing.
``etcd_requests_total`` (create, update, delete) is kept in the detail and the JSON; it counts
etcd transactions, retries of a conflicting update included, so it is not a count of writes.

A step has settled when, in this order: (a) the LogicBundle's status says what the step leads
to (stage and ``WaitingForPromotion``, or the stable digest and ``Ready``, or ``Stalled`` with
its reason; the handled request in ``status.lastHandledAction``) and counts every pod of every
digest active (``status.pods.byDigest[].active == assigned``, N in all); (b) every pod, read
from the API server, carries a target annotation, an active annotation equal to it and the
``bundles-ready`` condition True, its simulated agent runs that target, and the pods per target
match ``status.pods.byDigest``; (c) the API server's write counters of pods, pods/status,
logicbundles, logicbundles/status and events have not moved for ``--quiet`` seconds (default
3 s: longer than the operator's 2 s requeue while a rollout is in flight, so one more
reconcile at least found nothing to write); and (a) and (b) still hold after it. The "after"
scrape is the last one of (c). While v3 is held, the builtin analysis (every second) keeps
writing the status whatever the pods do, so in step 5 (c) leaves out logicbundles/status.

Every wait has a deadline. A step that does not settle within ``--step-timeout`` raises
:class:`NotSettledError` saying what it was waiting for and what it saw last. A size that does
not finish within ``--budget`` seconds (set-up included) is reported as not fitting on this
machine; the larger sizes are skipped and the exit status is 2. SIGTERM stops the run (exit
status 143); every process it started is stopped by its own pid, whatever the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from e2e.bench.bench_rollout import (
    ANALYSED,
    CRD_FILE,
    Api,
    Bench,
    Fleet,
    SimAgent,
    deployment,
    deployment_settled,
    make_namespace,
    pods_of,
)
from e2e.harness.cluster import Cluster
from e2e.harness.operator import LB_PATH, KeyPair, Operator
from e2e.harness.services import Registry
from logicbundle import contract
from logicbundle.api import actions, names
from logicbundle.api import conditions as cond
from logicbundle.distributor import facts_of

BUNDLE = "pricing"
APP = "web"
"""The label ``app`` of every pod of a size; the LogicBundle selects it."""
GATED: dict[str, Any] = {
    "skipAnalysis": True,
    "stages": [
        {
            "name": "internal",
            "internal": {"matchLabels": {names.LABEL_COHORT: names.COHORT_INTERNAL}},
            "manualGate": True,
        },
        {"name": "canary", "percent": 5, "manualGate": True},
        {"name": "all", "all": True, "manualGate": True},
    ],
}
"""The default stages, each held by a manual gate: every advance is a step of its own."""
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
STORED = frozenset({"create", "update", "delete"})
"""``etcd_requests_total`` operations that write."""
QUIET_SET = frozenset({"pods", "pods/status", "logicbundles", "logicbundles/status", "events"})
"""The rollout's own writes: a step has settled once these stop moving."""
POD_CATEGORIES = frozenset({"pods", "pods/status"})
BACKGROUND = frozenset({"leases", "reviews"})
"""Requests on a timer, whatever the rollout does: lease renewals and token reviews."""
COLUMNS = ("pods", "pods/status", "logicbundles", "logicbundles/status", "events", "leases")
"""Categories with a column of their own; the rest are ``reviews`` and ``other``."""
POLL = 0.25
"""Seconds between two looks at the LogicBundle's status."""
SCRAPE_EVERY = 0.5
"""Seconds between two scrapes of the API server's metrics while waiting for quiet."""


def _now() -> float:
    return time.monotonic()


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "-"


class OrderedFleet(Fleet):
    """bench_rollout's simulated agents, each sending one report at a time, like a real agent.

    In the base fleet two reports of one agent can be in flight at once: the errors injected
    for the candidate, and the stable digest the agent learned meanwhile. When they arrive out
    of order the distributor keeps the older one, and since a simulated agent reports only on
    a change nothing corrects it (a real agent's next periodic report would): the likely cause
    of a run at 2,000 pods, on a loaded machine, whose rollback never settled (353 pods still
    counted on the candidate). Here a report waits for the agent's previous one and is built
    once it may go, so the last report to arrive is always the agent's present state.
    """

    def __init__(self, distributor: str) -> None:
        super().__init__(distributor)
        self._sending: dict[tuple[str, str], asyncio.Lock] = {}

    async def report(self, agent: SimAgent) -> None:
        async with self._sending.setdefault((agent.namespace, agent.pod), asyncio.Lock()):
            await super().report(agent)


# -- the API server's own count of writes ------------------------------------------------------


@dataclass(frozen=True, order=True)
class WriteKey:
    """One series of ``apiserver_request_total``, reduced to what tells writes apart."""

    verb: str
    group: str
    resource: str
    subresource: str
    code: str

    @property
    def category(self) -> str:
        """``pods``, ``pods/status``, ``leases``, ``reviews``...: the columns of the tables."""
        if self.resource.endswith("reviews"):  # tokenreviews, subjectaccessreviews: never stored
            return "reviews"
        if self.resource in ("events", "leases"):  # core and events.k8s.io events alike
            return self.resource
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


_SAMPLE = re.compile(
    r"^(?P<name>apiserver_request_total|etcd_requests_total)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Writes:
    """Mutating requests the API server has answered, per series (cumulative or a delta)."""

    counts: Mapping[WriteKey, int]
    stored: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """``etcd_requests_total`` of create, update and delete, per (resource, operation): the
    writes that reached etcd. A PATCH that changes nothing is answered without one."""

    @classmethod
    def parse(cls, text: str) -> Writes:
        counts: dict[WriteKey, int] = {}
        stored: dict[tuple[str, str], int] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match is None:
                continue
            labels = dict(_LABEL.findall(match.group("labels")))
            if match.group("name") == "etcd_requests_total":
                if labels.get("operation") in STORED:
                    key_ = (labels.get("resource", ""), labels["operation"])
                    stored[key_] = stored.get(key_, 0) + round(float(match.group("value")))
                continue
            if labels.get("verb") not in MUTATING or labels.get("dry_run"):
                continue
            key = WriteKey(
                verb=labels["verb"],
                group=labels.get("group", ""),
                resource=labels.get("resource", ""),
                subresource=labels.get("subresource", ""),
                code=labels.get("code", ""),
            )
            counts[key] = counts.get(key, 0) + round(float(match.group("value")))
        return cls(counts, stored)

    def minus(self, before: Writes) -> Writes:
        delta = {k: v - before.counts.get(k, 0) for k, v in self.counts.items()}
        stored = {k: v - before.stored.get(k, 0) for k, v in self.stored.items()}
        return Writes({k: v for k, v in delta.items() if v}, {k: v for k, v in stored.items() if v})

    def stored_of(self, resource: str) -> int:
        """Writes of ``resource`` (any subresource: pods/status is pods) that reached etcd."""
        return sum(v for (r, _), v in self.stored.items() if r == resource)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_category(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for key, value in self.counts.items():
            out[key.category] += value
        return out

    def of(self, categories: frozenset[str]) -> int:
        return sum(v for k, v in self.counts.items() if k.category in categories)

    def detail(self) -> str:
        """``PATCH pods 42, POST events 3, ...``, largest first; refused requests apart."""
        merged: Counter[str] = Counter()
        for key, value in self.counts.items():
            name = f"{key.verb} {key.resource}" + (f"/{key.subresource}" if key.subresource else "")
            if key.group == "events.k8s.io":
                name += f".{key.group}"
            if not key.code.startswith("2"):
                name += f" (HTTP {key.code})"
            merged[name] += value
        return ", ".join(f"{k} {v}" for k, v in merged.most_common()) or "none"


async def scrape(api: Api) -> Writes:
    async with api.session.get(api.cluster.server + "/metrics") as resp:
        if resp.status != 200:
            raise RuntimeError(f"GET /metrics of kube-apiserver: HTTP {resp.status}")
        return Writes.parse(await resp.text())


class PodChanges:
    """What the stored writes to a namespace's pods changed, from a watch on them.

    ``apiserver_request_total`` counts requests, and a PATCH that changes nothing is a
    request too (the API server answers it without writing). Each write that does change a
    pod is one MODIFIED event of a watch: this sorts them by what changed, the target
    annotation, the active annotation, the ``bundles-ready`` condition, or anything else.
    """

    WATCHED = ("target", "active", "condition")
    """What :meth:`_view` holds, in its order."""
    CATEGORIES = (*WATCHED, "other")

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self._cluster, self._namespace = cluster, namespace
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=cluster.ssl_context()),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        self._seen: dict[str, tuple[str | None, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()
        self.gaps = 0
        """Times the watch had to start again from a fresh list (events may have been lost)."""

    @staticmethod
    def _view(pod: Mapping[str, Any]) -> tuple[str | None, ...]:
        annotations = pod["metadata"].get("annotations") or {}
        ready = next(
            (
                json.dumps(c, sort_keys=True)
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == names.POD_CONDITION_READY
            ),
            None,
        )
        return (
            # The per-pod record pods carried before issue 10 (never written now).
            annotations.get(f"logicbundle.io/target.{BUNDLE}"),
            annotations.get(f"logicbundle.io/active.{BUNDLE}"),
            ready,
        )

    async def _list(self) -> str:
        body = await self._get_json(f"?labelSelector=app%3D{APP}")
        self._seen = {p["metadata"]["name"]: self._view(p) for p in body["items"]}
        return str(body["metadata"]["resourceVersion"])

    async def _get_json(self, query: str) -> Any:
        url = f"{self._cluster.server}/api/v1/namespaces/{self._namespace}/pods{query}"
        async with self._session.get(url) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def start(self) -> None:
        version = await self._list()
        self._task = asyncio.create_task(self._follow(version), name="pod watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._session.close()

    async def _follow(self, version: str) -> None:
        while True:
            url = (
                f"{self._cluster.server}/api/v1/namespaces/{self._namespace}/pods?watch=1"
                f"&labelSelector=app%3D{APP}&resourceVersion={version}&timeoutSeconds=3600"
            )
            try:
                async with self._session.get(url) as resp:
                    resp.raise_for_status()
                    async for line in resp.content:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":  # 410 Gone: start again from a list
                            self.gaps += 1
                            version = await self._list()
                            break
                        obj = event["object"]
                        version = obj["metadata"]["resourceVersion"]
                        self._count(event["type"], obj)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)  # the watch dropped: resume from the last version seen

    def check(self) -> None:
        """Raise what stopped the watch, if anything did: its counts would be short."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            raise RuntimeError(f"the watch on the pods of {self._namespace} stopped: {error!r}")

    def _count(self, kind: str, pod: Mapping[str, Any]) -> None:
        name = pod["metadata"]["name"]
        now = self._view(pod)
        before = self._seen.get(name)
        self._seen[name] = now
        if kind != "MODIFIED" or before is None:
            return
        self.counts["writes"] += 1
        changed = [c for c, old, new in zip(self.WATCHED, before, now, strict=True) if old != new]
        for category in changed or ["other"]:  # one write may change several: counted in each
            self.counts[category] += 1


# -- deadlines --------------------------------------------------------------------------------


class NotSettledError(RuntimeError):
    """A step did not reach its settled state before its deadline."""


class OutOfBudgetError(NotSettledError):
    """A size did not finish within its time budget: it does not fit on this machine."""


@dataclass(frozen=True)
class Budget:
    """The time one size may take, and the deadline of each wait inside it."""

    pods: int
    seconds: float
    step_timeout: float
    ends: float

    def deadline(self) -> float:
        return min(_now() + self.step_timeout, self.ends)

    def error(self, deadline: float, what: str) -> NotSettledError:
        if deadline >= self.ends:
            return OutOfBudgetError(
                f"{self.pods} pods: the size's budget of {self.seconds:.0f} s ran out while "
                f"waiting for {what}"
            )
        return NotSettledError(
            f"{self.pods} pods: not settled within {self.step_timeout:.0f} s: waiting for {what}"
        )


async def until(
    check: Callable[[], Awaitable[str | None]], *, budget: Budget, what: str, every: float
) -> None:
    """Await ``check()`` until it returns None (met); it returns what is missing otherwise."""
    deadline = budget.deadline()
    while True:
        missing = await check()
        if missing is None:
            return
        if _now() > deadline:
            raise budget.error(deadline, f"{what}; last seen: {missing}")
        await asyncio.sleep(every)


# -- what a settled step looks like -----------------------------------------------------------

StatusCheck = Callable[[Mapping[str, Any]], str | None]
"""None when the status shows the step done; otherwise what it shows instead."""


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def _said(status: Mapping[str, Any], kind: str) -> str:
    c = _condition(status, kind)
    return f"{kind}={c.get('status')} ({c.get('reason')}: {c.get('message')})"


def _every_pod_active(status: Mapping[str, Any], pods: int, *, only: str | None) -> str | None:
    counts = (status.get("pods") or {}).get("byDigest") or []
    assigned = sum(int(e.get("assigned", 0)) for e in counts)
    behind = [e for e in counts if int(e.get("active", 0)) != int(e.get("assigned", 0))]
    seen = ", ".join(
        f"{_short(e['digest'])} {e.get('active', 0)}/{e.get('assigned', 0)}" for e in counts
    )
    if assigned != pods or behind:
        return (
            f"status.pods.byDigest active/assigned: {seen or 'none'} (want {pods} pods, all active)"
        )
    if only is not None and [e["digest"] for e in counts] != [only]:
        return f"status.pods.byDigest: {seen} (want only {_short(only)})"
    return None


def _handled(status: Mapping[str, Any], action: str | None) -> str | None:
    if action is not None and status.get("lastHandledAction") != action:
        return f"lastHandledAction {status.get('lastHandledAction')!r} (want {action!r})"
    return None


def at_gate(candidate: str, stage: str, pods: int, action: str | None = None) -> StatusCheck:
    """The rollout of ``candidate`` holds at ``stage``'s manual gate, its pods active."""

    def check(status: Mapping[str, Any]) -> str | None:
        if status.get("candidateDigest") != candidate or status.get("stage") != stage:
            return (
                f"candidate {_short(status.get('candidateDigest'))} at stage "
                f"{status.get('stage')!r} (want {_short(candidate)} at {stage!r})"
            )
        if _condition(status, cond.RECONCILING).get("reason") != cond.WAITING_FOR_PROMOTION:
            return _said(status, cond.RECONCILING)
        return _handled(status, action) or _every_pod_active(status, pods, only=None)

    return check


def stable_on(digest: str, pods: int, action: str | None = None) -> StatusCheck:
    """``digest`` is stable, nothing in flight, Ready, every pod active on it."""

    def check(status: Mapping[str, Any]) -> str | None:
        if status.get("stableDigest") != digest or status.get("candidateDigest"):
            return (
                f"stable {_short(status.get('stableDigest'))}, candidate "
                f"{_short(status.get('candidateDigest'))} (want {_short(digest)} stable)"
            )
        if _condition(status, cond.READY).get("status") != cond.TRUE:
            return _said(status, cond.READY)
        return _handled(status, action) or _every_pod_active(status, pods, only=digest)

    return check


def held_on(candidate: str, pods: int) -> StatusCheck:
    """Every pod runs ``candidate``, held in its (only) stage while the analysis waits."""

    def check(status: Mapping[str, Any]) -> str | None:
        if status.get("candidateDigest") != candidate or not status.get("stage"):
            return f"candidate {_short(status.get('candidateDigest'))} at {status.get('stage')!r}"
        if _condition(status, cond.RECONCILING).get("status") != cond.TRUE:
            return _said(status, cond.RECONCILING)
        return _every_pod_active(status, pods, only=candidate)

    return check


def stalled_on(stable: str, reason: str, pods: int, action: str | None = None) -> StatusCheck:
    """Stalled for ``reason``, every pod back on ``stable``."""

    def check(status: Mapping[str, Any]) -> str | None:
        stalled = _condition(status, cond.STALLED)
        if stalled.get("status") != cond.TRUE or stalled.get("reason") != reason:
            return _said(status, cond.STALLED)
        if status.get("stableDigest") != stable or status.get("stage"):
            return f"stable {_short(status.get('stableDigest'))}, stage {status.get('stage')!r}"
        return _handled(status, action) or _every_pod_active(status, pods, only=stable)

    return check


# -- one size ------------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    settled_s: float
    """Trigger -> status and pods settled."""
    window_s: float
    """Between the two scrapes (the settled time plus the quiet window)."""
    moved: int
    """Pods whose target annotation changed in the step."""
    writes: Writes
    changes: Counter[str]
    """Stored writes to the pods, by what they changed (:class:`PodChanges`)."""

    @property
    def changed(self) -> int:
        """Writes that changed a pod (the rest of the pods + pods/status requests changed none)."""
        return self.changes["writes"]


@dataclass
class SizeResult:
    pods: int
    internal: int
    setup_s: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    did_not_fit: str | None = None
    """Why the size was abandoned (its budget ran out), or None."""


@dataclass
class Size:
    """One size's namespace, fleet and LogicBundle, and how its steps are measured."""

    bench: Bench
    pods: int
    budget: Budget
    quiet: float
    result: SizeResult
    namespace: str = ""
    digests: dict[str, str] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=dict)
    """Each pod's target digest when the last step settled (to count the pods moved)."""
    moved: int = 0
    """Pods whose target changed between the last two settled steps."""
    watch: PodChanges | None = None

    @property
    def api(self) -> Api:
        return self.bench.api

    def manifest(self, tag: str, rollout: Mapping[str, Any]) -> dict[str, Any]:
        return self.bench.manifest(
            BUNDLE, namespace=self.namespace, tag=tag, app=APP, rollout=rollout
        )

    async def apply(self, tag: str, rollout: Mapping[str, Any]) -> None:
        await self.bench.apply(self.namespace, [self.manifest(tag, rollout)])

    async def request(self, action: actions.ActionName, token: str) -> str:
        """Set ``logicbundle.io/requested-action``, as ``logicbundle promote/abort`` does."""
        value = actions.format_action(action, token=token)
        await self.api.call(
            "PATCH",
            LB_PATH.format(namespace=self.namespace) + f"/{BUNDLE}",
            {"metadata": {"annotations": {names.ANNOTATION_REQUESTED_ACTION: value}}},
        )
        return value

    # -- settling --------------------------------------------------------------------------

    async def _pods_problem(self, status: Mapping[str, Any]) -> str | None:
        """None when every pod runs the status's assignment; else what does not.

        A pod's target is the published rule (``status.targetState``) evaluated on the
        pod's own facts, as the distributor and the agent's slow path compute it.
        """
        pods = await pods_of(self.api, self.namespace, APP)
        agents = {a.pod: a for a in self.bench.fleet.agents if a.namespace == self.namespace}
        try:
            state = contract.state_from_json(status.get("targetState"))
        except contract.StateError as exc:
            return f"status.targetState unreadable: {exc}"
        per_target: Counter[str] = Counter()
        targets: dict[str, str] = {}
        bad: list[str] = []
        for pod in pods:
            name = pod["metadata"]["name"]
            rule = contract.target_of(state, facts_of(pod))
            target = rule.digest if rule is not None else ""
            ready = any(
                c.get("type") == names.POD_CONDITION_READY and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            )
            agent = agents.get(name)
            running = agent.active.get(BUNDLE) if agent is not None else None
            per_target[target] += 1
            targets[name] = target
            if not target:
                bad.append(f"{name} has no target")
            elif not ready:
                bad.append(f"{name}: condition {names.POD_CONDITION_READY} not True")
            elif running != target:
                bad.append(f"{name}: its agent runs {_short(running)}, target {_short(target)}")
        if len(pods) != self.pods:
            return f"{len(pods)} pods, want {self.pods}"
        if bad:
            return f"{len(bad)}/{len(pods)} pods not settled, e.g. " + "; ".join(bad[:3])
        counted = {
            e["digest"]: int(e.get("assigned", 0))
            for e in (status.get("pods") or {}).get("byDigest") or []
        }
        if dict(per_target) != counted:
            seen = {_short(k): v for k, v in per_target.items()}
            want = {_short(k): v for k, v in counted.items()}
            return f"pods per target {seen}, status.pods.byDigest {want}"
        self.targets, previous = targets, self.targets
        self.moved = sum(1 for n, t in targets.items() if previous.get(n) != t)
        return None

    async def _settled(self, expect: StatusCheck) -> str | None:
        status = await self.bench.status(self.namespace, BUNDLE)
        return expect(status) or await self._pods_problem(status)

    async def _quiet(self, watched: frozenset[str], what: str) -> Writes:
        """Scrape until the ``watched`` categories have not moved for ``self.quiet`` seconds."""
        last = await scrape(self.api)
        still_since, moving = _now(), "nothing since the step settled"
        deadline = self.budget.deadline()
        while _now() - still_since < self.quiet:
            if _now() > deadline:
                raise self.budget.error(
                    deadline,
                    f"{what}: no write to {', '.join(sorted(watched))} for {self.quiet:.1f} s "
                    f"(last that moved: {moving})",
                )
            await asyncio.sleep(SCRAPE_EVERY)
            previous, last = last, await scrape(self.api)
            if last.of(watched) != previous.of(watched):
                still_since, moving = _now(), last.minus(previous).detail()
        return last

    async def step(
        self,
        name: str,
        trigger: Callable[[], Awaitable[Any]],
        expect: Callable[[], StatusCheck],
        *,
        what: str,
        watched: frozenset[str] = QUIET_SET,
    ) -> StepResult:
        """Scrape, trigger, wait until settled and quiet, scrape: one row of the table."""
        assert self.watch is not None  # started by set_up
        before, changes = await scrape(self.api), Counter(self.watch.counts)
        started = _now()
        await trigger()
        check = expect()  # after the trigger: it may name the request it sent
        self.moved = 0
        await until(
            functools.partial(self._settled, check),
            budget=self.budget,
            what=f"{name}: {what}",
            every=max(POLL, self.pods / 4000),
        )
        settled, moved = _now() - started, self.moved
        after = await self._quiet(watched, f"{name}: {what}")
        self.watch.check()
        changed = await self._settled(check)
        if changed is not None:  # settled, then moved on: the figures would mix two states
            raise NotSettledError(f"{self.pods} pods: {name}: settled, then changed: {changed}")
        result = StepResult(
            name=name,
            settled_s=settled,
            window_s=_now() - started,
            moved=moved,
            writes=after.minus(before),
            changes=self.watch.counts - changes,  # the quiet window let the watch catch up
        )
        self.result.steps.append(result)
        print(_row_text(result, self.pods), flush=True)
        return result


async def set_up(size: Size) -> None:
    """Namespace, the two Deployments, the digests, the agents: everything before v1."""
    n, b = size.pods, size.bench
    size.namespace = f"writes-{n}"
    await make_namespace(b.api, size.namespace)
    internal = size.result.internal
    for name, replicas, extra in (
        (f"{APP}-main", n - internal, {"tier": "main"}),
        (
            f"{APP}-internal",
            internal,
            {"tier": "internal", names.LABEL_COHORT: names.COHORT_INTERNAL},
        ),
    ):
        body = deployment(name, replicas)
        selector = {"app": APP, "tier": extra["tier"]}
        body["spec"]["selector"]["matchLabels"] = selector
        body["spec"]["template"]["metadata"]["labels"].update({**selector, **extra})
        await b.api.call("POST", f"/apis/apps/v1/namespaces/{size.namespace}/deployments", body)
    for name in (f"{APP}-main", f"{APP}-internal"):

        async def not_ready(name: str = name) -> str | None:
            done = await deployment_settled(b.api, size.namespace, name)
            return None if done else f"deployment {name} not rolled out"

        await until(not_ready, budget=size.budget, what=f"{n} pods Ready", every=0.5)
    size.digests = await asyncio.to_thread(b.push, size.namespace, ["v1", "v2", "v3", "v4"])
    await b.fleet.add(b.api, size.namespace, await pods_of(b.api, size.namespace, APP))
    size.watch = PodChanges(b.cluster, size.namespace)
    await size.watch.start()


async def run_size(size: Size) -> None:
    """Set up, install v1, then the measured steps; the rows go to ``size.result``."""
    try:
        await _run_size(size)
    finally:
        if size.watch is not None:
            if size.watch.gaps:
                print(f"  WARNING: the pod watch restarted {size.watch.gaps} time(s)", flush=True)
            await size.watch.stop()


async def _run_size(size: Size) -> None:
    t = _now()
    await set_up(size)
    n, d, fleet = size.pods, size.digests, size.bench.fleet
    size.result.setup_s = _now() - t
    print(
        f"  set up in {size.result.setup_s:.1f} s: {n} pods ({size.result.internal} internal), "
        f"{n} simulated agents, digests v1-v4 pushed",
        flush=True,
    )
    token = f"bench-{n}-{int(time.time())}"
    sent: dict[str, str] = {}

    def request(action: actions.ActionName, key: str) -> Callable[[], Awaitable[None]]:
        async def send() -> None:
            sent[key] = await size.request(action, f"{token}-{key}")

        return send

    def apply(tag: str, rollout: Mapping[str, Any]) -> Callable[[], Awaitable[None]]:
        return functools.partial(size.apply, tag, rollout)

    await size.step(
        "install v1 (reference)",
        apply("v1", GATED),
        lambda: stable_on(d["v1"], n),
        what="v1 stable, every pod active on it",
    )
    await size.step(
        "v2 apply -> internal",
        apply("v2", GATED),
        lambda: at_gate(d["v2"], "internal", n),
        what="stage internal entered, its pods on v2",
    )
    await size.step(
        "promote -> canary",
        request(actions.PROMOTE, "p1"),
        lambda: at_gate(d["v2"], "canary", n, sent["p1"]),
        what="stage canary entered, its pods on v2",
    )
    await size.step(
        "promote -> all",
        request(actions.PROMOTE, "p2"),
        lambda: at_gate(d["v2"], "all", n, sent["p2"]),
        what="stage all entered, every pod on v2",
    )
    await size.step(
        "promote -> v2 stable",
        request(actions.PROMOTE, "p3"),
        lambda: stable_on(d["v2"], n, sent["p3"]),
        what="v2 stable, every pod active on it",
    )
    await size.step(
        "v3 apply -> all on v3",
        apply("v3", ANALYSED),
        lambda: held_on(d["v3"], n),
        what="every pod on v3, held for analysis",
        watched=QUIET_SET - {"logicbundles/status"},
    )
    try:
        await size.step(
            "v3 analysis fails -> rollback",
            functools.partial(fleet.inject_errors, size.namespace, BUNDLE, d["v3"]),
            lambda: stalled_on(d["v2"], cond.ROLLED_BACK, n),
            what="Stalled (RolledBack), every pod back on v2",
        )
    finally:
        fleet.clear_faults()
    await size.step(
        "v4 apply -> internal",
        apply("v4", GATED),
        lambda: at_gate(d["v4"], "internal", n),
        what="stage internal entered, its pods on v4",
    )
    await size.step(
        "promote -> canary (v4)",
        request(actions.PROMOTE, "p4"),
        lambda: at_gate(d["v4"], "canary", n, sent["p4"]),
        what="stage canary entered, its pods on v4",
    )
    await size.step(
        "abort -> all on v2",
        request(actions.ABORT, "a1"),
        lambda: stalled_on(d["v2"], cond.ABORTED, n, sent["a1"]),
        what="Stalled (Aborted), every pod back on v2",
    )


# -- output ------------------------------------------------------------------------------------

HEADER = (
    f"{'step':<32} {'settled':>8} {'window':>7} {'moved':>6} {'total':>7} {'step w.':>7} "
    f"{'pods':>6} {'pods/st':>7} {'pod w.':>7} {'/pod':>6} {'/moved':>6} {'chg':>5} {'lb':>4} "
    f"{'lb/st':>5} {'events':>6} {'leases':>6} {'reviews':>7} {'other':>5}"
)


def _row_text(r: StepResult, pods: int) -> str:
    c = r.writes.by_category()
    pod_writes = c["pods"] + c["pods/status"]
    other = r.writes.total - sum(c[k] for k in COLUMNS) - c["reviews"]
    per_moved = f"{pod_writes / r.moved:6.2f}" if r.moved else f"{'-':>6}"
    return (
        f"{r.name:<32} {r.settled_s:7.1f}s {r.window_s:6.1f}s {r.moved:6d} {r.writes.total:7d} "
        f"{_step_writes(r):7d} {c['pods']:6d} {c['pods/status']:7d} {pod_writes:7d} "
        f"{pod_writes / pods:6.2f} {per_moved} {r.changed:5d} "
        f"{c['logicbundles']:4d} {c['logicbundles/status']:5d} {c['events']:6d} "
        f"{c['leases']:6d} {c['reviews']:7d} {other:5d}"
    )


def print_size(result: SizeResult) -> None:
    print(f"\n== {result.pods} pods ({result.internal} internal), set up {result.setup_s:.0f} s ==")
    print(HEADER)
    for r in result.steps:
        print(_row_text(r, result.pods))
    print(
        "  in detail: requests by verb and resource (refused ones named); the writes that changed"
        " a pod, from a watch; etcd_requests_total's create/update/delete"
    )
    for r in result.steps:
        changed = ", ".join(f"{k} {r.changes[k]}" for k in PodChanges.CATEGORIES)
        etcd = ", ".join(f"{op} {res} {v}" for (res, op), v in sorted(r.writes.stored.items()))
        print(
            f"  {r.name}: {r.writes.detail()}\n"
            f"    writes that changed a pod: {r.changed} ({changed})\n"
            f"    etcd write transactions (retries included): {etcd or 'none'}"
        )
    if result.did_not_fit:
        print(f"  DID NOT FIT: {result.did_not_fit}")


def print_growth(results: Sequence[SizeResult]) -> None:
    """Per step, one figure for every size and its ratio to the first (smallest) size."""
    done = [r for r in results if not r.did_not_fit]
    if len(done) < 2:
        return
    base = done[0]
    sizes = " ".join(f"{r.pods:>7}" for r in done)
    ratios = " ".join(f"{f'{r.pods}/{base.pods}':>9}" for r in done[1:])
    views: list[tuple[str, Callable[[StepResult], int]]] = [
        ("every mutating request (leases and token reviews included)", lambda s: s.writes.total),
        ("step writes: every mutating request but leases and reviews", _step_writes),
        ("pods + pods/status", lambda s: s.writes.of(POD_CATEGORIES)),
        ("of those, writes that changed the pod (watch)", lambda s: s.changed),
        ("step writes other than pods + pods/status", lambda s: _step_writes(s) - _pod_writes(s)),
    ]
    for label, value in views:
        print(f"\n== growth: {label} ==")
        print(f"{'step':<32} {sizes}  {'ratio':>8} {ratios}")
        rows = [(s.name, [value(r.steps[i]) for r in done]) for i, s in enumerate(base.steps)]
        measured = [v for name, v in rows if not name.startswith("install")]
        rows.append(
            ("sum of the steps, install aside", [sum(col) for col in zip(*measured, strict=True)])
        )
        for name, values in rows:
            cells = " ".join(f"{v:7d}" for v in values)
            growth = " ".join(
                f"{v / values[0]:8.1f}x" if values[0] else f"{'-':>9}" for v in values[1:]
            )
            print(f"{name:<32} {cells}  {'':>8} {growth}")


def _pod_writes(step: StepResult) -> int:
    return step.writes.of(POD_CATEGORIES)


def _step_writes(step: StepResult) -> int:
    """Every mutating request but the ones on a timer: node and API server leases, reviews."""
    return step.writes.total - step.writes.of(BACKGROUND)


def as_json(results: Sequence[SizeResult]) -> list[dict[str, Any]]:
    return [
        {
            "pods": r.pods,
            "internal": r.internal,
            "setup_s": round(r.setup_s, 1),
            "did_not_fit": r.did_not_fit,
            "steps": [
                {
                    "name": s.name,
                    "settled_s": round(s.settled_s, 2),
                    "window_s": round(s.window_s, 2),
                    "moved": s.moved,
                    "total": s.writes.total,
                    "by_category": dict(s.writes.by_category()),
                    "pod_changes": dict(s.changes),
                    "etcd_writes": [
                        {"resource": res, "operation": op, "count": v}
                        for (res, op), v in sorted(s.writes.stored.items())
                    ],
                    "series": [{**vars(k), "count": v} for k, v in sorted(s.writes.counts.items())],
                }
                for s in r.steps
            ],
        }
        for r in results
    ]


# -- main -----------------------------------------------------------------------------------


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


async def run(args: argparse.Namespace, work: Path) -> list[SizeResult]:
    # SIGTERM unwinds like Ctrl-C: every process below is stopped by its own pid on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None  # we run inside asyncio.run
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    sizes = [int(x) for x in args.pods.split(",") if x]
    nodes = max(2, math.ceil(max(sizes) * 1.3 / 250) + 1)
    print(
        f"machine: {os.cpu_count()} CPUs, {_load()}; starting the control plane "
        f"({nodes} kwok nodes), registry, operator...",
        flush=True,
    )
    results: list[SizeResult] = []
    with (
        Cluster.start(work / "cluster", nodes=nodes) as cluster,
        Registry.start(work / "registry") as registry,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        cluster.wait_established("logicbundles.logicbundle.io")
        operator = Operator.start(cluster, work / "operator")
        api, fleet = Api(cluster), OrderedFleet(operator.distributor_url)
        bench = Bench(cluster, registry, operator, KeyPair.generate(), api, fleet)
        try:
            for n in sizes:
                result = SizeResult(pods=n, internal=max(1, n // 100))
                results.append(result)
                budget = Budget(
                    pods=n,
                    seconds=args.budget,
                    step_timeout=args.step_timeout,
                    ends=_now() + args.budget,
                )
                size = Size(bench=bench, pods=n, budget=budget, quiet=args.quiet, result=result)
                print(f"\n== {n} pods (namespace writes-{n}); {_load()} ==", flush=True)
                print(HEADER, flush=True)
                try:
                    await run_size(size)
                except OutOfBudgetError as exc:
                    result.did_not_fit = str(exc)
                    print(f"  DID NOT FIT: {exc}", flush=True)
                    break
                finally:
                    await fleet.stop()  # its agents' long-polls end; the pods stay
        finally:
            await fleet.close()
            await api.close()
            operator.stop()
    print(f"\nmachine: {os.cpu_count()} CPUs, {nodes} kwok nodes; at the end {_load()}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.bench.bench_api_writes",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--pods", default="20,200,2000", help="sizes, comma separated")
    parser.add_argument(
        "--budget", type=float, default=600.0, help="seconds one size may take, set-up included"
    )
    parser.add_argument(
        "--step-timeout", type=float, default=300.0, help="seconds one step may take to settle"
    )
    parser.add_argument(
        "--quiet", type=float, default=3.0, help="seconds without rollout writes that end a step"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-api-writes-"))
    started = _now()
    try:
        results = asyncio.run(run(args, work))
    except asyncio.CancelledError:  # SIGTERM: run() has stopped every process it started
        print(f"stopped by SIGTERM; run directory: {work}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BaseException:
        print(f"run directory, with every process's log: {work}", file=sys.stderr)
        raise
    for result in results:
        print_size(result)
    print_growth(results)
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=1) + "\n")
    fitted = [r.pods for r in results if r.steps and not r.did_not_fit]
    print(f"\nwhole run {_now() - started:.0f} s; largest size done: {max(fitted, default=0)} pods")
    if args.keep:
        print(f"run directory {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 2 if any(r.did_not_fit for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
