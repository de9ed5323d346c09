"""Admission: refuse a replayed ``jti`` and hold each member to its rate limit.

Two backends with one interface. ``MemoryAdmissionStore`` serves one process. With Redis
configured, ``RedisAdmissionStore`` makes one round trip per check (a MULTI pipeline) and, if
Redis cannot be reached, raises :class:`StoreUnavailable`: it never falls back to memory.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.errors import RateLimited, Replayed, StoreUnavailable
from trust.replay import ReplayCache, ReplayCacheFull

Admission = Literal["ok", "replayed", "rate-limited"]


class AdmissionStore(Protocol):
    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        """Record ``jti`` as used (until ``expires_at``) and count one query for ``member``."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryAdmissionStore:
    def __init__(self) -> None:
        self._replay = ReplayCache()
        self._window: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))

    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        try:
            first = self._replay.first_use(f"{member}:{jti}", expires_at=expires_at, now=int(now))
        except ReplayCacheFull as exc:
            raise StoreUnavailable("replay cache full") from exc
        if not first:
            return "replayed"
        second = int(now)
        window, count = self._window[member]
        count = count + 1 if window == second else 1
        self._window[member] = (second, count)
        return "ok" if count <= limit else "rate-limited"

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class RedisAdmissionStore:
    def __init__(self, url: str, *, prefix: str = "axb", timeout_s: float = 0.5) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._prefix = prefix

    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        ttl = max(1, math.ceil(expires_at - now))
        rate_key = f"{self._prefix}:rate:{member}:{int(now)}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._prefix}:jti:{member}:{jti}", b"1", nx=True, ex=ttl)
                pipe.incr(rate_key)
                pipe.expire(rate_key, 2)
                first, count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable("redis unreachable") from exc
        if not first:
            return "replayed"
        return "ok" if int(count) <= limit else "rate-limited"

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


async def admit_or_refuse(
    store: AdmissionStore, member: str, jti: str, *, expires_at: int, now: float, limit: int
) -> None:
    """Admit one verified message or raise: Replayed (rendered as any failed verification)
    or RateLimited."""
    admitted = await store.admit(member, jti, expires_at=expires_at, now=now, limit=limit)
    if admitted == "replayed":
        raise Replayed("jti seen before")
    if admitted == "rate-limited":
        raise RateLimited(retry_after=1)
