"""Admission with Redis: replay refused across broker processes, fail closed, rate limits.

The shared Redis on 127.0.0.1:6379 is used only in its database 14, which is flushed before
and after each test that uses it. Tests that stop Redis run their own ``redis-server`` on a port
of its own and never touch the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio.connection as redis_connection

from broker.errors import StoreUnavailable
from broker.scheme import dev as devscheme
from broker.stores.admission import RedisAdmissionStore
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.redis_server import PrivateRedis
from tests.support.servers import RunningBroker, RunningProvider, StartBroker, refusing_port
from trust.keys import SigningKey

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
SHARED_DB = 14  # never 0: the shared server belongs to other users too
SHARED_URL = f"redis://127.0.0.1:6379/{SHARED_DB}"
BB = devscheme.BLUE_BADGE_CHECK
BB_PURPOSE = "blue-badge-application"
JWT = "application/jwt"
PROBLEM = "application/problem+json"
PROBLEM_PREFIX = "urn:ax-broker:problem:"


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def problem(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


async def post_token(session: aiohttp.ClientSession, url: str, token: str) -> Reply:
    async with session.post(
        f"{url}/v1/checks", data=token, headers={"Content-Type": JWT, "Accept": JWT}
    ) as response:
        return Reply(response.status, dict(response.headers), await response.read())


def council_client(scheme: devscheme.DevScheme, url: str) -> EligibilityClient:
    """A Blue Badge council client that talks to the broker at ``url``."""
    key = SigningKey.from_pem(scheme.key_path(devscheme.COUNCIL_BLUE_BADGE).read_bytes())
    return EligibilityClient(
        member_id=devscheme.COUNCIL_BLUE_BADGE,
        key=key,
        broker_url=url,
        broker_id=devscheme.BROKER,
    )


def sign(client: EligibilityClient, identity: str = "bb-yes-dla") -> tuple[str, str]:
    return client.sign_query(
        BB,
        purpose=BB_PURPOSE,
        subject=subject_of(identity),
        lawful_basis="public-task",
        assurance="P2",
    )


def consent_rows(path: Path) -> dict[str, str]:
    """query_jti -> outcome for every record in a consent log (empty if none yet)."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT query_jti, outcome FROM records").fetchall())
    except sqlite3.OperationalError:  # the table is not created yet
        return {}
    finally:
        db.close()


async def start_of_second(margin: float = 0.15) -> None:
    """Sleep until just after a wall-clock second begins (rate windows are whole seconds)."""
    fraction = time.time() % 1
    if fraction > margin:
        await asyncio.sleep(1 - fraction + 0.01)


def write_broker_config(
    scheme: devscheme.DevScheme, name: str, *, consent_log: str, rate: int = 50
) -> Path:
    """A copy of the generated broker.toml with its own consent log and rate limit."""
    lines = []
    for line in scheme.broker_config.read_text().splitlines():
        if line.startswith("consent_log ="):
            line = f'consent_log = "{consent_log}"'
        elif line.startswith("rate_limit_per_second ="):
            line = f"rate_limit_per_second = {rate}"
        lines.append(line)
    path = scheme.root / name
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class BrokerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    consent_log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # `axb serve` shuts down cleanly on SIGINT
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn_broker(config: Path, *, redis_url: str, log: Path, consent_log: Path) -> BrokerProcess:
    """``axb serve`` as its own process, on a socket bound here first and handed down."""
    with devscheme.bind_loopback() as listener, log.open("ab") as out:
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli",
                "serve",
                "--config",
                str(config),
                "--listen-fd",
                str(listener.fileno()),
                "--redis-url",
                redis_url,
            ],
            stdout=out,
            stderr=out,
            pass_fds=[listener.fileno()],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return BrokerProcess(f"http://127.0.0.1:{port}", process, log, consent_log)


async def wait_ready(broker: BrokerProcess, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if broker.process.poll() is not None:
                pytest.fail(f"broker exited with {broker.process.returncode}:\n{broker.output()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{broker.url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    pytest.fail(f"broker at {broker.url} never became ready:\n{broker.output()}")


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    """Database 14 of the shared Redis, empty before and after the test."""
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=2)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


# --- two broker processes, one Redis -------------------------------------------------------


@pytest.fixture
async def two_brokers(
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    shared_redis: redis.Redis,
    tmp_path: Path,
) -> AsyncIterator[tuple[BrokerProcess, BrokerProcess]]:
    """Two `axb serve` processes on one Redis (database 14), each with its own consent log.

    Each process keeps its own SQLite consent log: two processes must not share one file (see
    test_two_brokers_sharing_one_sqlite_consent_log_both_keep_answering).
    """
    brokers = []
    for n in (1, 2):
        config = write_broker_config(
            scheme, f"broker-{n}.toml", consent_log=f"log/consent-log-{n}.sqlite3"
        )
        brokers.append(
            spawn_broker(
                config,
                redis_url=SHARED_URL,
                log=tmp_path / f"broker-{n}.log",
                consent_log=scheme.root / "log" / f"consent-log-{n}.sqlite3",
            )
        )
    try:
        for broker in brokers:
            await wait_ready(broker)
        yield brokers[0], brokers[1]
    finally:
        for broker in brokers:
            broker.stop()


async def _answered_then_replayed(
    scheme: devscheme.DevScheme, first: BrokerProcess, second: BrokerProcess
) -> str:
    async with council_client(scheme, first.url) as client:
        token, jti = sign(client)
        answered = await post_token(client.session, first.url, token)
        assert answered.status == 200, answered.body
        assert answered.content_type == JWT
        answer = await client.verify_answer(answered.body, jti)  # signature, aud, binding
        assert answer.outcome == "yes"
        assert answer.query_jti == jti

        replayed = await post_token(client.session, second.url, token)
        assert replayed.status == 401
        assert replayed.content_type == PROBLEM
        assert replayed.problem()["type"] == PROBLEM_PREFIX + "invalid-token"
        assert "log_index" not in replayed.problem()
    return jti


async def test_a_query_replayed_to_a_second_broker_process_is_refused(
    scheme: devscheme.DevScheme,
    two_brokers: tuple[BrokerProcess, BrokerProcess],
    shared_redis: redis.Redis,
) -> None:
    one, two = two_brokers
    forward = await _answered_then_replayed(scheme, one, two)
    backward = await _answered_then_replayed(scheme, two, one)

    # The jtis are held in the shared Redis (database 14), until the query's exp + leeway.
    member = devscheme.COUNCIL_BLUE_BADGE
    for jti in (forward, backward):
        assert 120 < shared_redis.ttl(f"axb:{{{member}}}:jti:{jti}") <= 150

    # Each answered query is recorded once, by the broker that answered it; the replay is not.
    rows_one, rows_two = consent_rows(one.consent_log), consent_rows(two.consent_log)
    assert rows_one == {forward: "yes"}
    assert rows_two == {backward: "yes"}


async def test_two_broker_processes_share_one_rate_window(
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    shared_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    limit = 3
    brokers = [
        spawn_broker(
            write_broker_config(
                scheme, f"rate-{n}.toml", consent_log=f"log/rate-{n}.sqlite3", rate=limit
            ),
            redis_url=SHARED_URL,
            log=tmp_path / f"rate-{n}.log",
            consent_log=scheme.root / "log" / f"rate-{n}.sqlite3",
        )
        for n in (1, 2)
    ]
    try:
        for broker in brokers:
            await wait_ready(broker)
        async with council_client(scheme, brokers[0].url) as client:
            tokens = [sign(client)[0] for _ in range(10)]
            await start_of_second()
            replies = await asyncio.gather(
                *(
                    post_token(client.session, brokers[i % 2].url, token)
                    for i, token in enumerate(tokens)
                )
            )
        # Read the counters at once: each rate key lives 2 s after its last increment.
        counted = sum(
            int(shared_redis.get(key) or 0)
            for key in shared_redis.scan_iter(
                match=f"axb:{{{devscheme.COUNCIL_BLUE_BADGE}}}:rate:*"
            )
        )
    finally:
        for broker in brokers:
            broker.stop()
    statuses = sorted(reply.status for reply in replies)
    assert set(statuses) <= {200, 429}, statuses
    # One shared window: at most `limit` per second in all (the burst may straddle two seconds).
    # Two private windows would let through up to 2 * limit per second.
    assert limit <= statuses.count(200) <= 2 * limit, statuses
    assert counted == len(tokens)  # both processes counted into the same Redis keys


async def test_two_brokers_sharing_one_sqlite_consent_log_both_keep_answering(
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    shared_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    """Two `axb serve` processes started on the same broker.toml share its SQLite consent log.

    Each process reads MAX(log_index)+1 once at start and then numbers its own appends, so the
    second process to write collides on the primary key and every later check it runs fails
    with 503 log-unavailable until it is restarted. Either the log should refuse a second
    process at start (an exclusive lock) or number appends inside the write transaction.
    """
    brokers = [
        spawn_broker(
            scheme.broker_config,
            redis_url=SHARED_URL,
            log=tmp_path / f"same-log-{n}.log",
            consent_log=scheme.root / "log" / "consent-log.sqlite3",
        )
        for n in (1, 2)
    ]
    try:
        for broker in brokers:
            await wait_ready(broker)
        statuses = []
        async with council_client(scheme, brokers[0].url) as client:
            for broker in (*brokers, *brokers):
                reply = await post_token(client.session, broker.url, sign(client)[0])
                statuses.append(reply.status)
    finally:
        for broker in brokers:
            broker.stop()
    assert statuses == [200, 200, 200, 200]  # today: [200, 503, 200, 503]
    assert len(consent_rows(brokers[0].consent_log)) == 4


# --- Redis stopped: fail closed, then recover ---------------------------------------------


async def test_checks_fail_closed_while_redis_is_down_and_recover_when_it_returns(
    private_redis: PrivateRedis,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    scheme: devscheme.DevScheme,
) -> None:
    broker: RunningBroker = await start_broker(redis_url=private_redis.url)
    log_path = broker.settings.consent_log_path
    async with council_client(scheme, broker.url) as client:
        working = await client.check(
            BB, purpose=BB_PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
        assert working.outcome == "yes"
        before = consent_rows(log_path)
        assert before == {working.query_jti: "yes"}

        private_redis.kill()

        refused_jtis = []
        for identity in ("bb-yes-dla", "bb-no", "no-match", "bb-yes-pip-moving", "bb-yes-dla"):
            token, jti = sign(client, identity)
            started = time.monotonic()
            reply = await post_token(client.session, broker.url, token)
            assert reply.status == 503, reply.body
            assert reply.content_type == PROBLEM
            assert reply.problem()["type"] == PROBLEM_PREFIX + "store-unavailable"
            assert reply.problem()["status"] == 503
            assert time.monotonic() - started < 2.0  # fails fast, no retry storm
            refused_jtis.append(jti)

        # Admission runs before policy: nothing at all is recorded for the refused queries.
        assert consent_rows(log_path) == before
        async with client.session.get(f"{broker.url}/readyz") as response:
            assert response.status == 503
            readiness = await response.json()
        assert readiness["status"] == "not-ready"
        assert readiness["checks"]["admission_store"] is False

        private_redis.start()  # same port, empty data; the broker is not restarted

        recovered = await client.check(
            BB, purpose=BB_PURPOSE, subject=subject_of("bb-no"), assurance="P2"
        )
        assert recovered.outcome == "no"
        async with client.session.get(f"{broker.url}/readyz") as response:
            assert response.status == 200
    rows = consent_rows(log_path)
    assert rows == {working.query_jti: "yes", recovered.query_jti: "no"}
    assert not set(refused_jtis) & set(rows)


# --- rate limits, memory and Redis ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_member_over_its_rate_limit_gets_429_with_retry_after(
    backend: str,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    scheme: devscheme.DevScheme,
    shared_redis: redis.Redis,
) -> None:
    limit = 3
    broker: RunningBroker = await start_broker(
        rate_limit_per_second=limit, redis_url=SHARED_URL if backend == "redis" else None
    )
    assert (broker.settings.redis_url is not None) == (backend == "redis")
    async with council_client(scheme, broker.url) as client:
        signed = [sign(client, identity) for identity in ("bb-yes-dla", "bb-no") * 4]
        await start_of_second()
        replies = await asyncio.gather(
            *(post_token(client.session, broker.url, token) for token, _ in signed)
        )
        ok = [r for r in replies if r.status == 200]
        limited = [r for r in replies if r.status == 429]
        assert len(ok) + len(limited) == len(signed), [r.status for r in replies]
        # Whole-second windows: `limit` in the first second, and at most `limit` more if the
        # burst ran over into the next one.
        assert limit <= len(ok) <= 2 * limit
        assert len(limited) >= len(signed) - 2 * limit
        for reply in limited:
            assert reply.content_type == PROBLEM
            assert reply.headers["Retry-After"] == "1"
            problem = reply.problem()
            assert problem["type"] == PROBLEM_PREFIX + "rate-limited"
            assert problem["retry_after"] == 1

        # The window moves on: a fresh query a second later is answered.
        await asyncio.sleep(1.1)
        later = await client.check(
            BB, purpose=BB_PURPOSE, subject=subject_of("bb-no"), assurance="P2"
        )
        assert later.outcome == "no"
    answered = {jti for (_, jti), reply in zip(signed, replies, strict=True) if reply.status == 200}
    assert set(consent_rows(broker.settings.consent_log_path)) == answered | {later.query_jti}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_rate_limited_query_can_be_sent_again_after_retry_after(
    backend: str,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
    scheme: devscheme.DevScheme,
    shared_redis: redis.Redis,
) -> None:
    """429 says "Retry-After: 1", but admission records the jti before it counts the rate, so
    the same query sent again a second later is refused as a replay (401 invalid-token)."""
    broker: RunningBroker = await start_broker(
        rate_limit_per_second=1, redis_url=SHARED_URL if backend == "redis" else None
    )
    async with council_client(scheme, broker.url) as client:
        first, second = sign(client), sign(client, "bb-no")
        await start_of_second()
        assert (await post_token(client.session, broker.url, first[0])).status == 200
        limited = await post_token(client.session, broker.url, second[0])
        assert limited.status == 429
        await asyncio.sleep(float(limited.headers["Retry-After"]) + 0.1)
        retried = await post_token(client.session, broker.url, second[0])
        assert retried.status == 200, retried.body  # today: 401 invalid-token


# --- the Redis store itself ----------------------------------------------------------------


async def test_redis_admit_is_one_round_trip_of_one_transaction(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on both sides: the client writes once per admit, and the server executes exactly
    one script for it: EVALSHA running GET (the member's epoch), EXISTS, INCR, SET (and EXPIRE
    when a new one-second window opens), on a private server so nobody else's commands are
    counted."""
    store = RedisAdmissionStore(private_redis.url)
    server = private_redis.client()
    now = time.time()
    try:
        # The first call opens the pooled connection (handshake commands); measure after it.
        assert await store.admit("m", "warm-up", expires_at=int(now) + 60, now=now, limit=5) == "ok"

        writes: list[int] = []
        original = redis_connection.AbstractConnection.send_packed_command

        async def counting(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            writes.append(1)
            return await original(self, command, *args, **kwargs)

        monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", counting)
        for n in range(3):
            before = server.info("commandstats")
            outcome = await store.admit("m", f"jti-{n}", expires_at=int(now) + 60, now=now, limit=5)
            after = server.info("commandstats")
            assert outcome == "ok"
            assert len(writes) == n + 1  # one write per admit: one round trip
            delta = {
                name.removeprefix("cmdstat_"): stats["calls"] - before.get(name, {}).get("calls", 0)
                for name, stats in after.items()
                if name != "cmdstat_info"
            }
            delta = {name: calls for name, calls in delta.items() if calls}
            increments = delta.pop("incr", 0) + delta.pop("incrby", 0)
            assert increments == 1
            delta.pop("expire", None)  # only when this call opened the rate window
            assert delta == {"evalsha": 1, "get": 1, "exists": 1, "set": 1}
    finally:
        monkeypatch.undo()
        await store.close()
        server.close()


async def test_redis_admit_refuses_replays_limits_rate_and_expires_its_keys(
    private_redis: PrivateRedis,
) -> None:
    store = RedisAdmissionStore(private_redis.url, prefix="t")
    server = private_redis.client()
    now = float(int(time.time()))
    try:
        exp = int(now) + 100
        assert await store.admit("m", "a", expires_at=exp, now=now, limit=2) == "ok"
        # a replay is refused and does not spend the member's rate
        assert await store.admit("m", "a", expires_at=exp, now=now, limit=2) == "replayed"
        assert await store.admit("n", "a", expires_at=exp, now=now, limit=2) == "ok"
        assert await store.admit("m", "b", expires_at=exp, now=now, limit=2) == "ok"
        assert await store.admit("m", "c", expires_at=exp, now=now, limit=2) == "rate-limited"
        # refused for rate, "c" was not used up: it is admitted in the next window
        assert await store.admit("m", "c", expires_at=exp, now=now + 1, limit=2) == "ok"
        assert 95 <= server.ttl("t:{m}:jti:a") <= 100
        assert 0 < server.ttl(f"t:{{m}}:rate:{int(now)}") <= 2
    finally:
        await store.close()
        server.close()


async def test_redis_admit_with_no_server_raises_store_unavailable_quickly() -> None:
    with refusing_port() as port:
        store = RedisAdmissionStore(f"redis://127.0.0.1:{port}/0")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.admit(
                    "m", "x", expires_at=int(time.time()) + 60, now=time.time(), limit=5
                )
            assert time.monotonic() - started < 2.0
            assert await store.ready() is False
        finally:
            await store.close()
