"""Which namespaces the operator serves: one definition for every part that must agree.

The operator (which LogicBundles it reconciles), the distributor replicas
(which published states they follow) and the injection webhook (which pods
it injects) must serve the same namespaces; the Helm chart passes the same
values to all three, and each computes the set with :class:`ServedNamespaces`.

* Named namespaces (``--namespace``, the chart's ``watchNamespaces``): exactly
  those.  Naming a namespace is how to ask for one that is otherwise left
  out, ``kube-system`` or the operator's own included.
* Otherwise the whole cluster but the system namespaces
  (:data:`SYSTEM_NAMESPACES`), the operator's own namespace and any
  namespace excluded on top (``--exclude-namespace``, the chart's
  ``excludeNamespaces``).  A LogicBundle there is not reconciled (no
  finalizer, no status), and no pod there is injected.

Standard library only: the webhook and the distributor import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

SYSTEM_NAMESPACES: Final = ("kube-system", "kube-public", "kube-node-lease")
"""Never served unless named: the cluster's own workloads."""

NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"
"""The label the API server sets on every Namespace to its name (for selectors)."""


@dataclass(frozen=True, kw_only=True)
class ServedNamespaces:
    """The namespaces served: ``named`` ones, or every one but ``excluded``."""

    named: tuple[str, ...] = ()
    """Exactly these (empty: the whole cluster but :attr:`excluded`)."""
    excluded: tuple[str, ...] = ()
    """Left out of the whole cluster, sorted (ignored when :attr:`named` is set)."""

    @classmethod
    def of(
        cls,
        *,
        named: Iterable[str] = (),
        operator_namespace: str | None = None,
        exclude: Iterable[str] = (),
    ) -> ServedNamespaces:
        """The set a deployment serves: ``named``, or all but the defaults and ``exclude``."""
        listed = tuple(dict.fromkeys(named))
        if listed:
            return cls(named=listed)
        left_out = {*SYSTEM_NAMESPACES, *exclude}
        if operator_namespace:
            left_out.add(operator_namespace)
        return cls(excluded=tuple(sorted(left_out)))

    def serves(self, namespace: str | None) -> bool:
        """Whether objects of ``namespace`` are served (None, cluster-scoped: no)."""
        if not namespace:
            return False
        if self.named:
            return namespace in self.named
        return namespace not in self.excluded

    @property
    def field_selector(self) -> str | None:
        """For a cluster-wide list or watch: leave the excluded namespaces out server-side.

        None when nothing is left out, or when named namespaces are listed one by one.
        """
        if self.named or not self.excluded:
            return None
        return ",".join(f"metadata.namespace!={namespace}" for namespace in self.excluded)

    def webhook_selector(self) -> dict[str, Any]:
        """The injection webhook's ``namespaceSelector`` for the same set."""
        if self.named:
            return {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(self.named)}
                ]
            }
        return {
            "matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": list(self.excluded)}
            ]
        }
