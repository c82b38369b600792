"""The API server calls a mutating admission webhook served on 127.0.0.1 with our own certificate.

This is the path the injection webhook takes: a serving certificate made
with ``cryptography`` (kopf's own generator fails on OpenSSL 3), the CA in
the webhook configuration's caBundle, and a JSONPatch in the response.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2e.harness import pki
from e2e.harness.cluster import Cluster
from e2e.harness.proc import wait_for


class _LabelWebhook(BaseHTTPRequestHandler):
    calls: list[str]

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        self.calls.append(request["object"]["metadata"].get("name", ""))
        patch = [{"op": "add", "path": "/metadata/labels/e2e-mutated", "value": "yes"}]
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": True,
                    "patchType": "JSONPatch",
                    "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def label_webhook(tmp_path: Path) -> Iterator[tuple[int, bytes, list[str]]]:
    """A tiny HTTPS webhook on 127.0.0.1 that adds a label; yields (port, CA PEM, calls)."""
    ca = pki.CertificateAuthority("e2e-webhook-ca")
    crt, key = ca.issue("webhook", ip_addresses=("127.0.0.1",), server=True).write(
        tmp_path, "webhook"
    )
    calls: list[str] = []

    class Handler(_LabelWebhook):
        pass

    Handler.calls = calls
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca.cert_pem, calls
    server.shutdown()
    server.server_close()
    thread.join()


def _pod(name: str, labels: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
    }


def test_the_api_server_calls_a_mutating_webhook_on_127_0_0_1_for_pod_creation(
    cluster: Cluster, namespace: str, label_webhook: tuple[int, bytes, list[str]]
) -> None:
    port, ca_pem, calls = label_webhook
    name = f"e2e-label-{namespace}"
    cluster.request(
        "POST",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "label.e2e.logicbundle.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/mutate",
                        "caBundle": base64.b64encode(ca_pem).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "objectSelector": {"matchLabels": {"e2e-webhook": "on"}},
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                }
            ],
        },
    )
    pods = f"/api/v1/namespaces/{namespace}/pods"
    try:
        # The API server picks the configuration up asynchronously: dry runs until it does.
        wait_for(
            lambda: (
                cluster.request("POST", f"{pods}?dryRun=All", _pod("probe", {"e2e-webhook": "on"}))[
                    "metadata"
                ]["labels"].get("e2e-mutated")
                == "yes"
            ),
            what="the webhook configuration to take effect",
            timeout=30,
        )
        calls.clear()
        opted_in = cluster.request("POST", pods, _pod("opted-in", {"e2e-webhook": "on"}))
        left_alone = cluster.request("POST", pods, _pod("left-alone", {"other": "x"}))
        assert opted_in["metadata"]["labels"] == {"e2e-webhook": "on", "e2e-mutated": "yes"}
        assert left_alone["metadata"]["labels"] == {"other": "x"}
        assert calls == ["opted-in"]
    finally:
        cluster.request(
            "DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}"
        )
