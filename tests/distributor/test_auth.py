"""Only a pod's own token opens its targets; answers are cached without keeping the token."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from logicbundle.distributor import (
    AuthenticationFailedError,
    AuthenticationUnavailableError,
    CachingAuthenticator,
    PodIdentity,
    identity_from_user,
)
from tests.distributor.conftest import AUTH_A, POD_A, FakeAuthenticator, Harness, run


def test_a_request_without_a_token_is_refused_with_401_and_a_bearer_challenge(
    harness: Harness,
) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
                resp = await client.get("/v1/targets", headers=headers)
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await client.post("/v1/reports", json={})).status == 401
        missing = {"reason": "missing"}
        assert harness.metric("logicbundle_distributor_auth_failures_total", missing) == 4

    run(scenario)


def test_a_bad_token_is_refused_with_401(harness: Harness) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get("/v1/targets", headers={"Authorization": "Bearer forged"})
            assert resp.status == 401
            body = await resp.text()
            assert "forged" not in body
        invalid = {"reason": "invalid"}
        assert harness.metric("logicbundle_distributor_auth_failures_total", invalid) == 1

    run(scenario)


def test_naming_another_pod_in_the_query_is_refused_with_403(harness: Harness) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            for params in ({"pod": "web-b"}, {"namespace": "other"}):
                resp = await client.get("/v1/targets", params=params, headers=AUTH_A)
                assert resp.status == 403, params
            own = {"pod": "web-a", "namespace": "shop"}
            assert (await client.get("/v1/targets", params=own, headers=AUTH_A)).status == 200

    run(scenario)


def test_an_authenticator_that_cannot_check_gives_503(harness: Harness) -> None:
    class Down:
        async def authenticate(self, token: str) -> PodIdentity:
            raise AuthenticationUnavailableError("the TokenReview failed: HTTP 500")

    harness.auth = Down()  # type: ignore[assignment]

    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get("/v1/targets", headers=AUTH_A)
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"

    run(scenario)


def test_answers_are_cached_positive_longer_than_negative() -> None:
    now = [0.0]
    inner = FakeAuthenticator()
    auth = CachingAuthenticator(inner, ttl=60, negative_ttl=5, clock=lambda: now[0])

    async def scenario() -> None:
        assert await auth.authenticate("token-a") == POD_A
        assert await auth.authenticate("token-a") == POD_A
        with pytest.raises(AuthenticationFailedError):
            await auth.authenticate("nope")
        with pytest.raises(AuthenticationFailedError):
            await auth.authenticate("nope")
        assert inner.calls == 2
        now[0] = 10
        await auth.authenticate("token-a")
        with pytest.raises(AuthenticationFailedError):
            await auth.authenticate("nope")
        assert inner.calls == 3
        now[0] = 61
        await auth.authenticate("token-a")
        assert inner.calls == 4

    run(scenario)
    assert all(isinstance(key, bytes) and len(key) == 32 for key in auth._cache)


def test_a_cached_answer_is_dropped_once_its_pod_is_gone_and_expiries_are_spread() -> None:
    """Kept 5 minutes (10,000 agents at 60 s were 170 reviews a second), but a deleted or
    replaced pod's token is reviewed again at once; a fleet's answers expire apart."""
    now = [0.0]
    there = {POD_A.uid}
    inner = FakeAuthenticator()
    jitters = iter([0.0, 1.0, 0.5])
    auth = CachingAuthenticator(
        inner,
        ttl=300,
        clock=lambda: now[0],
        still_there=lambda identity: identity.uid in there,
        jitter=lambda: next(jitters),
    )

    async def scenario() -> None:
        assert await auth.authenticate("token-a") == POD_A
        now[0] = 250
        assert await auth.authenticate("token-a") == POD_A
        assert inner.calls == 1
        there.clear()  # the pod was deleted: its token is checked again
        assert await auth.authenticate("token-a") == POD_A
        assert inner.calls == 2
        there.add(POD_A.uid)
        # The second answer was kept 300 * (1 - 0.2 * 1.0) = 240 s.
        now[0] = 250 + 239
        await auth.authenticate("token-a")
        assert inner.calls == 2
        now[0] = 250 + 241
        await auth.authenticate("token-a")
        assert inner.calls == 3

    run(scenario)


def test_concurrent_requests_with_one_token_share_one_review() -> None:
    release = asyncio.Event()

    class Slow(FakeAuthenticator):
        async def authenticate(self, token: str) -> PodIdentity:
            self.calls += 1
            await release.wait()
            return POD_A

    inner = Slow()
    auth = CachingAuthenticator(inner)

    async def scenario() -> None:
        pending = [asyncio.ensure_future(auth.authenticate("token-a")) for _ in range(20)]
        for _ in range(5):
            await asyncio.sleep(0)  # bare yields: let every caller reach the cache
        release.set()
        assert await asyncio.gather(*pending) == [POD_A] * 20
        assert inner.calls == 1

    run(scenario)


def _jwt(claims: dict[str, object]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"e30.{payload}.sig"


def test_a_positive_answer_is_not_kept_past_the_tokens_expiry() -> None:
    inner = FakeAuthenticator()
    token = _jwt({"exp": 1_000_005})
    from tests.distributor import conftest

    conftest.TOKENS[token] = POD_A
    try:
        now = [0.0]
        auth = CachingAuthenticator(
            inner, ttl=60, clock=lambda: now[0], wall_clock=lambda: 1_000_000.0
        )

        async def scenario() -> None:
            await auth.authenticate(token)
            now[0] = 4
            await auth.authenticate(token)
            now[0] = 6
            await auth.authenticate(token)

        run(scenario)
        assert inner.calls == 2
    finally:
        del conftest.TOKENS[token]


def test_the_identity_comes_from_the_service_account_username_and_pod_extras() -> None:
    extra = {
        "authentication.kubernetes.io/pod-name": ["web-a"],
        "authentication.kubernetes.io/pod-uid": ["uid-a"],
    }
    identity = identity_from_user(username="system:serviceaccount:shop:web", extra=extra)
    assert identity == PodIdentity(
        namespace="shop", name="web-a", uid="uid-a", service_account="web"
    )
    with pytest.raises(AuthenticationFailedError, match="not bound to a pod"):
        identity_from_user(username="system:serviceaccount:shop:web", extra={})
    with pytest.raises(AuthenticationFailedError, match="service account"):
        identity_from_user(username="alice", extra=extra)
    with pytest.raises(AuthenticationFailedError, match="malformed"):
        identity_from_user(username="system:serviceaccount:shop", extra=extra)
