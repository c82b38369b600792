"""Who is calling: a pod-bound service-account token, checked with a TokenReview.

The agent presents the projected token the webhook mounted into it (audience
:data:`~logicbundle.api.names.DISTRIBUTOR_AUDIENCE`).  The API server's
TokenReview says whether the token is valid *for that audience* and, for a
token bound to a pod, names the pod (``authentication.kubernetes.io/pod-name``
and ``pod-uid`` in ``user.extra``); the namespace comes from the username
``system:serviceaccount:<namespace>:<name>``.  The identity therefore comes
from the token alone, never from anything else in the request.

A TokenReview per request would put the API server on the agents' hot path,
so :class:`CachingAuthenticator` keeps answers, keyed by the token's SHA-256
(the token itself is never stored nor logged), and lets concurrent requests
with the same token share one review.  How long: at 10,000 agents a 60 s
cache meant 170 TokenReviews a second, which kept a replica's CPU busy and
its long-polls timing out; so a positive answer is kept 5 minutes, spread by
a jitter so that the answers of a fleet started together do not all expire
together, and only while the pod the token is bound to is still there with
the same uid (``still_there``: the replica's pod watch).  A deleted pod's
token is reviewed again at its next request, which the API server refuses.

Tokens are never part of an error message: an ``ApiException`` from a
TokenReview echoes the request body, token included, so only its status is
kept.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Final, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from logicbundle.api import names
from logicbundle.distributor._models import PodIdentity
from logicbundle.errors import LogicBundleError

POD_NAME_EXTRA: Final = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA: Final = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"


class AuthenticationFailedError(LogicBundleError):
    """The credential is missing, invalid, for another audience or not bound to a pod (401)."""

    reason = "Unauthenticated"


class AuthenticationUnavailableError(LogicBundleError):
    """The token could not be checked now (API server unreachable, RBAC missing): 503."""

    retryable = True
    reason = "AuthenticationUnavailable"


class Authenticator(Protocol):
    """Turns a bearer token into the calling pod, or raises one of the two errors above."""

    async def authenticate(self, token: str) -> PodIdentity: ...


def identity_from_user(
    *, username: str | None, extra: dict[str, list[str]] | None, pod: bool = True
) -> PodIdentity:
    """The pod a TokenReview's ``status.user`` names; :class:`AuthenticationFailedError` if none.

    ``pod`` False also accepts a ServiceAccount token bound to no pod (the
    identity's ``name`` and ``uid`` are then empty): what the read-only
    endpoints take from an operator's tool (``logicbundle status --pods``).
    The pod endpoints never see such an identity.
    """
    if not username or not username.startswith(SERVICE_ACCOUNT_PREFIX):
        raise AuthenticationFailedError("the token does not belong to a service account")
    parts = username.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":")
    if len(parts) != 2 or not all(parts):
        raise AuthenticationFailedError("the token's service-account name is malformed")
    pod_names = (extra or {}).get(POD_NAME_EXTRA) or []
    pod_uids = (extra or {}).get(POD_UID_EXTRA) or []
    if not pod_names and not pod_uids and not pod:
        return PodIdentity(namespace=parts[0], name="", uid="", service_account=parts[1])
    if len(pod_names) != 1 or len(pod_uids) != 1 or not pod_names[0] or not pod_uids[0]:
        raise AuthenticationFailedError(
            "the token is not bound to a pod",
            hint="The agent must present a projected service-account token bound to its pod.",
        )
    return PodIdentity(
        namespace=parts[0], name=pod_names[0], uid=pod_uids[0], service_account=parts[1]
    )


class TokenReviewAuthenticator:
    """Checks each token with a TokenReview for ``audience`` (the sync client runs in a thread).

    The ServiceAccount of the distributor needs ``create`` on
    ``tokenreviews.authentication.k8s.io``.
    """

    def __init__(
        self,
        *,
        api_client: Any,
        audience: str = names.DISTRIBUTOR_AUDIENCE,
        executor: Executor | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._api = client.AuthenticationV1Api(api_client)
        self.audience = audience
        self._executor = executor
        self._timeout = request_timeout

    async def authenticate(self, token: str) -> PodIdentity:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._review, token)

    def _review(self, token: str) -> PodIdentity:
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]),
        )
        try:
            review = self._api.create_token_review(body, _request_timeout=self._timeout)
        except ApiException as exc:
            # exc.body echoes the request, token included: keep the status only.
            hint = (
                "Grant the distributor's ServiceAccount `create` on tokenreviews."
                if exc.status == 403
                else None
            )
            raise AuthenticationUnavailableError(
                f"the TokenReview failed: HTTP {exc.status} {exc.reason}", hint=hint
            ) from None
        except (HTTPError, OSError) as exc:
            raise AuthenticationUnavailableError(
                f"the TokenReview failed: {type(exc).__name__}"
            ) from None
        status = review.status
        if status is None or not status.authenticated:
            raise AuthenticationFailedError(
                "the token was refused (invalid, expired, for another audience, or its pod is gone)"
            )
        if self.audience not in (status.audiences or []):
            raise AuthenticationFailedError(f"the token is not valid for {self.audience!r}")
        user = status.user
        # Pod-bound or not: the endpoints decide (the pod ones refuse a pod-less token).
        return identity_from_user(
            username=getattr(user, "username", None),
            extra=getattr(user, "extra", None),
            pod=False,
        )


def _token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verification: only ever used to cache *less*."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


DEFAULT_TTL: Final = 300.0
"""Seconds a positive answer is kept (less a jitter of up to :data:`TTL_JITTER` of it)."""
TTL_JITTER: Final = 0.2


class CachingAuthenticator:
    """Remembers answers of another authenticator: positive for ``ttl``, negative for less.

    A positive answer is never kept past the token's own expiry, nor used once
    ``still_there(identity)`` says the pod it names is gone (or was replaced);
    identities bound to no pod (the operator's, a status reader's) are kept
    for ``ttl``.  Answers that say "could not check" are not cached.
    """

    def __init__(
        self,
        inner: Authenticator,
        *,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = 5.0,
        max_entries: int = 50_000,
        still_there: Callable[[PodIdentity], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._inner = inner
        self._still_there = still_there
        self._jitter = jitter
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max = max_entries
        self._clock = clock
        self._wall = wall_clock
        self._cache: OrderedDict[bytes, tuple[float, PodIdentity | AuthenticationFailedError]] = (
            OrderedDict()
        )
        self._inflight: dict[bytes, asyncio.Future[PodIdentity]] = {}

    async def authenticate(self, token: str) -> PodIdentity:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            expires, answer = cached
            if expires > now:
                if isinstance(answer, AuthenticationFailedError):
                    raise AuthenticationFailedError(answer.message, hint=answer.hint)
                if self._still_there is None or not answer.name or self._still_there(answer):
                    return answer
            del self._cache[key]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[PodIdentity] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            identity = await self._inner.authenticate(token)
        except AuthenticationFailedError as exc:
            self._store(key, exc, self._negative_ttl)
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        except BaseException as exc:
            shared = (
                exc
                if isinstance(exc, Exception)
                else AuthenticationUnavailableError("the token check was interrupted")
            )
            future.set_exception(shared)
            future.exception()
            raise
        else:
            ttl = self._ttl * (1 - TTL_JITTER * self._jitter())
            exp = _token_expiry(token)
            if exp is not None:
                ttl = min(ttl, exp - self._wall())
            if ttl > 0:
                self._store(key, identity, ttl)
            future.set_result(identity)
            return identity
        finally:
            del self._inflight[key]

    def _store(
        self, key: bytes, answer: PodIdentity | AuthenticationFailedError, ttl: float
    ) -> None:
        self._cache[key] = (self._clock() + ttl, answer)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
