"""The agent stays light (standard library only at rest) and parses its inputs strictly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logicbundle.agent import ConfigError, format_annotations, parse_annotations, parse_config
from logicbundle.agent._artifact import parse_bundle_manifest, parse_image_manifest
from logicbundle.agent._errors import ArtifactInvalidError, DigestMismatchError
from tests.agent.conftest import Packed

HEAVY = ("pydantic", "urllib3", "kopf", "kubernetes", "aiohttp", "yaml", "asyncio")


def test_a_started_agent_has_loaded_none_of_the_heavy_modules(tmp_path: Path) -> None:
    config = {
        "root": str(tmp_path / "root"),
        "distributor": "http://127.0.0.1:9",
        "annotationsFile": str(tmp_path / "annotations"),
        "listen": "127.0.0.1:0",
        "bundles": {"pricing": {"source": "registry.invalid/shop/pricing"}},
    }
    script = textwrap.dedent(
        f"""
        import json, sys
        from logicbundle.agent import Agent, parse_config
        agent = Agent(parse_config({json.dumps(json.dumps(config))}))
        agent.start()
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        agent.stop()
        print(json.dumps(heavy))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


AT_REST_UNLOADED = (
    "http.client",
    "http.server",
    "ssl",
    "email",
    "tarfile",
    "lzma",
    "bz2",
    "shutil",
    "datetime",
    "encodings.idna",
    "logicbundle.agent._artifact",
    "logicbundle.agent._distributor",
)
"""Loaded only by a distributor, an HTTP hook, a fetch or a removal: about 4 MB of RSS at rest."""


def test_an_agent_without_a_distributor_loads_no_http_client_ssl_or_unpacker_at_rest(
    tmp_path: Path,
) -> None:
    config = {
        "root": str(tmp_path / "root"),
        "annotationsFile": str(tmp_path / "annotations"),
        "stateDir": str(tmp_path / "state"),
        "listen": "127.0.0.1:0",
        "bundles": {"pricing": {"source": "registry.invalid/shop/pricing"}},
    }
    script = textwrap.dedent(
        f"""
        import json, socket, sys
        from logicbundle.agent import Agent, parse_config
        agent = Agent(parse_config({json.dumps(json.dumps(config))}))
        agent.start()
        with socket.socket() as conn:  # not create_connection: its name lookup loads idna
            conn.settimeout(10)
            conn.connect(("127.0.0.1", agent.http_port))
            conn.sendall(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        loaded = [m for m in {AT_REST_UNLOADED!r} if m in sys.modules]
        agent.stop()
        print(json.dumps([answer.split(b"\\r\\n", 1)[0].decode(), loaded]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    status, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "HTTP/1.1 200 OK"
    assert loaded == []


def test_the_bundle_package_imports_its_unpacker_without_pydantic() -> None:
    script = (
        "import sys; from logicbundle.bundle import unpack_bundle, UnpackLimits, UnpackError; "
        "print('pydantic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_kubelet_annotations_format_round_trips_with_escapes() -> None:
    annotations = {
        "logicbundle.io/cohort-key": "uid/0b5c7e9a",
        "quote": 'say "hi"\\ok',
        "multi": "line1\nline2\ttab",
        "unicode": "café ✓",
    }
    text = format_annotations(annotations)
    assert text.splitlines()[0].startswith("logicbundle.io/cohort-key=")
    assert parse_annotations(text) == annotations
    assert parse_annotations('a="\\x41\\u00e9\\101"\nbroken\nb="unterminated\n') == {"a": "AéA"}


def test_the_slow_paths_files_default_to_where_the_webhook_mounts_them() -> None:
    config = parse_config(json.dumps({"bundles": {"pricing": {"source": "r.example/p"}}}))
    assert config.state_dir == Path("/etc/logicbundle/state")
    assert config.annotations_file == Path("/etc/logicbundle/podinfo/annotations")
    assert config.labels_file == Path("/etc/logicbundle/podinfo/labels")


def test_the_labels_file_defaults_to_beside_the_annotations_file_and_both_can_be_set() -> None:
    beside = parse_config(json.dumps({"annotationsFile": "/run/pod/annotations", "bundles": {}}))
    assert beside.labels_file == Path("/run/pod/labels")
    chosen = parse_config(
        json.dumps({"labelsFile": "/x/labels", "stateDir": "/x/state", "bundles": {}})
    )
    assert (chosen.labels_file, chosen.state_dir) == (Path("/x/labels"), Path("/x/state"))
    for bad in ({"stateDir": ""}, {"labelsFile": 3}):
        with pytest.raises(ConfigError):
            parse_config(json.dumps({**bad, "bundles": {}}))


def test_the_configuration_refuses_unknown_keys_and_bad_settings() -> None:
    ok = {"bundles": {"pricing": {"source": "r.example/p"}}}
    config = parse_config(json.dumps(ok))
    assert config.bundles["pricing"].health.mode == "sdk"
    assert config.socket == Path("/var/run/logicbundle/sdk.sock")
    for bad in (
        {"bundles": {}, "surprise": 1},
        {"bundles": {"pricing": {"source": "r/p", "notify": {"mode": "http"}}}},
        {"bundles": {"Pricing": {"source": "r/p"}}},
        {"bundles": {"p": {"source": "r/p", "healthCheck": {"timeout": "10 seconds"}}}},
        {
            "bundles": {
                "p": {
                    "source": "r/p",
                    "notify": {"mode": "http", "http": {"url": "http://evil.com/x"}},
                }
            }
        },
    ):
        with pytest.raises(ConfigError):
            parse_config(json.dumps(bad))


def test_hostile_manifests_are_refused(bundles: dict[str, Packed]) -> None:
    v1 = bundles["pricing-v1"]
    image = parse_image_manifest(v1.manifest, digest=v1.digest, max_layer_bytes=1 << 30)
    assert image.layer.digest == v1.layer_digest
    with pytest.raises(DigestMismatchError):
        parse_image_manifest(v1.manifest + b" ", digest=v1.digest, max_layer_bytes=1 << 30)
    spec = parse_bundle_manifest(v1.config, digest=v1.config_digest, max_file_size=1 << 20)
    assert {f.path for f in spec.files} == {"catalog.py", "logicbundle.yaml", "pricing.py"}
    import hashlib

    base = json.loads(v1.config)
    for change in (
        {"files": [{**base["files"][0], "path": "../x"}]},
        {"files": [{**base["files"][0], "path": "/abs"}]},
        {"files": [base["files"][0], {**base["files"][0], "path": "CATALOG.py"}]},
        {"files": [{**base["files"][0], "size": -1}]},
        {"files": [{**base["files"][0], "mode": 0o4755}]},
        {"files": [{**base["files"][0], "sha256": "zz"}]},
        {"files": [{**base["files"][0], "path": "a" * 256}]},  # over NAME_MAX
        {"files": [{**base["files"][0], "path": "d/" + "é" * 128}]},
        {"extra": True},
    ):
        data = json.dumps({**base, **change}).encode()
        with pytest.raises(ArtifactInvalidError):
            parse_bundle_manifest(
                data, digest="sha256:" + hashlib.sha256(data).hexdigest(), max_file_size=1 << 20
            )
