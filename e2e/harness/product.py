"""The product installed on the real node the way a user installs it: image, chart, app, bundle.

Shared by the real-node suite (``e2e/suites/node``), its benchmark
(``e2e/bench/bench_real_node.py``) and ``make demo ARGS=--real-node``:

- :func:`install` pushes the images the harness built (:mod:`e2e.harness.images`)
  to the harness registry, then runs the commands of ``docs/quickstart.md`` as
  written: a key pair, the chart packaged, pushed and ``helm install``-ed from the
  registry with that image (its defaults: two replicas, one leader), a first bundle
  written, pushed, signed and applied, the ``shop`` Deployment opted in, a second
  version aborted at its canary; then it pushes the example bundles (v1, v2 and a
  bad v3), signed with the page's key, and rolls out v1;
- :func:`shop_deployment` is the sample app as a user deploys it: non-root,
  read-only root filesystem, every capability dropped, opted in by its label.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from e2e.harness import build, images, services
from e2e.harness.cluster import Cluster
from e2e.harness.operator import EXAMPLES, KeyPair, condition, push_bundle
from e2e.harness.proc import HarnessError, wait_for
from e2e.harness.realpods import Traffic, container_statuses, is_ready, pods, served
from logicbundle.api import names

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
PAGE_REGISTRY = "registry.example.com"
"""The registry the page names; the harness's address replaces it."""
PLAIN_HTTP = (
    (re.compile(r"^(\s*helm (?:push|install))\b", re.M), r"\1 --plain-http"),
    (re.compile(r"^(\s*logicbundle (?:push|sign))\b", re.M), r"\1 --insecure"),
)
"""The flags the page says a plain-HTTP registry (the harness's) needs."""
CHART = REPO / "charts" / "logicbundle-operator"
RELEASE = "logicbundle-operator"
"""The release name: it contains the chart's, so objects are named ``logicbundle-operator-*``."""
OPERATOR_NS = "logicbundle-system"
SHOP = "shop"
APP_SELECTOR = "app=shop"
APP_UID = 10001
"""The sample app's user: not the agent's 65532, as in most real pods."""

BUNDLES = (
    ("v1", "pricing-v1", "1.0.0"),
    ("v2", "pricing-v2", "2.0.0"),
    ("v3", "pricing-flaky", "3.0.0"),
)
"""tag, example directory, version: v3 fails a fifth of its calls."""

ROLLOUT: dict[str, Any] = {
    "stages": [
        {"name": "internal", "internal": {"matchLabels": {names.LABEL_COHORT: "internal"}}},
        {"name": "canary", "percent": 5, "pause": "4s"},
        {"name": "everyone", "all": True},
    ],
    "analysis": {
        "provider": "builtin",
        "interval": "2s",
        "minSamples": 10,
        "metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.05}],
    },
}
"""The suites' rollout: the quick start's stages, analysis tuned to the suites' traffic."""


def _log(msg: str) -> None:
    print(f"[e2e.product] {msg}", file=sys.stderr, flush=True)


@dataclass
class Installed:
    """What :func:`install` left running, and what a test needs to drive it."""

    cluster: Cluster
    registry_host: str
    key: KeyPair
    digests: dict[str, str]
    pushed: dict[str, images.PushedImage]
    bundle: dict[str, Any]
    """The LogicBundle as last applied (:meth:`set_ref` changes and applies it)."""
    rollout: dict[str, Any]
    """The rollout the suites use unless a test asks for another."""
    agent_env: dict[str, str] = field(default_factory=dict)
    quickstart_commands: list[str] = field(default_factory=list)
    """The commands of docs/quickstart.md that installed it."""

    @property
    def app_image(self) -> str:
        return self.pushed["sample-app"].reference

    def ref(self, tag: str) -> str:
        return f"{self.registry_host}/{SHOP}/pricing:{tag}"

    def set_ref(self, tag: str, *, rollout: dict[str, Any] | None = None) -> None:
        """Apply the LogicBundle pointing at ``tag`` (and ``rollout``, default the suites')."""
        self.bundle["spec"]["source"]["ref"] = self.ref(tag)
        self.bundle["spec"]["rollout"] = rollout if rollout is not None else self.rollout
        self.cluster.kubectl("apply", "-n", SHOP, "-f", "-", input=json.dumps(self.bundle))

    def bundle_object(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.cluster.request(
            "GET", f"/apis/logicbundle.io/v1alpha1/namespaces/{SHOP}/logicbundles/pricing"
        )
        return obj

    def request_action(self, action: str) -> None:
        """Annotate the LogicBundle with a requested action (``promote``, ``abort`` ...)."""
        token = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.cluster.request(
            "PATCH",
            f"/apis/logicbundle.io/v1alpha1/namespaces/{SHOP}/logicbundles/pricing",
            {"metadata": {"annotations": {names.ANNOTATION_REQUESTED_ACTION: f"{action}@{token}"}}},
        )

    def uninstall(self) -> None:
        """Delete the LogicBundle (its finalizer releases the pods), then ``helm uninstall``."""
        with contextlib.suppress(HarnessError):
            self.cluster.kubectl(
                "delete", "logicbundle", "pricing", "-n", SHOP, "--wait=true", "--timeout=60s"
            )
        helm(self.cluster, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", "--timeout", "120s")


def helm_env(cluster: Cluster) -> dict[str, str]:
    """helm's and kubectl's environment for ``cluster``: its kubeconfig, helm's own dirs."""
    return {
        "HOME": str(cluster.run_dir),
        "HELM_CACHE_HOME": str(cluster.run_dir / "helm-cache"),
        "HELM_CONFIG_HOME": str(cluster.run_dir / "helm-config"),
        "HELM_DATA_HOME": str(cluster.run_dir / "helm-data"),
        **cluster.env(),
    }


def helm(cluster: Cluster, *args: str) -> str:
    """Run the harness's helm against ``cluster``; stdout, or HarnessError with stderr."""
    proc = subprocess.run(
        [str(services.helm()), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **helm_env(cluster)},
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"helm {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def create_namespace(cluster: Cluster, name: str) -> None:
    cluster.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )


def diagnose(cluster: Cluster) -> str:
    """What a person would look at when the pods do not come up: pods, events, logs."""
    parts = []
    for args in (
        ("get", "pods", "-A", "-o", "wide"),
        ("get", "events", "-A", "--sort-by=.lastTimestamp"),
        ("get", "logicbundles", "-A", "-o", "yaml"),
    ):
        try:
            parts.append(f"$ kubectl {' '.join(args)}\n{cluster.kubectl(*args)[-6000:]}")
        except HarnessError as error:
            parts.append(f"$ kubectl {' '.join(args)}: {error}")
    for ns, selector in ((SHOP, APP_SELECTOR), (OPERATOR_NS, "app.kubernetes.io/component")):
        for pod in pods(cluster, ns, selector):
            for item in container_statuses(pod):
                if item.get("restartCount"):
                    parts.append(
                        f"{pod['metadata']['name']}/{item['name']}: restarted "
                        f"{item['restartCount']}x, last {json.dumps(item.get('lastState'))}"
                    )
    for ns, selector, containers in (
        (SHOP, APP_SELECTOR, (names.AGENT_CONTAINER, "app")),
        (OPERATOR_NS, "app.kubernetes.io/component=operator", ("operator",)),
    ):
        # The pods that are not Ready first: they are the ones to explain.
        found = sorted(pods(cluster, ns, selector), key=is_ready)
        for pod in found[:2]:
            for container in containers:
                logs = ["logs", "-n", ns, pod["metadata"]["name"], "-c", container, "--tail=40"]
                try:
                    parts.append(f"$ kubectl {' '.join(logs)}\n{cluster.kubectl(*logs)}")
                except HarnessError as error:
                    parts.append(f"$ kubectl {' '.join(logs)}: {error}")
    return "\n".join(parts)


def wait_webhook_routed(cluster: Cluster, *, timeout: float = 60) -> None:
    """Until the API server reaches the injection webhook through its Service.

    A server-side dry run of an opted-in pod in ``shop``: the webhook ran when the
    answer carries its ``logicbundle.io/injected`` record (injected or skipped).
    """
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "webhook-probe-",
            "labels": {names.LABEL_INJECT: names.LABEL_INJECT_ENABLED},
        },
        "spec": {"containers": [{"name": "probe", "image": "probe.invalid/probe:1"}]},
    }

    def routed() -> bool:
        answer = cluster.request("POST", f"/api/v1/namespaces/{SHOP}/pods?dryRun=All", probe)
        return names.ANNOTATION_INJECTED in (answer["metadata"].get("annotations") or {})

    wait_for(routed, what="the API server reaching the injection webhook", timeout=timeout)


def wait_webhook_endpoints(cluster: Cluster, *, count: int, timeout: float = 120) -> None:
    """Until the webhook Service's EndpointSlice lists ``count`` ready endpoints."""
    path = (
        f"/apis/discovery.k8s.io/v1/namespaces/{OPERATOR_NS}/endpointslices"
        f"?labelSelector=kubernetes.io/service-name={RELEASE}-webhook"
    )

    def ready() -> bool:
        slices = cluster.request("GET", path)["items"]
        endpoints = [e for s in slices for e in s.get("endpoints") or []]
        return sum(bool((e.get("conditions") or {}).get("ready")) for e in endpoints) >= count

    wait_for(ready, what=f"{count} ready webhook endpoints", timeout=timeout)


def recreate_pods_without_agent(cluster: Cluster, *, count: int, timeout: float) -> None:
    """The documented remedy for a pod admitted while the webhook was unreachable.

    Waits until the ``shop`` Deployment has ``count`` pods; any of them admitted
    without the agent (failurePolicy Ignore) is deleted, so its ReplicaSet creates
    it again, through the webhook. Says so on stderr: it is a finding, not a pass.
    """

    def settled() -> list[dict[str, Any]] | None:
        found = [
            p
            for p in pods(cluster, SHOP, "deployment=shop")
            if not p["metadata"].get("deletionTimestamp")
        ]
        return found if len(found) == count else None

    for pod in wait_for(settled, what=f"{count} shop pods", timeout=timeout):
        annotations = pod["metadata"].get("annotations") or {}
        if names.ANNOTATION_INJECTED not in annotations:
            name = pod["metadata"]["name"]
            _log(f"{name} was admitted without the agent (webhook unreachable); re-creating it")
            cluster.request("DELETE", f"/api/v1/namespaces/{SHOP}/pods/{name}")


def deploy(cluster: Cluster, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", SHOP, "-f", "-", input=json.dumps(manifest))


def for_registry(command: str, registry_host: str) -> str:
    """``command`` of the page against the harness registry: its address, plain HTTP."""
    command = command.replace(PAGE_REGISTRY, registry_host)
    for pattern, flag in PLAIN_HTTP:
        command = pattern.sub(flag, command)
    return command


def quickstart_commands(doc: Path) -> tuple[list[str], str]:
    """The shell commands of ``doc`` (its ``sh`` blocks) and its ``yaml`` block (the bundle)."""
    text = doc.read_text()
    commands = [b.strip() for b in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)]
    (manifest,) = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
    return commands, manifest


def install(
    cluster: Cluster,
    registry_host: str,
    work: Path,
    *,
    agent_env: dict[str, str] | None = None,
    rollout: dict[str, Any] | None = None,
    quickstart: Path = QUICKSTART,
    replicas: int = 10,
    timeout: float = 300,
) -> Installed:
    """Install the product by the commands of ``quickstart``, run as written.

    Before them, what the page assumes a user has: the ``shop`` namespace with a
    ``shop`` Deployment (one pod, not opted in yet; scaled to ``replicas`` once
    opted in), the image in ``$IMAGE_REPOSITORY``/``$IMAGE_TAG``, and the page's
    ``pricing.yaml`` whose ``ref`` names the harness registry (plain HTTP, so
    ``insecure: true``; :func:`for_registry` does the same to the commands). Right
    after the LogicBundle, an internal pod (a one-replica Deployment labelled
    ``logicbundle.io/cohort: internal``, opted in); from the opt-in on, traffic, for
    the page's analysis. After the page (its second version aborted: every pod back
    on its first), the example bundles signed with the page's ``cosign.key``, and
    v1 rolled out. Returns once every pod serves v1, with the suites' rollout applied.
    """
    # Offline: the base and the wheels are cached by make setup; a source change since
    # then rebuilds the project image from them (seconds), inside the namespace too.
    pushed = images.push_images(
        registry_host, repository_prefix="logicbundle", built=images.ensure_built(offline=True)
    )
    repository, _, image_tag = pushed["logicbundle"].reference.rpartition(":")
    env = dict(agent_env or {})
    app_image = pushed["sample-app"].reference
    work.mkdir(parents=True, exist_ok=True)
    commands, manifest_text = quickstart_commands(quickstart)
    bundle = yaml.safe_load(manifest_text)
    source = bundle["spec"]["source"]
    source["ref"] = source["ref"].replace(PAGE_REGISTRY, registry_host)
    source["insecure"] = True
    (work / "pricing.yaml").write_text(yaml.safe_dump(bundle))
    # The page's commands run from a checkout of the repository (the chart's path).
    (work / "charts").symlink_to(REPO / "charts")
    create_namespace(cluster, SHOP)
    # One replica before the opt-in, scaled after it: the opt-in then replaces one pod,
    # not ten, and the ten are created through the webhook once both replicas serve it.
    deploy(
        cluster,
        shop_deployment("shop", image=app_image, replicas=1, labels={"app": "shop"}, opt_in=False),
    )
    shell_env = {
        # logicbundle: the command of this checkout's environment.
        "PATH": f"{build.KUBERNETES.bin_dir}:{services.helm().parent}:"
        f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "IMAGE_REPOSITORY": repository,
        "IMAGE_TAG": image_tag,
        **helm_env(cluster),
    }
    traffic = contextlib.ExitStack()
    with traffic:
        _run_page(
            cluster,
            registry_host,
            commands,
            work,
            shell_env,
            env,
            app_image,
            traffic,
            replicas=replicas,
            timeout=timeout,
        )
        # The page aborted its second version: every pod back on its first.
        page = cluster.request(
            "GET", f"/apis/logicbundle.io/v1alpha1/namespaces/{SHOP}/logicbundles/pricing"
        )
        stable = page["status"]["stableDigest"]
        _wait_serving(cluster, stable, replicas + 1, timeout)
        # The suites' versions, signed with the page's key (the one the chart trusts).
        key = KeyPair(
            private_pem=(work / "cosign.key").read_bytes(),
            public_pem=(work / "cosign.pub").read_text(),
        )
        digests = {
            tag: push_bundle(
                registry_host,
                EXAMPLES / "bundles" / directory,
                repository=f"{SHOP}/pricing",
                tag=tag,
                version=version,
                key=key,
            )
            for tag, directory, version in BUNDLES
        }
        installed = Installed(
            cluster=cluster,
            registry_host=registry_host,
            key=key,
            digests=digests,
            pushed=pushed,
            bundle=bundle,
            rollout=rollout or ROLLOUT,
            agent_env=env,
            quickstart_commands=commands,
        )
        # From the page's first version to v1 through the suites' stages, under traffic.
        installed.set_ref("v1", rollout=ROLLOUT)
        _wait_serving(cluster, digests["v1"], replicas + 1, timeout)

        def v1_stable() -> bool:
            obj = installed.bundle_object()
            status = obj.get("status") or {}
            ready = condition(obj, "Ready") or {}
            return (
                status.get("stableDigest") == digests["v1"]
                and not status.get("stage")
                and status.get("observedGeneration") == obj["metadata"].get("generation")
                and ready.get("status") == "True"
            )

        # The pods serve v1 a moment before the rollout is done: the tests start after it.
        wait_for(v1_stable, what="the rollout of v1 done (Ready, no stage)", timeout=timeout)
    installed.set_ref("v1")
    return installed


def _wait_serving(cluster: Cluster, digest: str, total: int, timeout: float) -> None:
    """Until ``total`` pods of the app are Ready and every one serves ``digest``."""

    def all_serving() -> bool:
        found = [
            p
            for p in pods(cluster, SHOP, APP_SELECTOR)
            if not p["metadata"].get("deletionTimestamp")
        ]
        if len(found) != total or not all(is_ready(p) for p in found):
            return False
        return set(served(cluster, SHOP, APP_SELECTOR).values()) == {digest}

    try:
        wait_for(
            all_serving,
            what=f"{total} injected pods Ready and serving {digest[:19]}",
            timeout=timeout,
        )
    except HarnessError as error:
        raise HarnessError(f"{error}\n{diagnose(cluster)}") from None


def _run_page(
    cluster: Cluster,
    registry_host: str,
    commands: list[str],
    work: Path,
    shell_env: dict[str, str],
    env: dict[str, str],
    app_image: str,
    traffic: contextlib.ExitStack,
    *,
    replicas: int,
    timeout: float,
) -> None:
    """Run the page's commands in ``work``, with the harness's steps between them."""
    for command in commands:
        line = for_registry(command, registry_host)
        if line.startswith("helm install") and env:
            # The suites' own chart values (the agent's test seam), beside the page's.
            line += "".join(
                f" --set agent.env[{i}].name={k} --set-string agent.env[{i}].value={v}"
                for i, (k, v) in enumerate(env.items())
            )
        _log(f"$ {line}")
        try:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", line],
                cwd=work,
                env=shell_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HarnessError(
                f"quick-start command timed out after {timeout:.0f}s: {line}\n{diagnose(cluster)}"
            ) from None
        if done.returncode != 0:
            raise HarnessError(
                f"quick-start command failed: {line}\n{done.stderr.strip()}\n{diagnose(cluster)}"
            )
        if line.startswith("helm install"):
            # helm --wait returns when a replica is Ready; kube-proxy routes the webhook's
            # Service a moment later, and a pod created in between is admitted without
            # the agent (failurePolicy Ignore; reported as PodsWithoutAgent). A person
            # types the next command later than that; the harness waits for the route.
            wait_webhook_routed(cluster)
        if line.startswith("kubectl patch"):
            # Scaled only once the opt-in rollout is done: scaling during it adds
            # un-injected pods to the old ReplicaSet (proportional scaling). And only
            # once both replicas serve the webhook through its Service: while the second
            # one joins, kube-proxy's rules change and admission calls can fail (Ignore).
            cluster.kubectl(
                "rollout", "status", "deployment/shop", "-n", SHOP, f"--timeout={timeout:.0f}s"
            )
            wait_webhook_endpoints(cluster, count=2)
            wait_webhook_routed(cluster)
            cluster.kubectl("scale", "deployment", "shop", "-n", SHOP, f"--replicas={replicas}")
            recreate_pods_without_agent(cluster, count=replicas, timeout=timeout)
            # The page's analysis judges what the pods serve: the app's users, here.
            traffic.enter_context(Traffic(cluster, SHOP, APP_SELECTOR, per_second=40))
        if line.startswith("kubectl apply"):
            deploy(
                cluster,
                shop_deployment(
                    "shop-internal",
                    image=app_image,
                    replicas=1,
                    labels={"app": "shop", names.LABEL_COHORT: names.COHORT_INTERNAL},
                ),
            )


def shop_deployment(
    name: str,
    *,
    image: str,
    replicas: int,
    labels: dict[str, str],
    opt_in: bool = True,
) -> dict[str, Any]:
    """The sample app as a user deploys it: non-root, read-only root, opted in by a label."""
    pod_labels = {**labels, "deployment": name}
    if opt_in:
        pod_labels[names.LABEL_INJECT] = names.LABEL_INJECT_ENABLED
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"deployment": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": APP_UID,
                        "runAsGroup": APP_UID,
                        "fsGroup": APP_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "args": ["--host", "0.0.0.0", "--port", "8080"],  # noqa: S104 - the pod IP
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"memory": "128Mi"},
                            },
                            "securityContext": {
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    return pods(cluster, OPERATOR_NS, "app.kubernetes.io/component=operator")


def leader(cluster: Cluster) -> str:
    """The one operator pod labelled leader (HarnessError unless exactly one)."""
    leaders = [
        p["metadata"]["name"]
        for p in operator_pods(cluster)
        if (p["metadata"].get("labels") or {}).get(names.LABEL_LEADER) == "true"
        and p["metadata"].get("deletionTimestamp") is None
    ]
    if len(leaders) != 1:
        raise HarnessError(f"expected one leader, found {leaders}")
    return str(leaders[0])
