"""The one place that names the versions of everything the e2e harness builds.

Each binary is cached under ``~/.cache/logicbundle-e2e/<name>-<version>/`` (or
``$LOGICBUNDLE_E2E_CACHE``), so bumping a version here rebuilds just that part.
"""

from __future__ import annotations

KUBERNETES = "v1.37.2"
"""kube-apiserver, kube-controller-manager, kube-scheduler and kubectl; kubelet and kube-proxy."""

COREDNS = "v1.15.0"
"""The real node's cluster DNS (e2e/harness/node.py)."""

ETCD = "v3.6.16"
"""Kubernetes watches need etcd >= 3.5.13; Debian and PyPI ship older ones."""

KWOK = "v0.8.0"
COSIGN = "v3.1.3"
ORAS = "v1.3.6"
HELM = "v3.22.0"

JAEGER = "v1.75.0"
"""github.com/jaegertracing/jaeger: its cmd/jaeger is Jaeger v2 (the tracing suite's backend)."""

CLI_UTILS = "v0.37.2"
"""sigs.k8s.io/cli-utils, for the kstatus checker."""

ARGO_CD = "v3.6.2"
"""github.com/argoproj/argo-cd/v3, whose util/lua runs the Argo CD health check and actions."""

ARGO_CD_GO_TOOLCHAIN = "go1.27.3"
"""argo-cd v3.6 needs Go 1.27: the argolua build alone sets GOTOOLCHAIN to this (module proxy)."""

FLUX_SOURCE_CONTROLLER = "v1.9.6"
"""github.com/fluxcd/source-controller: serves the GitRepository of e2e/suites/test_flux.py."""

FLUX_KUSTOMIZE_CONTROLLER = "v1.9.6"
"""github.com/fluxcd/kustomize-controller: applies the Kustomization and health-checks it."""

FLUX_HELM_CONTROLLER_API = "v1.6.5"
"""github.com/fluxcd/helm-controller/api: the HelmRelease types its CRD is generated from (the
proxy refuses the helm-controller module itself, 403, so its config/crd is out of reach)."""

CONTROLLER_TOOLS = "v0.19.0"
"""sigs.k8s.io/controller-tools: controller-gen writes the HelmRelease CRD from those types, as
helm-controller's own Makefile does."""

FLUX_REPLACES: dict[str, tuple[str, ...]] = {
    "source-controller": ("github.com/fluxcd/pkg/artifact=github.com/fluxcd/pkg/artifact@v0.18.0",),
}
"""Extra ``go mod edit -replace`` per controller: the module proxy refuses pkg/artifact v0.18.3
(403), which source-controller v1.9.6 requires; it builds against v0.18.0."""
