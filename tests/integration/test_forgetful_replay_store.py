"""Replay protection survives a replay store that forgets. Redis restarted without
persistence, flushed, or configured to evict keys; a broker process restarted with its memory
store: a query answered before must never be answered again, and its jti is recorded once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.logdb import log_sql
from tests.support.redis_server import PrivateRedis
from tests.support.servers import RunningBroker, RunningProvider, StartBroker

BB, BB_PURPOSE = devscheme.BLUE_BADGE_CHECK, "blue-badge-application"
WHO = ("bb-yes-dla", "bb-no", "no-match", "bb-yes-pip-moving")


async def answered(client: EligibilityClient, count: int) -> list[tuple[str, str]]:
    """``count`` queries, each answered: their tokens and jtis, as an attacker kept them."""
    kept = []
    for n in range(count):
        token, jti = client.sign_query(
            BB, purpose=BB_PURPOSE, subject=subject_of(WHO[n % len(WHO)]), assurance="P2"
        )
        await client.exchange(token, jti)
        kept.append((token, jti))
    return kept


async def assert_all_refused(client: EligibilityClient, kept: list[tuple[str, str]]) -> None:
    for token, jti in kept:
        with pytest.raises(CheckFailed) as refused:
            await client.send(token, jti)
        assert refused.value.status == 401, jti
        assert refused.value.problem["type"].endswith("invalid-token")


async def assert_each_jti_recorded_once(broker: RunningBroker) -> None:
    rows = await log_sql(
        broker.settings, "SELECT query_jti, COUNT(*) FROM records GROUP BY query_jti"
    )
    assert rows
    assert {count for _, count in rows} == {1}


async def until_ready(broker: RunningBroker, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(broker.url + "/readyz") as response:
                if response.status == 200:
                    return
            assert asyncio.get_running_loop().time() < deadline, "the broker never got ready"
            await asyncio.sleep(0.1)


def council(scheme: devscheme.DevScheme) -> EligibilityClient:
    return EligibilityClient.from_config(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE))


@pytest.mark.parametrize("how", ["restarted-empty", "flushed"])
async def test_queries_answered_before_redis_forgot_are_not_answered_again(
    how: str,
    private_redis: PrivateRedis,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    scheme: devscheme.DevScheme,
) -> None:
    broker = await start_broker(redis_url=private_redis.url)
    async with council(scheme) as client:
        kept = await answered(client, 20)
        if how == "restarted-empty":
            private_redis.kill()
            private_redis.start()  # same port, nothing persisted
            await until_ready(broker)  # the broker reconnects (a 503 meanwhile: fail closed)
        else:
            with private_redis.client() as admin:
                admin.flushdb()
        await assert_all_refused(client, kept)
        fresh = await client.check(
            BB, purpose=BB_PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
        assert fresh.outcome == "yes"  # a query issued after the loss is answered as usual
    await assert_each_jti_recorded_once(broker)


async def test_queries_answered_before_a_broker_restart_are_not_answered_again(
    start_broker: StartBroker, providers: dict[str, RunningProvider], scheme: devscheme.DevScheme
) -> None:
    """The memory store forgets when its process restarts; the consent log does not."""
    first = await start_broker()
    async with council(scheme) as client:
        kept = await answered(client, 8)
        await first.stop()
        second = await start_broker()
        await assert_all_refused(client, kept)
    await assert_each_jti_recorded_once(second)


async def test_a_redis_that_may_evict_keys_is_refused(
    tmp_path: Path,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    scheme: devscheme.DevScheme,
) -> None:
    """Under maxmemory with an eviction policy, an evicted jti key would be a replay
    admitted: the broker fails closed and says it is not ready."""
    evicting = PrivateRedis(
        tmp_path / "evicting", config="maxmemory 8mb\nmaxmemory-policy allkeys-lru\n"
    )
    evicting.start()
    try:
        broker = await start_broker(redis_url=evicting.url)
        async with council(scheme) as client:
            with pytest.raises(CheckFailed) as refused:
                await client.check(
                    BB, purpose=BB_PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
                )
            assert refused.value.status == 503
            assert refused.value.problem["type"].endswith("store-unavailable")
        async with (
            aiohttp.ClientSession() as session,
            session.get(broker.url + "/readyz") as response,
        ):
            assert response.status == 503
            assert (await response.json())["checks"]["admission_store"] is False
    finally:
        evicting.kill()
