"""The webhook's Kubernetes I/O, with the synchronous client: listings and the certificate Secret.

Kept apart from the decisions so that everything else is tested without an
API server; the e2e suite runs these against the real one.  Raw JSON is read
(``_preload_content=False``): the webhook needs a few fields of each object, and
the client's models are slow to build and lose unknown fields.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from logicbundle.api import names
from logicbundle.webhook._certs import CertificateBundle, CertificateConflictError

_NOT_FOUND = 404
_CONFLICT = 409


def _raw(response: Any) -> Any:
    return json.loads(response.data)


class KubernetesClusterView:
    """Lists the namespace's ``LogicBundle`` objects on every admission (in a thread)."""

    def __init__(self, api_client: Any) -> None:
        self._custom = client.CustomObjectsApi(api_client)

    async def logic_bundles(self, namespace: str) -> Sequence[Mapping[str, Any]]:
        response = await asyncio.to_thread(
            self._custom.list_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            _preload_content=False,
        )
        return list(_raw(response).get("items") or ())


class SecretCertificateStore:
    """Keeps the certificate in a Secret and patches the caBundle of the webhook configuration.

    Writes use the Secret's ``resourceVersion`` (optimistic concurrency), so
    two replicas renewing at once cannot both win.
    """

    def __init__(
        self, *, api_client: Any, namespace: str, secret_name: str, configuration_name: str
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._namespace = namespace
        self._secret = secret_name
        self._configuration = configuration_name
        self._versions: dict[bytes, str] = {}

    def read(self) -> CertificateBundle | None:
        try:
            secret = _raw(
                self._core.read_namespaced_secret(
                    self._secret, self._namespace, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == _NOT_FOUND:
                return None
            raise
        data = {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}
        try:
            bundle = CertificateBundle.from_secret_data(data)
        except KeyError:
            return None
        self._versions[bundle.cert] = secret["metadata"]["resourceVersion"]
        return bundle

    def write(self, bundle: CertificateBundle, *, replaces: CertificateBundle | None) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {
                "name": self._secret,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/managed-by": "logicbundle"},
            },
            "data": {k: base64.b64encode(v).decode() for k, v in bundle.secret_data().items()},
        }
        try:
            if replaces is None:
                self._core.create_namespaced_secret(self._namespace, body)  # type: ignore[arg-type]
                return
            version = self._versions.get(replaces.cert)
            if version is not None:
                body["metadata"]["resourceVersion"] = version
            self._core.replace_namespaced_secret(self._secret, self._namespace, body)  # type: ignore[arg-type]
        except ApiException as error:
            if error.status == _CONFLICT or (error.status == _NOT_FOUND and replaces is not None):
                raise CertificateConflictError(str(error.reason)) from error
            raise

    def publish_ca(self, ca_bundle: bytes) -> None:
        encoded = base64.b64encode(ca_bundle).decode()
        try:
            current = _raw(
                self._admission.read_mutating_webhook_configuration(
                    self._configuration, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status == _NOT_FOUND:
                return  # not installed (yet): the chart or the caller installs it with the CA
            raise
        webhooks = current.get("webhooks") or []
        if all((w.get("clientConfig") or {}).get("caBundle") == encoded for w in webhooks):
            return
        for webhook in webhooks:
            webhook.setdefault("clientConfig", {})["caBundle"] = encoded
        # A JSON merge patch would replace the list whole; a replace with the
        # resourceVersion we read keeps every other field and fails on a race.
        self._admission.replace_mutating_webhook_configuration(self._configuration, current)
