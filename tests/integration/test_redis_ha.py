"""Admission on highly available Redis: a three-node Redis Cluster and a master watched by a
Sentinel, each run here as real ``redis-server`` processes on loopback.

On Cluster, each member's keys share one hash slot, so the admission script runs where that
slot lives, and members spread over the nodes. A killed node fails closed for its members.
Behind Sentinel, the store follows a failover to the promoted replica, and a ``jti`` used
before the failover is still refused after it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.cluster import key_slot

from broker.errors import SettingsError, StoreUnavailable
from broker.scheme import dev as devscheme
from broker.settings import load_settings
from broker.stores.admission import RedisAdmissionStore, redis_client
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.redis_server import PrivateRedis
from tests.support.servers import RunningBroker, StartBroker

pytestmark = pytest.mark.redis

MEMBERS = [f"council-{n}" for n in range(12)]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[PrivateRedis]]:
    nodes = [
        PrivateRedis(
            tmp_path / f"node-{n}",
            # survivors keep serving their own slots when a node is gone, whatever the timing
            config=(
                "cluster-enabled yes\ncluster-node-timeout 2000\ncluster-require-full-coverage no\n"
            ),
            args=["--cluster-config-file", f"nodes-{n}.conf"],
        )
        for n in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            for node in nodes:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info:
                        return False
            return True

        wait_until(ready, 30, "the cluster to form")
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def owner(nodes: list[PrivateRedis], member: str) -> PrivateRedis:
    """The node serving the hash slot of ``member``'s admission keys."""
    slot = key_slot(f"axb:{{{member}}}:jti:x".encode())
    with nodes[0].client() as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(node for node in nodes if node.port == port)
    raise AssertionError(f"no node serves slot {slot}")


def cluster_url(nodes: list[PrivateRedis]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes)


async def test_admission_on_a_redis_cluster(cluster: list[PrivateRedis]) -> None:
    store = RedisAdmissionStore(cluster_url(cluster[:1]), prefix="axb")  # one seed is enough
    now = time.time()

    async def admit(member: str, jti: str, at: float = now) -> str:
        return await store.admit(member, jti, expires_at=int(now) + 60, now=at, limit=2)

    try:
        assert await store.ready()
        for member in MEMBERS:
            assert await admit(member, "jti-1") == "ok"
            assert await admit(member, "jti-1") == "replayed"
            assert await admit(member, "jti-2") == "ok"
            assert await admit(member, "jti-3") == "rate-limited"  # jti-3 is not used up...
            assert await admit(member, "jti-3", now + 1) == "ok"  # ...so next second it is
    finally:
        await store.close()
    # the members' keys really live on different nodes, each member's on one node only
    holders = {}
    for member in MEMBERS:
        found = []
        for node in cluster:
            with node.client() as client:
                if client.keys(f"axb:{{{member}}}:jti:*"):  # KEYS: local, never MOVED
                    found.append(node.port)
        assert found == [owner(cluster, member).port], member
        holders[member] = found[0]
    assert len(set(holders.values())) >= 2


async def test_a_killed_cluster_node_fails_closed_for_its_members(
    cluster: list[PrivateRedis],
) -> None:
    store = RedisAdmissionStore(cluster_url(cluster), prefix="axb", timeout_s=0.3)
    victim = owner(cluster, MEMBERS[0])
    survivor_member = next(m for m in MEMBERS if owner(cluster, m) is not victim)
    now = time.time()
    try:
        assert await store.admit(MEMBERS[0], "a", expires_at=int(now) + 60, now=now, limit=10)
        victim.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.admit(MEMBERS[0], "b", expires_at=int(now) + 60, now=now, limit=10)
        assert time.monotonic() - started < 10
        # members whose slots live on the other nodes are still admitted
        result = await store.admit(
            survivor_member, "c", expires_at=int(now) + 60, now=now, limit=10
        )
        assert result == "ok"
    finally:
        await store.close()


async def test_a_broker_admits_through_the_cluster(
    cluster: list[PrivateRedis],
    start_broker: StartBroker,
    providers: object,
    scheme: devscheme.DevScheme,
) -> None:
    broker: RunningBroker = await start_broker(redis_url=cluster_url(cluster))
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    async with EligibilityClient.from_config(config) as client:
        token, jti = client.sign_query(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of("bb-yes-dla"),
            assurance="P2",
        )
        answer = await client.send(token, jti)
        assert answer.outcome == "yes"
        with pytest.raises(CheckFailed) as replay:
            await client.send(token, jti)
        assert replay.value.status == 401
    assert broker.settings.redis_url == cluster_url(cluster)


# --- Sentinel ------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis, PrivateRedis]]:
    # Each names the master's port, which is known once the master has bound one.
    master = PrivateRedis(tmp_path / "master")
    replica = PrivateRedis(tmp_path / "replica")
    watcher = PrivateRedis(tmp_path / "sentinel", args=["--sentinel"])
    try:
        master.start()
        replica.args = ("--replicaof", "127.0.0.1", str(master.port))
        watcher.config = (
            f"sentinel monitor axb 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds axb 1000\n"
            "sentinel failover-timeout axb 5000\n"
        )
        replica.start()

        def replicating() -> bool:
            with master.client() as client:
                return int(client.info("replication")["connected_slaves"]) == 1

        wait_until(replicating, 20, "the replica to attach")
        watcher.start()
        yield master, replica, watcher
    finally:
        for server in (watcher, replica, master):
            server.kill()


def sentinel_url(watcher: PrivateRedis) -> str:
    return f"redis+sentinel://127.0.0.1:{watcher.port}/axb/0"


async def test_admission_behind_sentinel_survives_a_failover(
    sentinel: tuple[PrivateRedis, PrivateRedis, PrivateRedis],
) -> None:
    master, replica, watcher = sentinel
    store = RedisAdmissionStore(sentinel_url(watcher), prefix="axb", timeout_s=0.3)
    now = time.time()
    try:
        assert await store.admit(
            "council-a", "before", expires_at=int(now) + 600, now=now, limit=10
        )
        with master.client() as client:  # the replica has it (it may lag on a loaded machine)
            wait_until(
                lambda: client.execute_command("WAIT", 1, 1000) == 1, 20, "the replica's ack"
            )
        master.kill()

        # during the failover: refused (fail closed), never admitted elsewhere
        outcomes = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                result = await store.admit(
                    "council-a", "during", expires_at=int(now) + 600, now=time.time(), limit=1000
                )
            except StoreUnavailable:
                outcomes.append("unavailable")
                await asyncio.sleep(0.2)
                continue
            outcomes.append(result)
            break
        assert outcomes[-1] == "ok", outcomes
        assert "unavailable" in outcomes  # the outage was seen, and refused
        with replica.client() as client:
            assert client.info("replication")["role"] == "master"  # the replica was promoted
        # the jti used before the failover is still refused by the new master
        again = await store.admit(
            "council-a", "before", expires_at=int(now) + 600, now=time.time(), limit=1000
        )
        assert again == "replayed"
    finally:
        await store.close()


def test_malformed_ha_urls_are_refused(scheme: devscheme.DevScheme) -> None:
    for url in (
        "redis+sentinel://127.0.0.1:26379",  # no service
        "redis+cluster://127.0.0.1",  # no port
        "redis+cluster://127.0.0.1:x",
    ):
        with pytest.raises(SettingsError, match=r"service|host:port"):
            redis_client(url, timeout_s=0.1)
    with pytest.raises(Exception, match="redis_url must start with"):
        load_settings(scheme.broker_config, redis_url="http://127.0.0.1:6379")
