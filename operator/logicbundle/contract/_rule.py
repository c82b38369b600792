"""What a pod should run, as a rule over one published rollout state.

The operator publishes, per bundle, one small :class:`RolloutState`: the
stable digest, the candidate, and the stage as data.  Whoever knows a pod's
:class:`PodFacts` (its cohort key, labels and admission time, all on the pod
itself) evaluates :func:`target_of` and gets the same answer: a distributor
replica for a long-poll, the agent from the mounted state on the slow path,
the controller for its counts.  A rollout step is then one write of the state,
whatever the number of pods.

**Percent stages** are a threshold over a stable hash, sealed by admission time:

* ``position(bundle, candidate, key)`` is the first 128 bits of
  ``sha256(bundle, candidate, key)``: no clock, no randomness, no memory; a
  fresh order for every candidate, and bundles independent of each other.
* A pod carries the candidate when it was admitted no later than ``sealed``
  and its position is below ``threshold`` (or, for pods carried over from an
  ``internal`` stage, it matches the carried selector and its position is
  below the carried threshold).
* :func:`plan_percent` is the operator's half: from the previous state and the
  pods it sees, the next thresholds and seal.  Pods already on the candidate
  stay; newcomers are sealed in admission order only while the stage stays
  within its share; the remaining places go to the lowest positions.
  Thresholds and the seal only ever move up, so the rule keeps, without any
  per-pod record (all property-tested in ``tests/contract``):

  - no pod ever leaves the candidate within a rollout: not when pods are
    added, removed or the stage advances (only a rollback, an abort or a
    promotion, which publish a new state), so no pod goes candidate ->
    stable -> candidate;
  - a stage never grows past its share, ``max(1, floor(p * N / 100))``: the
    share counts the pods already on the candidate (the internal ones carried
    over, or those left when other pods went away), and the plan adds pods
    only while below it;
  - it has at least one pod when ``p > 0`` and there are pods;
  - the same previous state and pods give the same plan (a restarted
    operator computes the same cohorts).

  Pods are assumed admitted after those the operator has seen, up to its
  ``horizon`` (see :func:`plan_percent`).  Two pods of one rollout share a
  128-bit position with probability about ``N**2 / 2**129``; the rule then
  treats them alike.

``internal`` stages take the pods their selector matches, ``all`` every pod,
and a ``requestPercent`` split gives every pod both digests and a weight.

Standard library only: the agent and the SDK import this in every pod.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from logicbundle.contract._trace import parse_traceparent

POSITION_BITS: Final = 128
POSITION_LIMIT: Final = 1 << POSITION_BITS
"""A threshold at this value takes every position."""

SELECTOR_OPERATORS: Final = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


def position(*, bundle: str, candidate: str, key: str) -> int:
    """A pod's place for ``candidate``: lower joins the candidate earlier."""
    material = f"{bundle}\n{candidate}\n{key}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[: POSITION_BITS // 8], "big")


def share(*, percent: int, pods: int) -> int:
    """How many of ``pods`` a ``percent`` stage gives the candidate to.

    Rounded down (the percentage caps the blast radius), except that a
    positive percentage of at least one pod is one pod: without it there is
    nothing to judge.
    """
    if percent <= 0 or pods <= 0:
        return 0
    if percent >= 100:
        return pods
    return max(1, percent * pods // 100)


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.operator not in SELECTOR_OPERATORS:
            raise ValueError(f"selector operator {self.operator!r} is not one of In, NotIn, ...")
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"selector operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"selector operator {self.operator} takes no values")


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes label selector with its semantics (an empty one matches every pod)."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            if requirement.operator == "In":
                if labels.get(requirement.key) not in requirement.values:
                    return False
            elif requirement.operator == "NotIn":
                if present and labels[requirement.key] in requirement.values:
                    return False
            elif requirement.operator == "Exists":
                if not present:
                    return False
            elif present:  # DoesNotExist
                return False
        return True


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the rule needs to know of a pod, all of it on the pod itself.

    ``key`` is its ``logicbundle.io/cohort-key`` annotation (else
    ``namespace/name``); ``admitted`` its ``logicbundle.io/admitted-at``
    annotation in milliseconds since the epoch (0: admitted before the
    annotation existed, which counts as earliest).
    """

    key: str
    labels: Mapping[str, str] = field(default_factory=dict)
    admitted: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    """What a pod should run for one bundle: one digest, or a request split.

    ``revision``: the revision of the state it was computed from (not part of
    what the pod runs: two targets that differ only by it are equal).
    """

    digest: str
    candidate: str | None = None
    weight: int = 0
    revision: int = field(default=0, compare=False)
    traceparent: str | None = field(default=None, compare=False)
    """The rollout's trace context (W3C ``traceparent``), for the pod's swap span; not
    what the pod runs either."""


@dataclass(frozen=True, slots=True)
class Internal:
    """Pods whose labels match ``selector``."""

    selector: Selector


@dataclass(frozen=True, slots=True)
class Carry:
    """Pods kept from an ``internal`` stage: matching ``selector``, position below ``threshold``."""

    selector: Selector
    threshold: int


@dataclass(frozen=True, slots=True)
class Percent:
    """Pods admitted by ``sealed`` with a position below ``threshold`` (or carried)."""

    threshold: int = 0
    sealed: int = 0
    carry: Carry | None = None


@dataclass(frozen=True, slots=True)
class Everyone:
    """Every pod."""


@dataclass(frozen=True, slots=True)
class Split:
    """Every pod loads both digests; ``weight`` percent of calls go to the candidate."""

    weight: int


Stage = Internal | Percent | Everyone | Split


@dataclass(frozen=True, slots=True)
class RolloutState:
    """The one published state of a bundle's rollout (``stage`` None: all on stable).

    ``revision`` orders the states of one bundle: when the state was published,
    in milliseconds since the epoch, and always above the previous state's (so
    a clock that steps back, or another operator replica's, never reorders
    them).  Whoever holds two states, the newer one wins, whichever path
    brought it: the agent compares the distributor's answer with its mounted
    copy by it.  0: not stamped (a state published before revisions).
    """

    bundle: str
    stable: str | None
    candidate: str | None = None
    stage: Stage | None = None
    revision: int = 0
    traceparent: str | None = field(default=None, compare=False)
    """The trace of the rollout that published this state, its parent-id the current phase's
    span (:mod:`logicbundle.contract._trace`); None: no trace (tracing off, or a state
    published before traces).  Not part of what the pods run: two states differing only by
    it are equal (and keep one revision)."""


def _on_candidate(state: RolloutState, stage: Stage, pod: PodFacts) -> bool:
    assert state.candidate is not None  # noqa: S101 - checked by the caller
    if isinstance(stage, Everyone):
        return True
    if isinstance(stage, Internal):
        return stage.selector.matches(pod.labels)
    if isinstance(stage, Percent):
        where = position(bundle=state.bundle, candidate=state.candidate, key=pod.key)
        return _in_percent(stage, pod, where)
    return False


def _in_percent(stage: Percent, pod: PodFacts, where: int) -> bool:
    """Whether ``pod``, at position ``where``, is on the candidate in ``stage``."""
    if pod.admitted > stage.sealed:
        return False
    if where < stage.threshold:
        return True
    carry = stage.carry
    return carry is not None and where < carry.threshold and carry.selector.matches(pod.labels)


def target_of(state: RolloutState, pod: PodFacts) -> Target | None:
    """What ``pod`` should run (None: nothing verified to run yet)."""
    if state.stable is None:
        return None
    stage, candidate = state.stage, state.candidate
    revision, trace = state.revision, state.traceparent
    if stage is None or candidate is None or candidate == state.stable:
        return Target(digest=state.stable, revision=revision, traceparent=trace)
    if isinstance(stage, Split):
        if stage.weight <= 0:
            return Target(digest=state.stable, revision=revision, traceparent=trace)
        return Target(
            digest=state.stable,
            candidate=candidate,
            weight=stage.weight,
            revision=revision,
            traceparent=trace,
        )
    on = _on_candidate(state, stage, pod)
    return Target(digest=candidate if on else state.stable, revision=revision, traceparent=trace)


def cohort(state: RolloutState, pods: Iterable[PodFacts]) -> set[str]:
    """The keys of the pods whose target carries the candidate (fully or by a split)."""
    found = set()
    for pod in pods:
        target = target_of(state, pod)
        if target is None or state.candidate is None:
            continue
        if target.digest == state.candidate or (
            target.candidate == state.candidate and target.weight > 0
        ):
            found.add(pod.key)
    return found


def plan_percent(
    *,
    bundle: str,
    candidate: str,
    percent: int,
    pods: Sequence[PodFacts],
    previous: Percent | None = None,
    carry_from: Selector | None = None,
    horizon: int | None = None,
) -> Percent:
    """The next :class:`Percent` stage for ``pods`` (see the module doc).

    ``previous``: the percent stage in force (None when entering the first
    one).  ``carry_from``: entering it from an ``internal`` stage, that stage's
    selector, whose pods keep the candidate (counted in the share).

    ``horizon``: the latest admission instant up to which ``pods`` is known to
    hold every pod (the operator's clock less its cache lag and the clock skew
    it allows); nothing later is sealed.  A pod admitted at or before the seal
    but missing from ``pods`` would join the candidate unaccounted for, and
    could later push a pod out.  None: ``pods`` is complete.
    """
    keys = [p.key for p in pods]
    if len(set(keys)) != len(keys):
        raise ValueError("a pod key is listed twice")
    places = share(percent=percent, pods=len(pods))
    where = {p.key: position(bundle=bundle, candidate=candidate, key=p.key) for p in pods}
    newest = max((p.admitted for p in pods), default=0)
    limit = newest if horizon is None else min(newest, horizon)
    if previous is None:
        # Entering: every pod seen up to the horizon is sealed; internal pods are candidates.
        sealed = limit
        carry = Carry(carry_from, POSITION_LIMIT) if carry_from is not None else None
        previous = Percent(threshold=0, sealed=sealed, carry=carry)
    plan = _plan(previous, pods, where, places, limit)
    if places and not _members(plan, pods, where):
        # Nobody could be sealed (a crowd admitted at one instant, or every pod newer
        # than the horizon): nobody is on the candidate, so starting over with every
        # pod seen moves no pod, and the stage gets its pod to judge.
        start = Percent(threshold=0, sealed=max(previous.sealed, newest))
        plan = _plan(start, pods, where, places, newest)
    return plan


def _members(stage: Percent, pods: Sequence[PodFacts], where: Mapping[str, int]) -> list[PodFacts]:
    return [p for p in pods if _in_percent(stage, p, where[p.key])]


def _plan(
    stage: Percent,
    pods: Sequence[PodFacts],
    where: Mapping[str, int],
    places: int,
    limit: int,
) -> Percent:
    members = _members(stage, pods, where)
    # 1. No pod leaves the candidate within a rollout (only a rollback, an abort or a
    #    promotion moves it), even when pods went away and the share shrank below the
    #    pods already on it: a pod never goes candidate -> stable -> candidate.
    # 2. Seal newcomers in admission order while the stage stays within its share.
    for instant in sorted({p.admitted for p in pods if stage.sealed < p.admitted <= limit}):
        trial = replace(stage, sealed=instant)
        joined = _members(trial, pods, where)
        if len(joined) > places:
            break
        stage, members = trial, joined
    # 3. The remaining places go to the lowest positions among sealed pods: raising the
    #    threshold past the next one takes it (and any pod sharing its position).
    taken = {p.key for p in members}
    free = sorted(where[p.key] for p in pods if p.admitted <= stage.sealed and p.key not in taken)
    count, joined_up_to = len(members), 0
    while count < places and joined_up_to < len(free):
        threshold = max(stage.threshold, free[joined_up_to] + 1)
        while joined_up_to < len(free) and free[joined_up_to] < threshold:
            joined_up_to += 1
            count += 1
        stage = replace(stage, threshold=threshold)
    return stage


# --- the published form ----------------------------------------------------------------------

_DIGEST_HEX: Final = frozenset("0123456789abcdef")
_HEX_DIGITS: Final = POSITION_BITS // 4
MAX_STATE_BYTES: Final = 64 * 1024
"""A published state is small; anything larger is refused unread."""


class StateError(ValueError):
    """A published state that does not follow the grammar; the message says where."""


def _digest(value: object, where: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("sha256:")
        or len(value) != 71
        or not set(value[7:]) <= _DIGEST_HEX
    ):
        raise StateError(f"{where} must be a digest (sha256:<64 lower-case hex>)")
    return value


def _threshold(value: object, where: str) -> int:
    digits = value[2:] if isinstance(value, str) and value.startswith("0x") else ""
    if not 1 <= len(digits) <= _HEX_DIGITS + 1 or not set(digits) <= _DIGEST_HEX:
        raise StateError(f"{where} must be '0x' and up to {_HEX_DIGITS + 1} lower-case hex digits")
    number = int(digits, 16)
    if number > POSITION_LIMIT:
        raise StateError(f"{where} is above 2**{POSITION_BITS}")
    return number


def _format_threshold(value: int) -> str:
    return f"0x{value:x}"


def _int(value: object, where: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StateError(f"{where} must be an integer from {low} to {high}")
    return value


def _object(value: object, where: str, keys: set[str], required: set[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise StateError(f"{where} must be an object")
    unknown = set(value) - keys
    if unknown:
        raise StateError(f"{where} has unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    missing = required - set(value)
    if missing:
        raise StateError(f"{where} lacks {', '.join(sorted(missing))}")
    return value


def _selector(value: object, where: str) -> Selector:
    body = _object(value, where, {"matchLabels", "matchExpressions"}, set())
    labels = body.get("matchLabels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise StateError(f"{where}.matchLabels must map strings to strings")
    expressions = body.get("matchExpressions", [])
    if not isinstance(expressions, list):
        raise StateError(f"{where}.matchExpressions must be a list")
    requirements = []
    for i, item in enumerate(expressions):
        at = f"{where}.matchExpressions[{i}]"
        entry = _object(item, at, {"key", "operator", "values"}, {"key", "operator"})
        key, operator, values = entry["key"], entry["operator"], entry.get("values", [])
        if not isinstance(key, str) or not isinstance(operator, str):
            raise StateError(f"{at}.key and .operator must be strings")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise StateError(f"{at}.values must be a list of strings")
        try:
            requirements.append(Requirement(key, operator, tuple(values)))  # type: ignore[arg-type]
        except ValueError as exc:
            raise StateError(f"{at}: {exc}") from None
    return Selector(dict(labels), tuple(requirements))


def _selector_json(selector: Selector) -> dict[str, object]:
    body: dict[str, object] = {}
    if selector.match_labels:
        body["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        body["matchExpressions"] = [
            {
                "key": r.key,
                "operator": r.operator,
                **({"values": list(r.values)} if r.values else {}),
            }
            for r in selector.match_expressions
        ]
    return body


def state_to_json(state: RolloutState) -> dict[str, object]:
    """The published form of ``state`` (what :func:`state_from_json` reads back)."""
    body: dict[str, object] = {"bundle": state.bundle, "stable": state.stable}
    if state.candidate is not None:
        body["candidate"] = state.candidate
    if state.revision:
        body["revision"] = state.revision
    if state.traceparent is not None:
        body["traceparent"] = state.traceparent
    stage = state.stage
    if isinstance(stage, Internal):
        body["stage"] = {"internal": _selector_json(stage.selector)}
    elif isinstance(stage, Percent):
        percent: dict[str, object] = {
            "threshold": _format_threshold(stage.threshold),
            "sealed": stage.sealed,
        }
        if stage.carry is not None:
            percent["carry"] = {
                "selector": _selector_json(stage.carry.selector),
                "threshold": _format_threshold(stage.carry.threshold),
            }
        body["stage"] = {"percent": percent}
    elif isinstance(stage, Everyone):
        body["stage"] = {"all": True}
    elif isinstance(stage, Split):
        body["stage"] = {"requestPercent": stage.weight}
    return body


def state_from_json(value: object) -> RolloutState:
    """Read a published state, refusing anything outside the grammar (:class:`StateError`)."""
    body = _object(
        value,
        "state",
        {"bundle", "stable", "candidate", "stage", "revision", "traceparent"},
        {"bundle"},
    )
    bundle = body["bundle"]
    if not isinstance(bundle, str) or not bundle or len(bundle) > 253:
        raise StateError("state.bundle must be a name")
    stable = None if body.get("stable") is None else _digest(body["stable"], "state.stable")
    candidate = (
        None if body.get("candidate") is None else _digest(body["candidate"], "state.candidate")
    )
    revision = 0
    if body.get("revision") is not None:
        revision = _int(body["revision"], "state.revision", low=0, high=2**63 - 1)
    trace = body.get("traceparent")
    if trace is not None and parse_traceparent(trace) is None:
        raise StateError(
            "state.traceparent must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)"
        )
    traceparent = trace if isinstance(trace, str) else None
    raw = body.get("stage")
    if raw is None:
        return RolloutState(
            bundle=bundle,
            stable=stable,
            candidate=candidate,
            revision=revision,
            traceparent=traceparent,
        )
    if candidate is None:
        raise StateError("state.stage needs state.candidate")
    kinds = _object(raw, "state.stage", {"internal", "percent", "all", "requestPercent"}, set())
    if len(kinds) != 1:
        raise StateError(
            "state.stage must set exactly one of internal, percent, all, requestPercent"
        )
    ((kind, spec),) = kinds.items()
    stage: Stage
    if kind == "internal":
        stage = Internal(_selector(spec, "state.stage.internal"))
    elif kind == "all":
        if spec is not True:
            raise StateError("state.stage.all must be true")
        stage = Everyone()
    elif kind == "requestPercent":
        stage = Split(_int(spec, "state.stage.requestPercent", low=0, high=100))
    else:
        fields = _object(
            spec, "state.stage.percent", {"threshold", "sealed", "carry"}, {"threshold", "sealed"}
        )
        carry = None
        if fields.get("carry") is not None:
            at = "state.stage.percent.carry"
            carried = _object(
                fields["carry"], at, {"selector", "threshold"}, {"selector", "threshold"}
            )
            carry = Carry(
                _selector(carried["selector"], f"{at}.selector"),
                _threshold(carried["threshold"], f"{at}.threshold"),
            )
        stage = Percent(
            threshold=_threshold(fields["threshold"], "state.stage.percent.threshold"),
            sealed=_int(fields["sealed"], "state.stage.percent.sealed", low=0, high=2**63 - 1),
            carry=carry,
        )
    return RolloutState(
        bundle=bundle,
        stable=stable,
        candidate=candidate,
        stage=stage,
        revision=revision,
        traceparent=traceparent,
    )


def state_from_bytes(data: bytes) -> RolloutState:
    """Read a published state from a file's bytes (the slow path's mounted copy)."""
    if len(data) > MAX_STATE_BYTES:
        raise StateError(f"state is {len(data)} bytes, more than {MAX_STATE_BYTES}")
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"state is not JSON: {exc}") from None
    return state_from_json(value)
