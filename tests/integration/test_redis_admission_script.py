"""Redis admission's one server-side script: run by its SHA (``EVALSHA``), loaded once, loaded
again when the server forgot it (``NOSCRIPT``: a restart, a failover to a replica that never
saw it, ``SCRIPT FLUSH``), replies parsed by ``hiredis``; and still fail closed."""

from __future__ import annotations

import time

import pytest
import redis
from redis._parsers.hiredis import _AsyncHiredisParser

from broker.errors import StoreUnavailable
from broker.stores.admission import RedisAdmissionStore
from tests.support.redis_server import PrivateRedis


def calls(server: redis.Redis) -> dict[str, int]:
    stats = server.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {name: n - before.get(name, 0) for name, n in after.items() if name != "info"}
    return {name: n for name, n in changed.items() if n}


async def test_the_script_is_loaded_once_and_reloaded_after_the_server_forgets_it(
    private_redis: PrivateRedis,
) -> None:
    store = RedisAdmissionStore(private_redis.url)
    server = private_redis.client()
    now = time.time()
    expires = int(now) + 60
    try:
        before = calls(server)
        assert await store.admit("m", "first", expires_at=expires, now=now, limit=100) == "ok"
        first = delta(before, calls(server))
        assert first.get("script|load", first.get("script", 0)) == 1  # loaded on first use

        before = calls(server)
        for n in range(3):
            assert await store.admit("m", f"j{n}", expires_at=expires, now=now, limit=100) == "ok"
        steady = delta(before, calls(server))
        assert steady.get("evalsha") == 3
        assert "script" not in steady
        assert "script|load" not in steady
        assert "eval" not in steady  # never the script's text on the wire again

        server.script_flush()  # the server forgets every script (as a restart without it does)
        before = calls(server)
        assert await store.admit("m", "after", expires_at=expires, now=now, limit=100) == "ok"
        assert await store.admit("m", "after", expires_at=expires, now=now, limit=100) == (
            "replayed"
        )
        reloaded = delta(before, calls(server))
        assert reloaded.get("script|load", reloaded.get("script", 0)) == 1
        assert reloaded["evalsha"] == 3  # NOSCRIPT, then the retry, then the replay's
    finally:
        await store.close()
        server.close()


async def test_replies_are_parsed_by_hiredis(private_redis: PrivateRedis) -> None:
    store = RedisAdmissionStore(private_redis.url)
    try:
        assert await store.admit(
            "m", "x", expires_at=int(time.time()) + 60, now=time.time(), limit=5
        )
        pool = store._redis.connection_pool
        connection = await pool.get_connection()
        try:
            assert isinstance(connection._parser, _AsyncHiredisParser)
        finally:
            await pool.release(connection)
    finally:
        await store.close()


async def test_a_server_that_dies_after_the_script_was_loaded_fails_closed(
    private_redis: PrivateRedis,
) -> None:
    store = RedisAdmissionStore(private_redis.url, timeout_s=0.2)
    now = time.time()
    try:
        assert await store.admit("m", "a", expires_at=int(now) + 60, now=now, limit=5) == "ok"
        private_redis.kill()
        with pytest.raises(StoreUnavailable):
            await store.admit("m", "b", expires_at=int(now) + 60, now=now, limit=5)
        private_redis.start()  # back, empty: the script is loaded again, the jti is new
        assert await store.admit("m", "b", expires_at=int(now) + 60, now=now, limit=5) == "ok"
    finally:
        await store.close()
