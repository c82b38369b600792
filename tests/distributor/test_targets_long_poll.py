"""The long-poll answers at once on a change, holds otherwise, and wakes every waiter."""

from __future__ import annotations

import asyncio
import time

from logicbundle.distributor import BundleTarget, Split
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
