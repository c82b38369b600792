"""The long-poll answers at once on a change, holds otherwise, and wakes every waiter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import pytest

from logicbundle.distributor import BundleTarget, Split, TargetStore, _targets
from logicbundle.distributor._models import PodRef, TargetsResponse, targets_version
from tests.distributor.conftest import AUTH_A, AUTH_B, POD_A, POD_B, Harness, run, wait_until

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_a_first_poll_without_a_version_answers_at_once_with_the_pods_targets(
    harness: Harness,
) -> None:
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get("/v1/targets", params={"wait": "30"}, headers=AUTH_A)
            assert resp.status == 200
            body = await resp.json()
            assert body["known"] is True
            assert body["pod"] == {"namespace": "shop", "name": "web-a", "uid": "uid-a"}
            assert body["targets"] == {"pricing": {"digest": D1}}
            assert resp.headers["ETag"] == f'"{body["version"]}"'

    run(scenario)


def test_an_unknown_pod_gets_known_false_and_no_targets(harness: Harness) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get("/v1/targets", headers=AUTH_B)
            body = await resp.json()
            assert (resp.status, body["known"], body["targets"]) == (200, False, {})

    run(scenario)


def test_an_assignment_recorded_for_another_uid_is_not_shown(harness: Harness) -> None:
    """Regression guard: a StatefulSet pod recreated under the same name."""
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="old")

    async def scenario() -> None:
        async with harness.client() as client:
            body = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            assert body["known"] is False

    run(scenario)


def test_a_poll_with_a_stale_version_answers_at_once(harness: Harness) -> None:
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            resp = await client.get(
                "/v1/targets", params={"wait": "300", "version": "stale"}, headers=AUTH_A
            )
            assert resp.status == 200

    run(scenario)


def test_a_change_wakes_a_waiting_poll_with_the_new_targets(harness: Harness) -> None:
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            poll = asyncio.ensure_future(
                client.get(
                    "/v1/targets",
                    params={"wait": "30", "version": first["version"]},
                    headers=AUTH_A,
                )
            )
            await wait_until(lambda: harness.targets.waiting() == 1)
            assert harness.metric("logicbundle_distributor_long_polls_open") == 1
            target = BundleTarget(digest=D1, split=Split(candidate=D2, weight=5))
            harness.targets.set_targets("shop", "web-a", {"pricing": target}, uid="uid-a")
            resp = await poll
            body = await resp.json()
            assert resp.status == 200
            assert body["targets"]["pricing"]["split"] == {"candidate": D2, "weight": 5}
            assert body["version"] != first["version"]
            assert harness.metric("logicbundle_distributor_long_polls_open") == 0

    run(scenario)


def test_another_pods_change_does_not_answer_the_poll(harness: Harness) -> None:
    harness.max_wait_seconds = 0.05  # the cap ends the poll; a wake-up would too, wrongly

    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            poll = asyncio.ensure_future(
                client.get(
                    "/v1/targets",
                    params={"wait": "30", "version": first["version"]},
                    headers=AUTH_A,
                )
            )
            await wait_until(lambda: harness.targets.waiting() == 1)
            harness.targets.set_targets("shop", POD_B.name, {"x": BundleTarget(digest=D2)})
            resp = await poll
            assert resp.status == 304

    run(scenario)


def test_an_unchanged_poll_answers_304_with_the_same_version_at_the_timeout(
    harness: Harness,
) -> None:
    harness.targets.set_targets("shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            resp = await client.get(
                "/v1/targets", params={"wait": "0.05", "version": first["version"]}, headers=AUTH_A
            )
            assert resp.status == 304
            assert resp.headers["ETag"] == f'"{first["version"]}"'
            via_header = await client.get(
                "/v1/targets",
                params={"wait": "0"},
                headers={**AUTH_A, "If-None-Match": f'"{first["version"]}"'},
            )
            assert via_header.status == 304

    run(scenario)


def test_the_wait_is_capped_by_the_server(harness: Harness) -> None:
    harness.max_wait_seconds = 0.05

    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            resp = await client.get(
                "/v1/targets", params={"wait": "3600", "version": first["version"]}, headers=AUTH_A
            )
            assert resp.status == 304

    run(scenario)


def test_a_malformed_wait_is_refused_with_400(harness: Harness) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            for bad in ("soon", "-1", "nan", "inf"):
                resp = await client.get("/v1/targets", params={"wait": bad}, headers=AUTH_A)
                assert resp.status == 400, bad
                assert "wait" in (await resp.json())["error"]["message"]

    run(scenario)


def test_one_change_wakes_hundreds_of_waiters_at_once(harness: Harness) -> None:
    waiters = 300

    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()

            async def poll() -> int:
                resp = await client.get(
                    "/v1/targets",
                    params={"wait": "30", "version": first["version"]},
                    headers=AUTH_A,
                )
                await resp.read()
                return resp.status

            # In batches below the listen backlog (128), so no SYN is dropped and retried.
            polls: list[asyncio.Future[int]] = []
            while len(polls) < waiters:
                polls += [asyncio.ensure_future(poll()) for _ in range(50)]
                expected = len(polls)
                await wait_until(lambda n=expected: harness.targets.waiting() == n)
            started = time.perf_counter()
            harness.targets.set_targets(
                "shop", "web-a", {"pricing": BundleTarget(digest=D1)}, uid="uid-a"
            )
            statuses = await asyncio.gather(*polls)
            elapsed = time.perf_counter() - started
            assert statuses == [200] * waiters
            assert harness.targets.waiting() == 0
            assert harness.auth.calls >= 1
            print(f"{waiters} waiters answered in {elapsed * 1000:.1f} ms")

    run(scenario)


def test_shutdown_answers_every_waiting_poll(harness: Harness) -> None:
    async def scenario() -> None:
        async with harness.client() as client:
            first = await (await client.get("/v1/targets", headers=AUTH_A)).json()
            poll = asyncio.ensure_future(
                client.get(
                    "/v1/targets",
                    params={"wait": "30", "version": first["version"]},
                    headers=AUTH_A,
                )
            )
            await wait_until(lambda: harness.targets.waiting() == 1)
            harness.targets.close()
            assert (await poll).status == 304

    run(scenario)


def test_setting_the_same_targets_again_changes_nothing(harness: Harness) -> None:
    targets = {"pricing": BundleTarget(digest=D1)}
    assert harness.targets.set_targets("shop", "web-a", targets, uid="uid-a") is True
    assert harness.targets.set_targets("shop", "web-a", dict(targets), uid="uid-a") is False
    version = harness.targets.get("shop", "web-a", uid="uid-a").version
    harness.targets.forget("shop", "web-a")
    assert harness.targets.get("shop", "web-a", uid="uid-a").known is False
    harness.targets.set_targets("shop", "web-a", targets, uid="uid-a")
    assert harness.targets.get("shop", "web-a", uid="uid-a").version == version
    assert POD_A.name == "web-a"


def test_the_answer_is_the_targets_response_byte_for_byte(harness: Harness) -> None:
    # The body is put together from a per-version encoding of the targets: it must be
    # exactly what the TargetsResponse model would write, settings, split and all.
    targets = {
        "pricing": BundleTarget(
            digest=D1,
            split=Split(candidate=D2, weight=25),
            revision=7,
            traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            source="registry.example.com/team/pricing:v1",
        ),
        "tax": BundleTarget(digest=D2),
    }
    harness.targets.set_targets("shop", "web-a", targets, uid="uid-a")

    async def scenario() -> None:
        async with harness.client() as client:
            for headers, identity, known in ((AUTH_A, POD_A, True), (AUTH_B, POD_B, False)):
                resp = await client.get("/v1/targets", headers=headers)
                snapshot = harness.targets.get(identity.namespace, identity.name, uid=identity.uid)
                expected = TargetsResponse(
                    version=snapshot.version,
                    pod=PodRef(namespace=identity.namespace, name=identity.name, uid=identity.uid),
                    known=known,
                    targets=dict(snapshot.targets),
                ).model_dump_json(exclude_none=True)
                assert await resp.read() == expected.encode()

    run(scenario)


def test_pods_sharing_their_targets_are_versioned_and_encoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A rollback tells 2,000 pods of one cohort the same target: one hash and one JSON
    # encoding, not one per pod (it was one of each per pod, on the event loop).
    hashed: list[object] = []
    real = targets_version

    def counting(*, known: bool, targets: Mapping[str, BundleTarget]) -> str:
        hashed.append(targets)
        return real(known=known, targets=targets)

    monkeypatch.setattr(_targets, "targets_version", counting)  # what the store calls
    store = TargetStore()
    shared = BundleTarget(digest=D1)
    for i in range(50):
        store.set_targets("shop", f"web-{i}", {"pricing": shared}, uid=f"uid-{i}")
    assert len(hashed) == 1
    versions = {store.get("shop", f"web-{i}", uid=f"uid-{i}").version for i in range(50)}
    assert versions == {real(known=True, targets={"pricing": shared})}
    bodies = {
        id(store.targets_json(store.get("shop", f"web-{i}", uid=f"uid-{i}"))) for i in range(50)
    }
    assert len(bodies) == 1
    # An equal target built separately is still the same version (content, not identity).
    store.set_targets("shop", "web-x", {"pricing": BundleTarget(digest=D1)}, uid="uid-x")
    assert store.get("shop", "web-x", uid="uid-x").version in versions
    other = BundleTarget(digest=D2)
    store.set_targets("shop", "web-0", {"pricing": other}, uid="uid-0")
    assert store.get("shop", "web-0", uid="uid-0").version == real(
        known=True, targets={"pricing": other}
    )
