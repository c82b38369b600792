"""Every pod's targets, computed from the bundles' published states and the pods' own facts.

Nothing here is stored per pod anywhere but in memory: a bundle publishes one
:class:`~logicbundle.contract.RolloutState` (its status, mirrored in a
ConfigMap) and each pod carries its facts (cohort key, labels, admission
time).  :class:`RuleTargets` joins the two with
:func:`logicbundle.contract.target_of` and keeps a :class:`TargetStore` up to
date, so any distributor replica (or the operator's own) answers every pod's
long-poll with the same targets.  The controller and the standalone
replicas' watches feed it the same way.

Cost: a bundle's new published state recomputes the pods it selects (a hash
each); only a new selector matches every pod of its namespace again.  A pod's
change recomputes that pod against the bundles of its namespace.  At 1,000
LogicBundles over 10,000 pods, re-matching every pod of a namespace on every
publish was most of a replica's work in a rollout of all of them.  Event loop
only, like the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from logicbundle import contract
from logicbundle.api.v1alpha1 import LogicBundleSpec
from logicbundle.distributor._models import BundleTarget, PodIdentity, Split
from logicbundle.distributor._targets import TargetStore


@dataclass(frozen=True, slots=True)
class BundleRule:
    """One LogicBundle as the distributor needs it: who it selects, what it published."""

    selects: Callable[[Mapping[str, str]], bool]
    """The bundle's ``spec.target.podSelector``."""
    state: contract.RolloutState | None
    """The published state (None: nothing published yet, so no pod is told anything)."""
    template: BundleTarget | None = None
    """Settings every target of this bundle carries (notify, health check, source); the
    digest in it is ignored."""
    selector_key: str = ""
    """The selector in canonical form: a new rule with the same key selects the same pods
    (empty: unknown, every pod is matched again)."""


@dataclass(slots=True)
class _Pod:
    uid: str | None
    facts: contract.PodFacts
    targets: dict[str, BundleTarget] = field(default_factory=dict)


def bundle_target(target: contract.Target, template: BundleTarget | None) -> BundleTarget:
    """The wire form of one target, with the bundle's settings."""
    split = (
        Split(candidate=target.candidate, weight=target.weight)
        if target.candidate is not None
        else None
    )
    revision = target.revision or None
    trace = target.traceparent
    if template is None:
        return BundleTarget(digest=target.digest, split=split, revision=revision, traceparent=trace)
    return template.model_copy(
        update={"digest": target.digest, "split": split, "revision": revision, "traceparent": trace}
    )


def bundle_template(spec: LogicBundleSpec) -> BundleTarget:
    """The settings every target of a bundle carries (the digest is a placeholder).

    No mount path: volumes are fixed when the pod is created, so the layout
    the webhook wrote into the agent's configuration is the one the
    application sees.
    """
    return BundleTarget(
        digest="sha256:" + "0" * 64,
        notify=spec.target.notify,
        health_check=spec.target.health_check,
        source=spec.source.ref.split("@", 1)[0],
    )


def bundle_rule(spec: LogicBundleSpec, state: contract.RolloutState | None) -> BundleRule:
    """What the distributor needs of a bundle: who it selects, what it published."""
    selector = spec.target.pod_selector
    return BundleRule(
        selects=lambda labels: selector.matches(dict(labels)),
        state=state,
        template=bundle_template(spec),
        selector_key=selector.model_dump_json(by_alias=True, exclude_none=True),
    )


def rule_of(body: Mapping[str, Any]) -> BundleRule | None:
    """A LogicBundle object's rule, from its spec and ``status.targetState``.

    None when the spec or the published state cannot be followed (a spec the
    models refuse, a state outside the grammar or naming another bundle): the
    caller keeps what it followed last, as the agent's slow path does, so a
    bad write never takes a target away from the pods.  No state published
    yet is a rule with no state (nothing told).
    """
    try:
        spec = LogicBundleSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    raw = (body.get("status") or {}).get("targetState")
    name = (body.get("metadata") or {}).get("name")
    state = None
    if raw is not None:
        try:
            state = contract.state_from_json(raw)
        except contract.StateError:
            return None
        if state.bundle != name:
            return None
    return bundle_rule(spec, state)


def facts_of(pod: Mapping[str, Any]) -> contract.PodFacts:
    """What the target rule knows of a pod object: cohort key, labels, admission time."""
    meta = pod.get("metadata") or {}
    return contract.pod_facts(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


class RuleTargets:
    """Feeds a :class:`TargetStore` from bundles and pods (see the module doc)."""

    def __init__(self, store: TargetStore) -> None:
        self.store = store
        self._bundles: dict[str, dict[str, BundleRule]] = {}
        self._pods: dict[str, dict[str, _Pod]] = {}
        self._selected: dict[str, dict[str, set[str]]] = {}
        """Per namespace and bundle, the pods its selector matches."""

    # -- bundles ------------------------------------------------------------------------

    def set_bundle(self, namespace: str, name: str, rule: BundleRule | None) -> None:
        """A bundle appeared, changed or (``rule`` None) went away."""
        bundles = self._bundles.setdefault(namespace, {})
        before = bundles.get(name)
        selected = self._selected.setdefault(namespace, {})
        pods = self._pods.get(namespace, {})
        if rule is None:
            if bundles.pop(name, None) is None:
                return
            names_ = selected.pop(name, set())
        elif (
            before is not None
            and rule.selector_key
            and before.selector_key == rule.selector_key
            and name in selected
        ):
            bundles[name] = rule
            if _tells_the_same(before, rule):
                return  # a status write (counts, conditions, analysis): no pod's target moves
            names_ = selected[name]
        else:
            bundles[name] = rule
            was = selected.get(name, set())
            names_ = selected[name] = {
                n for n, pod in pods.items() if rule.selects(pod.facts.labels)
            }
            names_ = names_ | was  # the ones it no longer selects lose its target
        # In the pods' order (a membership test each: cheap next to a selector match).
        # The pods of one cohort share one target object (``shared``): built once, and
        # the store compares and versions it by identity.
        shared: dict[tuple[object, ...], BundleTarget] = {}
        for pod_name, pod in list(pods.items()):
            if pod_name not in names_:
                continue
            target = (
                self._target(rule, pod, shared)
                if rule is not None and pod_name in selected.get(name, ())
                else None
            )
            if pod.targets.get(name) == target:
                continue
            if target is None:
                pod.targets.pop(name, None)
            else:
                pod.targets[name] = target
            self.store.set_targets(namespace, pod_name, pod.targets, uid=pod.uid)

    def bundles(self) -> set[tuple[str, str]]:
        return {(ns, name) for ns, bundles in self._bundles.items() for name in bundles}

    def selecting(self, namespace: str, labels: Mapping[str, str]) -> list[str]:
        """The bundles of ``namespace`` whose selector matches ``labels``."""
        return [
            name for name, rule in self._bundles.get(namespace, {}).items() if rule.selects(labels)
        ]

    # -- pods ---------------------------------------------------------------------------

    def set_pod(
        self, namespace: str, name: str, *, uid: str | None, facts: contract.PodFacts
    ) -> None:
        """An opted-in pod appeared or its facts changed."""
        pods = self._pods.setdefault(namespace, {})
        pod = pods.get(name)
        if pod is None or pod.uid != uid:
            pod = pods[name] = _Pod(uid=uid, facts=facts)
        else:
            pod.facts = facts
        targets: dict[str, BundleTarget] = {}
        selected = self._selected.setdefault(namespace, {})
        for bundle, rule in self._bundles.get(namespace, {}).items():
            chosen = selected.setdefault(bundle, set())
            if not rule.selects(facts.labels):
                chosen.discard(name)
                continue
            chosen.add(name)
            target = self._target(rule, pod)
            if target is not None:
                targets[bundle] = target
        pod.targets = targets
        self.store.set_targets(namespace, name, targets, uid=uid)

    def forget_pod(self, namespace: str, name: str) -> None:
        """The pod is gone (or no longer opted in)."""
        pods = self._pods.get(namespace)
        if pods is not None and pods.pop(name, None) is not None:
            for chosen in self._selected.get(namespace, {}).values():
                chosen.discard(name)
            self.store.forget(namespace, name)

    def pods(self) -> set[tuple[str, str]]:
        return {(ns, name) for ns, pods in self._pods.items() for name in pods}

    def knows(self, identity: PodIdentity) -> bool:
        """Whether the pod a token names is here, with that uid (its token still stands)."""
        pod = self._pods.get(identity.namespace, {}).get(identity.name)
        return pod is not None and pod.uid == identity.uid

    def published_digests(self) -> set[str]:
        """Every digest a bundle's published state names (stable or candidate)."""
        digests: set[str] = set()
        for bundles in self._bundles.values():
            for rule in bundles.values():
                if rule.state is None:
                    continue
                digests.update(d for d in (rule.state.stable, rule.state.candidate) if d)
        return digests

    def assigns(self, namespace: str, name: str, bundle: str) -> bool:
        """Whether ``bundle``'s rule gives the pod a target now (its reports then count)."""
        pod = self._pods.get(namespace, {}).get(name)
        return pod is not None and bundle in pod.targets

    @staticmethod
    def _target(
        rule: BundleRule, pod: _Pod, shared: dict[tuple[object, ...], BundleTarget] | None = None
    ) -> BundleTarget | None:
        """The pod's target of a bundle that selects it (``shared``: those built already)."""
        if rule.state is None:
            return None
        target = contract.target_of(rule.state, pod.facts)
        if target is None:
            return None
        if shared is None:
            return bundle_target(target, rule.template)
        # Every field: a Target's equality leaves out its revision and trace.
        key = (target.digest, target.candidate, target.weight, target.revision, target.traceparent)
        built = shared.get(key)
        if built is None:
            built = shared[key] = bundle_target(target, rule.template)
        return built


def _tells_the_same(before: BundleRule, after: BundleRule) -> bool:
    """Whether two rules of a bundle with the same selector give every pod the same target.

    The state's equality leaves out its trace, which the targets carry: compared too.
    """
    if before.state is None or after.state is None:
        return before.state is None and after.state is None and before.template == after.template
    return (
        before.state == after.state
        and before.state.traceparent == after.state.traceparent
        and before.template == after.template
    )
