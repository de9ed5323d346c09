"""Admission: refuse a replayed ``jti`` and hold each member to its rate limit.

Two backends with one interface and one order of decisions: a replayed ``jti`` is refused
without counting against the member's rate; a query over the rate is refused *without* using up
its ``jti`` (the council may send the same token again after ``Retry-After``); only an admitted
query records its ``jti``. ``MemoryAdmissionStore`` serves one process. ``RedisAdmissionStore``
makes one round trip per check (one Lua script, atomic) with both keys in one hash slot, so it
runs on one server, on Redis Cluster and behind Sentinel (see :func:`redis_client`). The script
travels once: it is run by its SHA1 (``EVALSHA``) and loaded with ``SCRIPT LOAD`` only when the
server answers ``NOSCRIPT`` (first use, a restart, a failover, ``SCRIPT FLUSH``); ``hiredis``
parses the replies in C. If Redis cannot be reached it raises :class:`StoreUnavailable`: it
never falls back to memory.

A store that forgets (a process restart for memory; Redis restarted without persistence or
flushed, detected by a per-member epoch key that never expires) answers ``ok-unproven`` for one
token lifetime plus leeway afterwards: the gate then looks for the jti in the consent log.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from broker.errors import SettingsError, StoreUnavailable
from trust.replay import ReplayCache, ReplayCacheFull

# "ok-unproven": admitted, but the store forgot its state (restarted empty, flushed, or just
# new) less than a token lifetime ago, so a jti it has not seen may still have been used
# before: the caller must prove it unused elsewhere (the consent log) or refuse it.
Admission = Literal["ok", "ok-unproven", "replayed", "rate-limited"]


class AdmissionStore(Protocol):
    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        """Record ``jti`` as used (until ``expires_at``) and count one query for ``member``."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryAdmissionStore:
    """One process's memory: it forgets everything when the process restarts, so for one
    token lifetime after it starts every admission is ``ok-unproven``."""

    def __init__(self, *, forget_window_s: int = 0) -> None:
        self._replay = ReplayCache()
        self._window: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
        self._forget_window_s = forget_window_s
        self._unproven_until: float | None = None

    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        key = f"{member}:{jti}"
        if self._replay.seen(key, now=int(now)):
            return "replayed"
        second = int(now)
        window, count = self._window[member]
        count = count + 1 if window == second else 1
        self._window[member] = (second, count)
        if count > limit:
            return "rate-limited"
        try:
            self._replay.first_use(key, expires_at=expires_at, now=int(now))
        except ReplayCacheFull as exc:
            raise StoreUnavailable("replay cache full") from exc
        if self._unproven_until is None:
            self._unproven_until = now + self._forget_window_s
        return "ok-unproven" if now < self._unproven_until else "ok"

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# KEYS[1] the jti key, KEYS[2] this second's rate counter, KEYS[3] the member's epoch key;
# ARGV[1] jti ttl, ARGV[2] limit, ARGV[3] now, ARGV[4] now + one token lifetime and leeway.
# The epoch key has no expiry: if it is missing, Redis lost what it held (restarted without
# persistence, flushed), and until ARGV[4] of that moment its "never seen" proves nothing.
# Returns 0 replayed (not counted), -1 rate-limited (jti not used up), 1 admitted, 2 admitted
# while unproven.
_ADMIT_SCRIPT = """
local unproven_until = redis.call('GET', KEYS[3])
if not unproven_until then
  unproven_until = ARGV[4]
  redis.call('SET', KEYS[3], unproven_until)
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local count = redis.call('INCR', KEYS[2])
if count == 1 then redis.call('EXPIRE', KEYS[2], 2) end
if count > tonumber(ARGV[2]) then return -1 end
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
if tonumber(ARGV[3]) < tonumber(unproven_until) then return 2 end
return 1
"""


_REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
_RESULTS: dict[int, Admission] = {1: "ok", 2: "ok-unproven", 0: "replayed", -1: "rate-limited"}


def _nodes(netloc: str) -> list[tuple[str, int]]:
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"a Redis node must be host:port, not {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def redis_client(url: str, *, timeout_s: float) -> tuple[Any, list[Any]]:
    """A Redis client for ``url``, and what else to close with it.

    - ``redis://[:password@]host:port/db``, ``rediss://…``, ``unix://…``: one server.
    - ``redis+cluster://[:password@]host:port[,host:port…]``: Redis Cluster, from these seed
      nodes. The admission keys of one member share a hash slot.
    - ``redis+sentinel://host:port[,host:port…]/service[/db]``: the current master of
      ``service``, as the Sentinels name it, followed through failovers. A password in the
      URL is the master's.
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
    }
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "redis+cluster":
        nodes = [ClusterNode(host, port) for host, port in _nodes(parts.netloc)]
        # one quick retry (a moved slot, a dropped connection), then fail closed
        cluster = RedisCluster(
            startup_nodes=nodes, password=password, retry=Retry(NoBackoff(), 1), **options
        )
        return cluster, []
    if parts.scheme == "redis+sentinel":
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise SettingsError("redis+sentinel:// needs the service name as its path")
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            _nodes(parts.netloc), sentinel_kwargs=options, **options
        )
        master = sentinel.master_for(
            service, db=int(db or 0), password=password, retry_on_timeout=False
        )
        return master, list(sentinel.sentinels)
    client = aioredis.Redis.from_url(
        url, retry_on_timeout=False, health_check_interval=0, **options
    )
    return client, []


class RedisAdmissionStore:
    """Admission in Redis. It refuses to run (StoreUnavailable) on a Redis that may evict keys
    (``maxmemory`` with a policy other than ``noeviction``): an evicted jti is a replay."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "axb",
        timeout_s: float = 0.5,
        forget_window_s: int = 0,
        policy_check_every_s: float = 30.0,
    ) -> None:
        self._redis, self._also_close = redis_client(url, timeout_s=timeout_s)
        self._prefix = prefix
        # redis-py's Script: EVALSHA, and on NOSCRIPT one SCRIPT LOAD and the EVALSHA again
        self._script = self._redis.register_script(_ADMIT_SCRIPT)
        self._forget_window_s = forget_window_s
        self._policy_check_every_s = policy_check_every_s
        self._policy_checked_at = -math.inf
        self._evicts = False

    async def _may_evict(self, now: float) -> bool:
        """Whether Redis may evict keys, asked at most every ``policy_check_every_s``."""
        if now - self._policy_checked_at >= self._policy_check_every_s:
            info = await self._redis.info("memory")
            nodes = [info] if "maxmemory_policy" in info else list(info.values())
            self._evicts = any(
                isinstance(node, dict)
                and int(node.get("maxmemory", 0)) > 0
                and node.get("maxmemory_policy") != "noeviction"
                for node in nodes
            )
            self._policy_checked_at = now
        return self._evicts

    async def admit(
        self, member: str, jti: str, *, expires_at: int, now: float, limit: int
    ) -> Admission:
        ttl = max(1, math.ceil(expires_at - now))
        slot = f"{self._prefix}:{{{member}}}"  # one hash slot per member: Cluster-safe
        keys = [f"{slot}:jti:{jti}", f"{slot}:rate:{int(now)}", f"{slot}:epoch"]
        args = [ttl, limit, int(now), int(now) + self._forget_window_s]
        try:
            if await self._may_evict(now):
                raise StoreUnavailable("redis may evict replay keys (maxmemory-policy)")
            result = int(await self._script(keys=keys, args=args))
        except _REDIS_ERRORS as exc:
            raise StoreUnavailable("redis unreachable") from exc
        return _RESULTS[result]

    async def ready(self) -> bool:
        try:
            return bool(await self._redis.ping()) and not await self._may_evict(time.time())
        except _REDIS_ERRORS:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
        for client in self._also_close:
            await client.aclose()
