"""The pure injection: the pod after the webhook, and a second pass that changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from logicbundle import contract
from logicbundle.api import names
from logicbundle.webhook import (
    INJECTION_VERSION,
    SKIPPED_NOTHING_SELECTS,
    SKIPPED_RESERVED_NAME,
    SOCKET_DIR,
    SOCKET_FILE,
    STATE_DIR,
    VOLUME_SOCKET,
    InjectionSettings,
    escape_pointer,
    has_agent,
    injection_record,
    mount_root,
    mutate_pod,
)
from tests.webhook._fixtures import (
    ADMITTED,
    CANDIDATE,
    IMAGE,
    NS,
    OPTED_IN,
    SETTINGS,
    UID,
    agent_of,
    apply_patch,
    logic_bundle,
    mutate,
    pod,
)

TARGET_PREFIX = "logicbundle.io/target."
"""The per-pod target annotations the webhook wrote before the target became a rule."""
STATE_MOUNT = {"name": names.VOLUME_STATE, "mountPath": STATE_DIR, "readOnly": True}
BUNDLES_MOUNT = {
    "name": names.VOLUME_BUNDLES,
    "mountPath": "/var/run/logicbundle",
    "readOnly": True,
}
SOCKET_MOUNT = {"name": VOLUME_SOCKET, "mountPath": "/var/run/logicbundle-sdk"}
APP_ENV = {
    "LOGICBUNDLE_ROOT": "/var/run/logicbundle",
    "LOGICBUNDLE_SOCKET": "/var/run/logicbundle-sdk/sdk.sock",
}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _targets(patched: dict[str, Any]) -> list[str]:
    return [k for k in patched["metadata"].get("annotations", {}) if k.startswith(TARGET_PREFIX)]


def _state_sources(patched: dict[str, Any]) -> list[dict[str, Any]]:
    (volume,) = [v for v in patched["spec"]["volumes"] if v["name"] == names.VOLUME_STATE]
    return list(volume["projected"]["sources"])


def _state_source(bundle: str) -> dict[str, Any]:
    return {
        "configMap": {
            "name": f"lb-state-{bundle}",
            "optional": True,
            "items": [{"key": "state.json", "path": f"{bundle}.json"}],
        }
    }


def test_one_bundle_injects_the_agent_volumes_gate_and_annotations() -> None:
    mutation, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])

    assert mutation.bundles == ("pricing",)
    assert mutation.skipped is None
    annotations = patched["metadata"]["annotations"]
    assert _targets(patched) == []  # a pod's target is a rule over the published state
    assert annotations[names.ANNOTATION_COHORT_KEY] == f"uid/{UID}"
    assert annotations[contract.ANNOTATION_ADMITTED_AT] == str(ADMITTED)
    record = json.loads(annotations[names.ANNOTATION_INJECTED])
    assert record == {
        "version": "3",
        "bundles": ["pricing"],
        "agentImage": IMAGE,
        "operator": record["operator"],
    }
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes[names.VOLUME_BUNDLES] == {"name": names.VOLUME_BUNDLES, "emptyDir": {}}
    assert volumes[VOLUME_SOCKET] == {
        "name": VOLUME_SOCKET,
        "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"},
    }
    token = volumes[names.VOLUME_TOKEN]["projected"]["sources"][0]["serviceAccountToken"]
    assert token == {
        "audience": names.DISTRIBUTOR_AUDIENCE,
        "expirationSeconds": 3600,
        "path": "token",
    }
    assert volumes[names.VOLUME_PODINFO]["downwardAPI"]["items"] == [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
    ]
    assert volumes[names.VOLUME_STATE] == {
        "name": names.VOLUME_STATE,
        "projected": {"sources": [_state_source("pricing")]},
    }
    assert patched["spec"]["readinessGates"] == [{"conditionType": names.POD_CONDITION_READY}]
    (app,) = patched["spec"]["containers"]
    assert app["volumeMounts"] == [BUNDLES_MOUNT, SOCKET_MOUNT]
    assert all("subPath" not in mount for mount in app["volumeMounts"])
    assert _env(app) == APP_ENV


def test_the_agent_is_a_restricted_native_sidecar_that_gates_start_up() -> None:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    agent = agent_of(patched)

    assert agent["restartPolicy"] == "Always"
    assert agent["image"] == IMAGE
    assert agent["args"] == ["agent"]
    assert agent["startupProbe"]["httpGet"] == {"path": "/readyz", "port": 9901}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9901}
    # Not the kubelet's 1 s: on a busy real node a 200m agent mid-swap answered later.
    assert agent["startupProbe"]["timeoutSeconds"] == agent["livenessProbe"]["timeoutSeconds"] == 5
    assert agent["resources"]["requests"] and agent["resources"]["limits"]
    assert agent["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _mounts(agent) == {
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
        "/var/run/logicbundle-sdk": VOLUME_SOCKET,
        "/var/run/secrets/logicbundle": names.VOLUME_TOKEN,
        "/etc/logicbundle/podinfo": names.VOLUME_PODINFO,
        "/etc/logicbundle/state": names.VOLUME_STATE,
    }
    env = _env(agent)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_the_agent_configuration_follows_the_documented_contract() -> None:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    config = json.loads(_env(agent_of(patched))["LOGICBUNDLE_AGENT_CONFIG"])

    assert config == {
        "root": "/var/run/logicbundle",
        "distributor": SETTINGS.distributor_url,
        "tokenFile": "/var/run/secrets/logicbundle/token",
        "annotationsFile": "/etc/logicbundle/podinfo/annotations",
        "labelsFile": "/etc/logicbundle/podinfo/labels",
        "stateDir": "/etc/logicbundle/state",
        "socket": "/var/run/logicbundle-sdk/sdk.sock",
        "listen": "0.0.0.0:9901",
        "bundles": {
            "pricing": {
                "source": "registry.example.com/shop/pricing",
                "insecure": False,
                "notify": {"mode": "sdk"},
                "healthCheck": {"mode": "sdk", "timeout": "10s"},
            }
        },
    }


def test_the_agent_parses_the_configuration_the_webhook_writes() -> None:
    agent_config = pytest.importorskip("logicbundle.agent._config")
    bundles = [
        logic_bundle(),
        logic_bundle(
            "routing",
            notify={"mode": "http", "http": {"url": "http://127.0.0.1:8080/-/reload"}},
        ),
    ]
    _, patched = mutate(pod(labels=OPTED_IN), bundles)
    parsed = agent_config.parse_config(_env(agent_of(patched))["LOGICBUNDLE_AGENT_CONFIG"])
    assert sorted(parsed.bundles) == ["pricing", "routing"]
    # Where the agent looks is where the webhook mounts: the state files and the labels.
    assert str(parsed.state_dir) == STATE_MOUNT["mountPath"]
    assert str(parsed.labels_file.parent) == "/etc/logicbundle/podinfo"
    assert parsed.labels_file.name == contract.LABELS_FILE_NAME


def test_a_distributor_ca_travels_in_an_annotation_projected_into_the_agent() -> None:
    settings = InjectionSettings(
        agent_image=IMAGE, distributor_url="https://d:8443", distributor_ca_pem="PEM"
    )
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()], settings=settings)

    assert patched["metadata"]["annotations"][names.ANNOTATION_DISTRIBUTOR_CA] == "PEM"
    volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert volumes[names.VOLUME_PODINFO]["downwardAPI"]["items"][2] == {
        "path": "distributor-ca.crt",
        "fieldRef": {"fieldPath": "metadata.annotations['logicbundle.io/distributor-ca']"},
    }
    config = json.loads(_env(agent_of(patched))["LOGICBUNDLE_AGENT_CONFIG"])
    assert config["distributorCA"] == "/etc/logicbundle/podinfo/distributor-ca.crt"


def test_two_bundles_with_different_mount_paths_mount_the_whole_volume_twice() -> None:
    bundles = [logic_bundle("pricing"), logic_bundle("routing", mount_path="/opt/rules")]
    mutation, patched = mutate(pod(labels=OPTED_IN), bundles)

    assert mutation.bundles == ("pricing", "routing")
    (app,) = patched["spec"]["containers"]
    assert _mounts(app) == {
        "/opt/rules": names.VOLUME_BUNDLES,
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
        "/var/run/logicbundle-sdk": VOLUME_SOCKET,
    }
    assert all("subPath" not in m for m in app["volumeMounts"])
    assert "LOGICBUNDLE_ROOT" not in _env(app)  # two roots: the application chooses
    assert _env(app)["LOGICBUNDLE_SOCKET"] == SOCKET_FILE  # one socket whatever the roots
    assert _state_sources(patched) == [_state_source("pricing"), _state_source("routing")]
    assert len(patched["spec"]["initContainers"]) == 1
    config = json.loads(_env(agent_of(patched))["LOGICBUNDLE_AGENT_CONFIG"])
    assert sorted(config["bundles"]) == ["pricing", "routing"]


def test_two_bundles_with_default_mount_paths_share_one_mount() -> None:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle("pricing"), logic_bundle("routing")])
    (app,) = patched["spec"]["containers"]
    assert _mounts(app) == {
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
        "/var/run/logicbundle-sdk": VOLUME_SOCKET,
    }


@pytest.mark.parametrize(
    ("name", "mount_path", "root"),
    [
        ("pricing", None, "/var/run/logicbundle"),
        ("pricing", "/srv/logic/pricing", "/srv/logic"),
        ("pricing", "/srv/logic/pricing/", "/srv/logic"),
        ("pricing", "/opt/rules", "/opt/rules"),
        ("pricing", "/pricing", "/pricing"),
    ],
)
def test_the_volume_is_mounted_where_the_bundle_directory_lands_on_its_mount_path(
    name: str, mount_path: str | None, root: str
) -> None:
    assert mount_root(logic_bundle(name, mount_path=mount_path)) == root


def test_every_application_container_gets_the_mount_and_keeps_its_own_mounts_and_env() -> None:
    containers = [
        {
            "name": "app",
            "image": "app:1",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "env": [{"name": "MODE", "value": "prod"}],
        },
        {"name": "worker", "image": "worker:1"},
    ]
    mutation, patched = mutate(
        pod(labels=OPTED_IN, containers=containers, volumes=[{"name": "data", "emptyDir": {}}]),
        [logic_bundle()],
    )
    app, worker = patched["spec"]["containers"]
    assert _mounts(app) == {
        "/data": "data",
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
        "/var/run/logicbundle-sdk": VOLUME_SOCKET,
    }
    assert _env(app) == {"MODE": "prod", **APP_ENV}
    assert _mounts(worker) == {
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
        "/var/run/logicbundle-sdk": VOLUME_SOCKET,
    }
    assert [v["name"] for v in patched["spec"]["volumes"]] == [
        "data",
        names.VOLUME_BUNDLES,
        VOLUME_SOCKET,
        names.VOLUME_TOKEN,
        names.VOLUME_PODINFO,
        names.VOLUME_STATE,
    ]
    paths = {op["path"] for op in mutation.patch}
    assert {"/spec/containers/0/volumeMounts/-", "/spec/containers/1/volumeMounts"} <= paths


def test_an_application_root_the_container_already_sets_is_kept() -> None:
    containers = [
        {"name": "app", "image": "a", "env": [{"name": "LOGICBUNDLE_ROOT", "value": "/x"}]}
    ]
    _, patched = mutate(pod(labels=OPTED_IN, containers=containers), [logic_bundle()])
    assert _env(patched["spec"]["containers"][0]) == {
        "LOGICBUNDLE_ROOT": "/x",
        "LOGICBUNDLE_SOCKET": SOCKET_FILE,
    }


def test_an_application_socket_path_the_container_already_sets_is_kept() -> None:
    containers = [
        {"name": "app", "image": "a", "env": [{"name": "LOGICBUNDLE_SOCKET", "value": "/s"}]}
    ]
    _, patched = mutate(pod(labels=OPTED_IN, containers=containers), [logic_bundle()])
    assert _env(patched["spec"]["containers"][0]) == {
        "LOGICBUNDLE_SOCKET": "/s",
        "LOGICBUNDLE_ROOT": "/var/run/logicbundle",
    }


def test_a_container_already_mounting_the_path_is_warned_about_not_broken() -> None:
    containers = [
        {
            "name": "app",
            "image": "a",
            "volumeMounts": [{"name": "x", "mountPath": "/var/run/logicbundle"}],
        }
    ]
    mutation, patched = mutate(
        pod(labels=OPTED_IN, containers=containers, volumes=[{"name": "x", "emptyDir": {}}]),
        [logic_bundle()],
    )
    assert _mounts(patched["spec"]["containers"][0]) == {"/var/run/logicbundle": "x"}
    assert mutation.warnings and "already mounts" in mutation.warnings[0]


def test_the_agent_comes_after_existing_init_containers() -> None:
    _, patched = mutate(
        pod(labels=OPTED_IN, initContainers=[{"name": "migrate", "image": "m"}]),
        [logic_bundle()],
    )
    assert [c["name"] for c in patched["spec"]["initContainers"]] == [
        "migrate",
        names.AGENT_CONTAINER,
    ]
    assert "volumeMounts" not in patched["spec"]["initContainers"][0]


def test_an_existing_readiness_gate_list_is_appended_to_once() -> None:
    gates = [{"conditionType": "example.com/ready"}]
    _, patched = mutate(pod(labels=OPTED_IN, readinessGates=gates), [logic_bundle()])
    assert patched["spec"]["readinessGates"] == [
        {"conditionType": "example.com/ready"},
        {"conditionType": names.POD_CONDITION_READY},
    ]
    gates = [{"conditionType": names.POD_CONDITION_READY}]
    _, patched = mutate(pod(labels=OPTED_IN, readinessGates=gates), [logic_bundle()])
    assert patched["spec"]["readinessGates"] == gates


def test_no_matching_bundle_records_the_opt_in_and_injects_nothing() -> None:
    other = logic_bundle(selector={"matchLabels": {"app": "elsewhere"}})
    mutation, patched = mutate(pod(labels=OPTED_IN), [other])

    assert mutation.skipped == SKIPPED_NOTHING_SELECTS
    assert mutation.bundles == ()
    assert not has_agent(patched)
    assert patched["spec"] == pod(labels=OPTED_IN)["spec"]
    assert injection_record(patched) == {
        "version": INJECTION_VERSION,
        "bundles": [],
        "skipped": SKIPPED_NOTHING_SELECTS,
    }
    assert mutation.warnings and "no LogicBundle" in mutation.warnings[0]


def test_a_namespace_without_bundles_is_the_same_as_no_match() -> None:
    mutation, _ = mutate(pod(labels=OPTED_IN), [])
    assert mutation.skipped == SKIPPED_NOTHING_SELECTS


def test_only_the_bundles_that_select_the_pod_are_injected() -> None:
    bundles = [logic_bundle("pricing"), logic_bundle("other", selector={"matchLabels": {"x": "y"}})]
    mutation, patched = mutate(pod(labels=OPTED_IN), bundles)
    assert mutation.bundles == ("pricing",)
    assert _state_sources(patched) == [_state_source("pricing")]


def test_a_pod_without_a_labels_map_is_selected_only_by_an_empty_selector() -> None:
    mutation, _ = mutate(pod(), [logic_bundle()])
    assert mutation.skipped == SKIPPED_NOTHING_SELECTS

    mutation, patched = mutate(pod(), [logic_bundle(selector={})])
    assert mutation.bundles == ("pricing",)
    assert has_agent(patched)


def test_a_pod_that_already_has_the_agent_is_left_alone() -> None:
    already = pod(
        labels=OPTED_IN,
        initContainers=[{"name": names.AGENT_CONTAINER, "image": "old", "restartPolicy": "Always"}],
    )
    mutation, _ = mutate(already, [logic_bundle()])
    assert mutation.patch == ()


def test_a_pod_with_an_injection_record_is_left_alone() -> None:
    recorded = pod(
        labels=OPTED_IN,
        annotations={names.ANNOTATION_INJECTED: '{"version":"1","bundles":[],"skipped":"x"}'},
    )
    mutation, _ = mutate(recorded, [logic_bundle()])
    assert mutation.patch == ()


@pytest.mark.parametrize(
    "case",
    [
        "one bundle",
        "two bundles",
        "no match",
        "named pod with annotations",
        "existing mounts and env",
        "candidate in flight",
    ],
)
def test_a_second_invocation_on_the_patched_pod_changes_nothing(case: str) -> None:
    bundles = {
        "one bundle": [logic_bundle()],
        "two bundles": [logic_bundle(), logic_bundle("routing", mount_path="/opt/r")],
        "no match": [logic_bundle(selector={"matchLabels": {"a": "b"}})],
        "named pod with annotations": [logic_bundle()],
        "existing mounts and env": [logic_bundle()],
        "candidate in flight": [
            logic_bundle(candidate=CANDIDATE, stages=[{"name": "all", "all": True}])
        ],
    }[case]
    target = pod(labels=OPTED_IN)
    if case == "named pod with annotations":
        target = pod("web-0", labels=OPTED_IN, annotations={"team": "a/b"})
    if case == "existing mounts and env":
        target = pod(
            labels=OPTED_IN,
            containers=[
                {
                    "name": "app",
                    "image": "a",
                    "env": [{"name": "A", "value": "1"}],
                    "volumeMounts": [{"name": "d", "mountPath": "/d"}],
                }
            ],
            volumes=[{"name": "d", "emptyDir": {}}],
        )
    first, patched = mutate(target, bundles)
    assert first.patch
    second, again = mutate(patched, bundles, uid="another-request")
    assert second.patch == ()
    assert again == patched


def test_annotation_keys_are_escaped_in_json_pointers() -> None:
    mutation, patched = mutate(
        pod("web-0", labels=OPTED_IN, annotations={"existing": "yes"}), [logic_bundle()]
    )
    paths = [op["path"] for op in mutation.patch if op["path"].startswith("/metadata")]
    assert "/metadata/annotations/logicbundle.io~1admitted-at" in paths
    assert "/metadata/annotations/logicbundle.io~1cohort-key" in paths
    assert all("logicbundle.io/" not in path for path in paths)
    assert patched["metadata"]["annotations"]["existing"] == "yes"
    assert patched["metadata"]["annotations"][contract.ANNOTATION_ADMITTED_AT] == str(ADMITTED)
    assert escape_pointer("a~b/c") == "a~0b~1c"


def test_a_pod_without_annotations_gets_one_annotations_map() -> None:
    mutation, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    annotation_ops = [op for op in mutation.patch if op["path"].startswith("/metadata")]
    assert [op["path"] for op in annotation_ops] == ["/metadata/annotations"]
    assert set(patched["metadata"]["annotations"]) == {
        contract.ANNOTATION_ADMITTED_AT,
        names.ANNOTATION_COHORT_KEY,
        names.ANNOTATION_INJECTED,
    }


def test_a_named_pod_is_keyed_by_namespace_and_name() -> None:
    _, patched = mutate(pod("db-0", labels=OPTED_IN), [logic_bundle()])
    assert patched["metadata"]["annotations"][names.ANNOTATION_COHORT_KEY] == f"{NS}/db-0"


def test_a_cohort_key_the_pod_already_carries_is_kept() -> None:
    target = pod(labels=OPTED_IN, annotations={names.ANNOTATION_COHORT_KEY: "shop/kept"})
    mutation, patched = mutate(target, [logic_bundle()])
    assert patched["metadata"]["annotations"][names.ANNOTATION_COHORT_KEY] == "shop/kept"
    assert not any(op["path"].endswith("cohort-key") for op in mutation.patch)


def test_an_admission_instant_the_pod_already_carries_is_kept() -> None:
    # Written once: percent stages are sealed by it, so a new value could move the pod.
    target = pod(labels=OPTED_IN, annotations={contract.ANNOTATION_ADMITTED_AT: "1234"})
    mutation, patched = mutate(target, [logic_bundle()], admitted_ms=ADMITTED)
    assert patched["metadata"]["annotations"][contract.ANNOTATION_ADMITTED_AT] == "1234"
    assert not any(op["path"].endswith("admitted-at") for op in mutation.patch)


def test_the_admission_instant_is_recorded_in_milliseconds_as_a_decimal_string() -> None:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()], admitted_ms=1_700_000_000_456)
    value = patched["metadata"]["annotations"][contract.ANNOTATION_ADMITTED_AT]
    assert value == "1700000000456"
    assert contract.admitted_at(patched["metadata"]["annotations"]) == 1_700_000_000_456


@pytest.mark.parametrize(
    "bundle",
    [
        logic_bundle(stable=None),
        logic_bundle(),
        logic_bundle(candidate=CANDIDATE, stages=[{"name": "all", "all": True}]),
        logic_bundle(candidate=CANDIDATE, stages=[{"name": "canary", "percent": 10}]),
        logic_bundle(candidate=CANDIDATE, stages=[{"name": "split", "requestPercent": 5}]),
    ],
    ids=["no-stable-yet", "stable", "all-stage", "percent-stage", "request-split"],
)
def test_the_injection_is_the_same_whatever_the_bundles_rollout(bundle: Any) -> None:
    # No target at admission: the agent and the distributor evaluate the published state.
    mutation, patched = mutate(pod(labels=OPTED_IN), [bundle])
    plain, _ = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    assert mutation.bundles == ("pricing",)
    assert has_agent(patched)
    assert _targets(patched) == []
    assert mutation.patch == plain.patch


def test_the_state_volume_lists_exactly_the_injected_bundles_each_optional() -> None:
    bundles = [
        logic_bundle("routing", mount_path="/opt/r"),
        logic_bundle("pricing"),
        logic_bundle("other", selector={"matchLabels": {"x": "y"}}),
    ]
    mutation, patched = mutate(pod(labels=OPTED_IN), bundles)
    assert mutation.bundles == ("pricing", "routing")
    sources = _state_sources(patched)
    assert sources == [_state_source("pricing"), _state_source("routing")]
    for name, source in zip(mutation.bundles, sources, strict=True):
        config_map = source["configMap"]
        # A ConfigMap not published yet must not hold the pod in ContainerCreating.
        assert config_map["optional"] is True
        assert config_map["name"] == contract.state_configmap_name(name)
        assert config_map["items"] == [
            {"key": contract.STATE_KEY, "path": contract.state_file_name(name)}
        ]


def test_the_state_is_mounted_read_only_in_the_agent_and_nowhere_else() -> None:
    containers = [{"name": "app", "image": "a"}, {"name": "sidecar", "image": "s"}]
    _, patched = mutate(
        pod(labels=OPTED_IN, containers=containers, initContainers=[{"name": "m", "image": "m"}]),
        [logic_bundle()],
    )
    spec = patched["spec"]
    mounting = [
        (container["name"], mount)
        for container in [*spec["initContainers"], *spec["containers"]]
        for mount in container.get("volumeMounts", [])
        if mount["name"] == names.VOLUME_STATE
    ]
    assert mounting == [(names.AGENT_CONTAINER, STATE_MOUNT)]
    assert STATE_MOUNT["mountPath"] == contract.STATE_DIR


def test_signal_notification_shares_the_process_namespace() -> None:
    bundle = logic_bundle(
        notify={"mode": "signal", "signal": {"processName": "app"}},
    )
    _, patched = mutate(pod(labels=OPTED_IN), [bundle])
    assert patched["spec"]["shareProcessNamespace"] is True


def test_a_pod_using_a_reserved_volume_name_is_skipped_not_broken() -> None:
    target = pod(labels=OPTED_IN, volumes=[{"name": names.VOLUME_BUNDLES, "emptyDir": {}}])
    mutation, patched = mutate(target, [logic_bundle()])
    assert mutation.skipped == SKIPPED_RESERVED_NAME
    assert not has_agent(patched)
    assert patched["spec"] == target["spec"]


def test_the_mutation_does_not_modify_its_input() -> None:
    target = pod(labels=OPTED_IN, annotations={"a": "b"})
    snapshot = json.dumps(target, sort_keys=True)
    mutate_pod(
        pod=target,
        namespace=NS,
        request_uid=UID,
        bundles=[logic_bundle()],
        admitted_ms=ADMITTED,
        settings=SETTINGS,
    )
    assert json.dumps(target, sort_keys=True) == snapshot


def test_the_patch_applies_to_a_pod_as_the_api_server_sees_it() -> None:
    mutation, _ = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    apply_patch(pod(labels=OPTED_IN), mutation.patch)  # raises on any malformed op


def test_the_sdk_socket_gets_a_writable_volume_of_its_own_while_the_bundles_stay_read_only() -> (
    None
):
    # A regression: the socket used to be bound inside the read-only bundles mount,
    # which Linux refuses (EROFS), so notify mode sdk could not work in a real pod.
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    agent = agent_of(patched)
    (app,) = patched["spec"]["containers"]
    config = json.loads(_env(agent)["LOGICBUNDLE_AGENT_CONFIG"])

    socket_dir = config["socket"].rpartition("/")[0]
    assert socket_dir == SOCKET_DIR
    for container in (agent, app):
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == socket_dir]
        assert mount["name"] == VOLUME_SOCKET
        assert not mount.get("readOnly")
    # The application binds exactly where the agent connects.
    assert _env(app)["LOGICBUNDLE_SOCKET"] == config["socket"]
    (bundles,) = [m for m in app["volumeMounts"] if m["name"] == names.VOLUME_BUNDLES]
    assert bundles["readOnly"] is True
    assert not config["socket"].startswith(bundles["mountPath"] + "/")


def test_the_sdk_socket_variable_matches_the_sdks_own() -> None:
    sdk = pytest.importorskip("logicbundle.sdk")
    from logicbundle.webhook import SOCKET_ENV

    assert sdk.SOCKET_ENV == SOCKET_ENV


def test_a_bundle_mounted_above_the_socket_directory_is_warned_about_not_nested() -> None:
    # mountPath /var/run/pricing: the read-only volume lands on /var/run, above the socket's.
    mutation, patched = mutate(pod(labels=OPTED_IN), [logic_bundle(mount_path="/var/run/pricing")])
    (app,) = patched["spec"]["containers"]
    assert _mounts(app) == {"/var/run": names.VOLUME_BUNDLES}
    assert "LOGICBUNDLE_SOCKET" not in _env(app)
    assert any("SDK socket" in warning for warning in mutation.warnings)


def test_a_container_with_its_own_mount_at_the_socket_directory_keeps_it() -> None:
    containers = [
        {"name": "app", "image": "a", "volumeMounts": [{"name": "x", "mountPath": SOCKET_DIR}]}
    ]
    mutation, patched = mutate(
        pod(labels=OPTED_IN, containers=containers, volumes=[{"name": "x", "emptyDir": {}}]),
        [logic_bundle()],
    )
    assert _mounts(patched["spec"]["containers"][0]) == {
        SOCKET_DIR: "x",
        "/var/run/logicbundle": names.VOLUME_BUNDLES,
    }
    assert any("SDK socket" in warning for warning in mutation.warnings)


def test_the_recorded_injection_version_is_the_current_pod_shape() -> None:
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()])
    record = injection_record(patched)
    assert record is not None
    assert record["version"] == INJECTION_VERSION == "3"


@pytest.mark.parametrize(
    "volume", [VOLUME_SOCKET, names.VOLUME_BUNDLES, names.VOLUME_PODINFO, names.VOLUME_STATE]
)
def test_a_pod_using_any_reserved_volume_name_is_skipped(volume: str) -> None:
    target = pod(labels=OPTED_IN, volumes=[{"name": volume, "emptyDir": {}}])
    mutation, _ = mutate(target, [logic_bundle()])
    assert mutation.skipped == SKIPPED_RESERVED_NAME


def test_extra_agent_environment_and_resources_from_the_settings_reach_the_agent() -> None:
    settings = InjectionSettings(
        agent_image=IMAGE,
        extra_env=(("MALLOC_ARENA_MAX", "2"), ("HTTPS_PROXY", "http://proxy:3128")),
        resources={"limits": {"memory": "64Mi"}},
    )
    _, patched = mutate(pod(labels=OPTED_IN), [logic_bundle()], settings=settings)
    agent = agent_of(patched)

    env = _env(agent)
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert "LOGICBUNDLE_AGENT_CONFIG" in env
    assert agent["resources"] == {"limits": {"memory": "64Mi"}}


@pytest.mark.parametrize(
    "name", ["LOGICBUNDLE_AGENT_CONFIG", "POD_NAME", "POD_NAMESPACE", "", "A=B"]
)
def test_an_agent_environment_variable_the_injection_sets_itself_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved or invalid"):
        InjectionSettings(agent_image=IMAGE, extra_env=((name, "x"),))
