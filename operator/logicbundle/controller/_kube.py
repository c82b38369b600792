"""The controller's Kubernetes I/O: read Secrets/ConfigMaps/peerings, patch pods, write status.

Thin and synchronous (the official client), run in a dedicated thread pool
so that a rollback of hundreds of pods patches them in parallel.  Error
bodies from the API server can echo what was sent, so messages keep only the
status code and reason: no secret ever reaches a log line or condition.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes.client.exceptions import ApiException

from logicbundle import contract
from logicbundle.api import names
from logicbundle.controller._source import ConfigError
from logicbundle.errors import LogicBundleError

T = TypeVar("T")

GROUP, VERSION, PLURAL = "logicbundle.io", "v1alpha1", "logicbundles"
PEERING_GROUP, PEERING_VERSION, PEERING_PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"


READ_ACCESS_HINT = (
    "The operator reads Secrets only where it is granted to, per namespace: add this "
    "namespace to the chart's rbac.secretNamespaces (and the name to rbac.secretNames "
    "when that list is used)."
)


class KubeError(LogicBundleError):
    """A call to the Kubernetes API failed."""

    reason = "KubernetesApiError"
    retryable = True


def _describe(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason}"


def api_client(kubeconfig: str | None = None, *, pool: int = 64) -> kubernetes.client.ApiClient:
    """A client from a kubeconfig, $KUBECONFIG, or the in-cluster service account."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG"):
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ["KUBECONFIG"], client_configuration=configuration
        )
    else:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    configuration.connection_pool_maxsize = pool
    return kubernetes.client.ApiClient(configuration)


class Kube:
    """The calls the controller makes, each also available as a coroutine via :meth:`run`."""

    def __init__(self, client: kubernetes.client.ApiClient, *, workers: int = 16) -> None:
        self.client = client
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- ObjectReader ------------------------------------------------------------------

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes]:
        try:
            obj = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise ConfigError(
                f"cannot read Secret {namespace}/{name}: {_describe(exc)}",
                hint=READ_ACCESS_HINT if exc.status == 403 else "Create it.",
            ) from None
        return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}

    def config_map(self, namespace: str, name: str) -> Mapping[str, str]:
        try:
            obj = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            raise ConfigError(
                f"cannot read ConfigMap {namespace}/{name}: {_describe(exc)}",
                hint="Create it, or grant the operator read access to it.",
            ) from None
        return dict(obj.data or {})

    def metric_template(self, *, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A metric template (``namespace`` ignored for the cluster kind); None: absent."""
        try:
            if kind == names.CLUSTER_TEMPLATE_KIND:
                obj = self.custom.get_cluster_custom_object(
                    names.GROUP, names.VERSION, names.CLUSTER_TEMPLATE_PLURAL, name
                )
            else:
                obj = self.custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, names.TEMPLATE_PLURAL, name
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read {kind} {name}: {_describe(exc)}") from None
        result: Mapping[str, Any] = obj  # type: ignore[assignment]
        return result

    def cluster_peering(
        self, name: str, *, timeout: float | None = None
    ) -> Mapping[str, Any] | None:
        """The ClusterKopfPeering ``name`` (None: it or its CRD does not exist).

        Read by listing with a field selector: the chart grants list and watch on
        peerings (kopf's own needs), not get.  ``timeout`` bounds the request (the
        leader's fence reads it through partitions); an unreachable or silent API
        server is a :class:`KubeError` like a refusal.
        """
        try:
            found = self.custom.list_cluster_custom_object(
                PEERING_GROUP,
                PEERING_VERSION,
                PEERING_PLURAL,
                field_selector=f"metadata.name={name}",
                _request_timeout=timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read ClusterKopfPeering {name}: {_describe(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot read ClusterKopfPeering {name}: {type(exc).__name__}"
            ) from None
        items = found.get("items") if isinstance(found, Mapping) else None
        for item in items or []:
            if isinstance(item, Mapping) and item.get("metadata", {}).get("name") == name:
                return item
        return None

    # -- writes ------------------------------------------------------------------------

    def renew_peering(
        self, name: str, identity: str, record: Mapping[str, Any], *, timeout: float | None = None
    ) -> None:
        """Merge-patch one replica's record into the ClusterKopfPeering, as kopf's keepalive."""
        try:
            self.custom.patch_cluster_custom_object(
                PEERING_GROUP,
                PEERING_VERSION,
                PEERING_PLURAL,
                name,
                {"status": {identity: dict(record)}},
                _request_timeout=timeout,
            )
        except ApiException as exc:
            raise KubeError(
                f"cannot renew in ClusterKopfPeering {name}: {_describe(exc)}"
            ) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(
                f"cannot renew in ClusterKopfPeering {name}: {type(exc).__name__}"
            ) from None

    def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        """Merge-patch annotations (None removes one); a pod that is gone is not an error."""
        try:
            self.core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": dict(annotations)}}
            )
        except ApiException as exc:
            if exc.status == 404:
                return
            raise KubeError(f"cannot patch pod {namespace}/{name}: {_describe(exc)}") from None

    def patch_pod_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """Merge-patch labels (None removes one); a pod that is gone is not an error."""
        try:
            self.core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": dict(labels)}})
        except ApiException as exc:
            if exc.status == 404:
                return
            raise KubeError(f"cannot label pod {namespace}/{name}: {_describe(exc)}") from None

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """Merge-patch the status; the object as the API server stored it (None: it is gone)."""
        try:
            stored = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(
                f"cannot write the status of {namespace}/{name}: {_describe(exc)}"
            ) from None
        return stored if isinstance(stored, Mapping) else None

    def publish_state(
        self, namespace: str, bundle: str, *, owner_uid: str | None, state: str
    ) -> None:
        """Write ``bundle``'s published state into its ConfigMap, creating it when absent.

        Owned by the LogicBundle (``owner_uid``), so deleting the bundle deletes it.
        """
        name = contract.state_configmap_name(bundle)
        data = {contract.STATE_KEY: state}
        try:
            self.core.patch_namespaced_config_map(name, namespace, {"data": data})
            return
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(
                    f"cannot write ConfigMap {namespace}/{name}: {_describe(exc)}"
                ) from None
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": "logicbundle-operator",
                    "logicbundle.io/bundle": bundle,
                },
            },
            "data": data,
        }
        if owner_uid:
            body["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "LogicBundle",
                    "name": bundle,
                    "uid": owner_uid,
                    "controller": True,
                }
            ]
        try:
            self.core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status == 409:  # created meanwhile (another replica): write over it
                self.publish_state(namespace, bundle, owner_uid=owner_uid, state=state)
                return
            raise KubeError(
                f"cannot create ConfigMap {namespace}/{name}: {_describe(exc)}"
            ) from None

    def delete_state(self, namespace: str, bundle: str) -> None:
        """Delete ``bundle``'s state ConfigMap; one already gone is not an error."""
        name = contract.state_configmap_name(bundle)
        try:
            self.core.delete_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(
                    f"cannot delete ConfigMap {namespace}/{name}: {_describe(exc)}"
                ) from None

    def annotate_bundle(self, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"metadata": {"annotations": dict(annotations)}},
            )
        except ApiException as exc:
            raise KubeError(f"cannot annotate {namespace}/{name}: {_describe(exc)}") from None
