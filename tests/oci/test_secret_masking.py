"""No fragment of a registry secret reaches a message (issue 11, defect 4).

A registry's own text (its error messages, its auth challenge) goes into
errors, and errors go into events and conditions.  Secrets are masked in the
whole text before it is cut, URL userinfo is masked whatever the password,
the quoted spellings of a password count as the password, and a text that
still holds six characters of a secret in a row, in any case, is withheld.
"""

from __future__ import annotations

import base64

import pytest

from logicbundle.oci import AuthenticationError, NotFoundError
from logicbundle.oci._transport import WITHHELD, mask_userinfo

from .conftest import credentials_for, make_client, push_bundle, repo
from .mock_registry import MockRegistry

CUT = 160


def _not_found_message(registry: MockRegistry, sleeps: list[float]) -> str:
    with (
        make_client(registry, sleeps, auth=credentials_for(registry)) as client,
        pytest.raises(NotFoundError) as missing,
    ):
        if registry.state.auth == "bearer":
            push_bundle(client, repo(registry, tag="v1"))
        client.pull_manifest(repo(registry, tag="nope"))
    return str(missing.value)


def _assert_no_fragment(secret: str, message: str) -> None:
    for start in range(len(secret) - 5):
        assert secret[start : start + 6].casefold() not in message.casefold(), (start, message)


@pytest.mark.parametrize("before", [CUT - 30, CUT - 10, CUT - 7, CUT - 1])
def test_a_basic_header_straddling_the_cut_is_masked_whole(
    registry: MockRegistry, sleeps: list[float], before: int
) -> None:
    registry.state.auth = "basic"
    raw = f"{registry.state.username}:{registry.state.password}".encode()
    header = base64.b64encode(raw).decode()
    prefix = "x" * (before - len("Authorization: Basic "))
    registry.state.not_found_message = f"{prefix}Authorization: Basic {header} was not enough"
    message = _not_found_message(registry, sleeps)
    _assert_no_fragment(header, message)
    assert "x" * 10 in message  # the rest of the registry's text is kept


@pytest.mark.parametrize("before", [CUT - 20, CUT - 6])
def test_a_bearer_token_straddling_the_cut_is_masked_whole(
    registry: MockRegistry, sleeps: list[float], before: int
) -> None:
    registry.state.auth = "bearer"
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        push_bundle(client, repo(registry, tag="v1"))
        (token,) = registry.state.issued_tokens
        registry.state.not_found_message = "y" * before + f"Bearer {token} rejected"
        with pytest.raises(NotFoundError) as missing:
            client.pull_manifest(repo(registry, tag="nope"))
    _assert_no_fragment(token, str(missing.value))


def test_the_userinfo_of_a_url_in_a_registry_message_is_masked_whatever_the_password(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.not_found_message = (
        "mirror https://admin:Unknown-Pa55word@mirror.example/v2/x failed; "
        "also ftp://solo@files.example/"
    )
    message = _not_found_message(registry, sleeps)
    assert "Unknown-Pa55word" not in message
    assert "admin:" not in message
    assert "https://***@mirror.example/v2/x" in message
    assert "ftp://***@files.example/" in message


def test_mask_userinfo_leaves_urls_without_credentials_and_email_addresses_alone() -> None:
    text = "see https://registry.example/v2/ or mail ops@example.com"
    assert mask_userinfo(text) == text


def test_a_percent_encoded_password_in_a_registry_message_is_masked(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "basic"
    registry.state.password = "p@ss:W/rd+x y!"
    registry.state.not_found_message = "form password=p%40ss%3AW%2Frd%2Bx+y%21 rejected"
    message = _not_found_message(registry, sleeps)
    assert "p%40ss" not in message
    assert "password=*** rejected" in message
    # Only its start, quoted: no whole secret to mask, so the text is withheld.
    registry.state.not_found_message = "userinfo p%40ss%3AW is wrong"
    message = _not_found_message(registry, sleeps)
    assert "p%40ss" not in message
    assert WITHHELD in message


def test_a_lower_cased_echo_of_a_password_in_an_auth_scheme_is_withheld(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "basic"
    registry.state.password = "MixedCase-Secret-Value-42"
    registry.state.basic_challenge = f'{registry.state.password} realm="mock"'
    with (
        make_client(registry, sleeps, auth=credentials_for(registry)) as client,
        pytest.raises(AuthenticationError) as refused,
    ):
        client.pull_manifest(repo(registry, tag="v1"))
    _assert_no_fragment(registry.state.password, str(refused.value))
    assert WITHHELD in str(refused.value)


def test_a_refresh_token_the_token_service_handed_out_is_a_secret_too(
    registry: MockRegistry, sleeps: list[float]
) -> None:
    registry.state.auth = "bearer"
    refresh = "rt-" + "R3fr3sh" * 6
    registry.state.token_extra = {"refresh_token": refresh}
    with make_client(registry, sleeps, auth=credentials_for(registry)) as client:
        push_bundle(client, repo(registry, tag="v1"))
        registry.state.not_found_message = f"refresh {refresh[:12]} expired"
        with pytest.raises(NotFoundError) as missing:
            client.pull_manifest(repo(registry, tag="nope"))
    _assert_no_fragment(refresh, str(missing.value))
