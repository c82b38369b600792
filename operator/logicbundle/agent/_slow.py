"""The slow path: each bundle's target from its published rollout state and the pod's facts.

Followed while the distributor is unreachable, refuses the agent, or does not
know the pod.  The operator publishes one rollout state per bundle (the
ConfigMap ``lb-state-<bundle>``); the webhook mounts the states of the pod's
bundles at ``<stateDir>/<bundle>.json`` and the pod's annotations and labels
as downward-API files.  The agent evaluates the rule the distributor
evaluates (:func:`logicbundle.contract.target_of`) over them, with the facts
the webhook wrote once at admission (the cohort key and the admission
instant) and the pod's labels.

The kubelet replaces these files by an atomic swap of the volume's ``..data``
symlink, so every file is stat'ed through its path (the links followed) each
round, and a change in any of them re-evaluates every bundle.  It refreshes
them late: a new state reaches the file within the kubelet's sync period plus
its ConfigMap cache TTL, about a minute by default.

Fail closed: a state that is unreadable, outside the grammar, too large or
published for another bundle, and a pod whose facts cannot be read, change
nothing (the bundle keeps the slow path's previous target); each distinct
problem is logged once.  A missing state file is no problem: it means no
slow-path target for that bundle (the ConfigMap may not be published yet).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from logicbundle import contract
from logicbundle.agent._config import AgentConfig
from logicbundle.agent._targets import Target, parse_annotations

logger = logging.getLogger("logicbundle.agent")

FileKey = tuple[int, int, int] | None
"""A file's ``(mtime_ns, size, inode)`` through its path, or None when it cannot be stat'ed."""


class FactsError(ValueError):
    """The pod's own facts cannot be read from its downward-API files; the message says why."""


def read_state(path: Path, *, bundle: str) -> contract.RolloutState | None:
    """The state published for ``bundle`` at ``path``; None when no file is there (yet).

    Raises :class:`logicbundle.contract.StateError` for a state that must not
    be followed.  At most :data:`~logicbundle.contract.MAX_STATE_BYTES` and one
    more byte are read, whatever the file's size.
    """
    try:
        with path.open("rb") as stream:
            data = stream.read(contract.MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise contract.StateError(f"cannot read it: {exc.strerror or exc}") from None
    if len(data) > contract.MAX_STATE_BYTES:
        raise contract.StateError(f"it holds more than {contract.MAX_STATE_BYTES} bytes")
    state = contract.state_from_bytes(data)
    if state.bundle != bundle:
        raise contract.StateError(f"it is published for bundle {state.bundle!r}, not {bundle!r}")
    return state


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FactsError(f"cannot read the pod's {what} ({path}): {exc.strerror or exc}") from None


def read_facts(*, annotations_file: Path, labels_file: Path) -> contract.PodFacts:
    """The pod's facts from its downward-API files, or :class:`FactsError`.

    The cohort key is required: the webhook writes it on every pod it
    injects, and hashing any other key could put the pod in another cohort
    than the one the operator counts it in.
    """
    annotations = parse_annotations(_read_text(annotations_file, "annotations"))
    labels = parse_annotations(_read_text(labels_file, "labels"))
    key = annotations.get(contract.ANNOTATION_COHORT_KEY)
    if not key:
        raise FactsError(
            f"the pod has no {contract.ANNOTATION_COHORT_KEY} annotation (the webhook writes it "
            "at admission; was the pod injected by an older operator?)"
        )
    return contract.PodFacts(key=key, labels=labels, admitted=contract.admitted_at(annotations))


def _key(path: Path) -> FileKey:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True, slots=True)
class Reading:
    """One evaluation of the slow path.

    ``targets``: the bundles the slow path has a target for (a refused state
    keeps its previous one).  ``told``: the pod's facts could be read, so the
    slow path has answered for every bundle (a bundle absent from ``targets``
    has nothing assigned by it).
    """

    targets: Mapping[str, Target] = field(default_factory=dict)
    told: bool = False


class SlowPath:
    """The slow path's files and what it last took from them; used by one thread."""

    def __init__(
        self,
        *,
        bundles: Sequence[str],
        state_dir: Path,
        annotations_file: Path,
        labels_file: Path,
    ) -> None:
        self._states = {name: state_dir / contract.state_file_name(name) for name in bundles}
        self._annotations_file = annotations_file
        self._labels_file = labels_file
        self._seen: tuple[FileKey, ...] | None = None
        self._targets: dict[str, Target] = {}
        self._logged: set[str] = set()

    @classmethod
    def of(cls, config: AgentConfig) -> SlowPath:
        return cls(
            bundles=tuple(config.bundles),
            state_dir=config.state_dir,
            annotations_file=config.annotations_file,
            labels_file=config.labels_file,
        )

    def changed(self) -> bool:
        """Whether any of the files differs from the last call (True the first time)."""
        paths = (self._annotations_file, self._labels_file, *self._states.values())
        seen = tuple(_key(path) for path in paths)
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def read(self) -> Reading:
        """Evaluate every bundle's state against the pod's facts."""
        try:
            facts: contract.PodFacts | FactsError = read_facts(
                annotations_file=self._annotations_file, labels_file=self._labels_file
            )
        except FactsError as exc:
            facts = exc
        targets: dict[str, Target] = {}
        problems: list[str] = []
        for name, path in self._states.items():
            try:
                target = _evaluate(name, path, facts)
            except contract.StateError as exc:
                problems.append(f"the published state of {name} ({path}) is refused: {exc}")
                target = self._targets.get(name)
            except FactsError as exc:
                problems.append(str(exc))
                target = self._targets.get(name)
            if target is not None:
                targets[name] = target
        self._log(problems)
        self._targets = targets
        return Reading(targets=dict(targets), told=not isinstance(facts, FactsError))

    def _log(self, problems: Sequence[str]) -> None:
        current = set(problems)
        for problem in sorted(current - self._logged):
            logger.warning("slow path: %s; keeping the previous target", problem)
        # A problem that went away is logged again should it come back.
        self._logged = current


def _evaluate(name: str, path: Path, facts: contract.PodFacts | FactsError) -> Target | None:
    """``name``'s target from its state at ``path``; the facts are needed only when one is there."""
    state = read_state(path, bundle=name)
    if state is None:
        return None
    if isinstance(facts, FactsError):
        raise FactsError(str(facts))
    found = contract.target_of(state, facts)
    if found is None:
        return None
    return Target(
        digest=found.digest,
        candidate=found.candidate,
        weight=found.weight,
        revision=found.revision,
        traceparent=found.traceparent,
    )
