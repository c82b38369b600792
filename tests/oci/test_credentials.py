"""Reading credentials from dockerconfigjson, and auth challenges."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from logicbundle.oci import AuthenticationError, Credentials, DockerConfig
from logicbundle.oci._auth import parse_challenge


def _config(auths: dict[str, dict[str, str]]) -> str:
    return json.dumps({"auths": auths})


def test_an_auth_field_is_decoded_into_user_and_password() -> None:
    auth = base64.b64encode(b"robot:pa:ss").decode()
    config = DockerConfig.from_json(_config({"reg.io:5000": {"auth": auth}}))
    assert config.credentials_for("reg.io:5000") == Credentials("robot", "pa:ss")


def test_username_and_password_fields_are_used_when_present() -> None:
    config = DockerConfig.from_json(_config({"reg.io": {"username": "u", "password": "p"}}))
    assert config.credentials_for("REG.io") == Credentials("u", "p")


def test_url_shaped_keys_are_reduced_to_their_host() -> None:
    auth = base64.b64encode(b"u:p").decode()
    config = DockerConfig.from_json(_config({"https://reg.io/v1/": {"auth": auth}}))
    assert config.credentials_for("reg.io") == Credentials("u", "p")
    assert config.credentials_for("other.io") is None


def test_credentials_are_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(_config({"reg.io": {"username": "u", "password": "p"}}))
    assert DockerConfig.from_file(path).credentials_for("reg.io") == Credentials("u", "p")


def test_a_password_never_appears_in_repr() -> None:
    credentials = Credentials("robot", "hunter2")
    config = DockerConfig(auths={"reg.io": credentials})
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in repr(config)


def test_malformed_credentials_fail_without_echoing_the_secret() -> None:
    with pytest.raises(AuthenticationError) as caught:
        DockerConfig.from_json('{"auths": {"reg.io": {"auth": "hunter2-not-base64!"}}')
    assert "hunter2" not in str(caught.value)
    with pytest.raises(AuthenticationError) as caught:
        DockerConfig.from_json("hunter2 is not json")
    assert "hunter2" not in str(caught.value)


def test_a_bearer_challenge_is_parsed_into_realm_service_and_scope() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a/b:pull,push"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert dict(challenge.params) == {
        "realm": "https://auth.io/token",
        "service": "reg.io",
        "scope": "repository:a/b:pull,push",
    }
