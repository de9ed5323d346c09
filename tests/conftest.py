"""Shared fixtures: a development scheme on disk, reference providers and a broker on loopback.

Integration tests run real HTTP servers bound to 127.0.0.1 with real keys and a real SQLite
consent log; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis
from aiohttp import web

from broker.app import create_app
from broker.scheme import dev as devscheme
from broker.settings import Settings, load_settings
from broker.stores.consent_log import Appended, PostgresLocation
from connectors.reference.providers import (
    ProviderService,
    build_reference_provider,
    build_ves_stub,
)
from members.council import EligibilityClient
from trust.keys import SigningKey

REDIS_URL = os.environ.get("AXB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_DSN = os.environ.get("AXB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database of the test's own (its consent log in schema 'axb'), dropped after."""
    name = f"axb_test_{secrets.token_hex(6)}"
    await pg_admin(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# To run a module's brokers on each consent-log backend, override ``consent_log_overrides``
# there to return ``each_log_backend``.
LOG_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def log_backend(name: str) -> AsyncIterator[dict[str, object]]:
    """Broker settings for a consent log on ``name``: ``sqlite`` keeps the scheme's file;
    ``postgres`` gets a schema of its own in the test database, dropped afterwards."""
    if name == "sqlite":
        yield {}
        return
    schema = f"axb_t_{secrets.token_hex(6)}"
    try:
        yield {"consent_log": PG_ADMIN_DSN, "consent_log_schema": schema}
    finally:
        await pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=LOG_BACKENDS)
async def each_log_backend(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, object]]:
    async with log_backend(request.param) as overrides:
        yield overrides


def config_for_log(scheme: devscheme.DevScheme, settings: Settings) -> Path:
    """The scheme's broker config, pointed at the consent log ``settings`` use (for ``axb``
    commands run against a test broker's log)."""
    text = scheme.broker_config.read_text()
    line = 'consent_log = "log/consent-log.sqlite3"\n'
    assert line in text
    if isinstance(settings.consent_log, PostgresLocation):
        text = text.replace(
            line,
            f'consent_log = "{settings.consent_log.dsn}"\n'
            f'consent_log_schema = "{settings.consent_log.schema}"\n',
        )
    path = scheme.root / "broker-this-log.toml"
    path.write_text(text)
    return path


async def log_sql(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement on a test broker's consent-log database, on either backend, as the
    operator could behind the broker's back (``?`` placeholders); returns its rows."""
    if isinstance(settings.consent_log, PostgresLocation):
        numbered = iter(range(1, len(params) + 1))
        db = await asyncpg.connect(
            settings.consent_log.dsn, server_settings={"search_path": settings.consent_log.schema}
        )
        try:
            rows = await db.fetch(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *params)
        finally:
            await db.close()
        return [tuple(row) for row in rows]
    with contextlib.closing(sqlite3.connect(settings.consent_log_path)) as lite:
        rows = lite.execute(sql, params).fetchall()
        lite.commit()
    return rows


async def edit_record(settings: Settings, index: int, **changes: object) -> None:
    """The operator edits a committed record's body in the database, on either backend."""
    [(body,)] = await log_sql(settings, "SELECT body FROM records WHERE log_index = ?", index)
    edited = orjson.dumps({**orjson.loads(body), **changes}, option=orjson.OPT_SORT_KEYS)
    await log_sql(settings, "UPDATE records SET body = ? WHERE log_index = ?", edited, index)


@pytest.fixture
def consent_log_overrides() -> dict[str, object]:
    """The settings that choose a test broker's consent log: by default the scheme's SQLite
    file."""
    return {}


@pytest.fixture
def scheme(tmp_path: Path) -> devscheme.DevScheme:
    return devscheme.generate(tmp_path / "scheme")


@dataclass
class RunningBroker:
    url: str
    settings: Settings
    app: web.Application
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


@dataclass
class RunningProvider:
    service: ProviderService
    runner: web.AppRunner | None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def providers(scheme: devscheme.DevScheme) -> AsyncIterator[dict[str, RunningProvider]]:
    stub_app, stub_host, stub_port = build_ves_stub(
        scheme.root / "stubs" / f"{devscheme.VES_STUB}.toml"
    )
    stub = await start_app(stub_app, stub_host, stub_port)
    running = {}
    for pid in scheme.provider_ports:
        service = build_reference_provider(scheme.provider_config(pid))
        running[pid] = RunningProvider(
            service, await start_app(service.app, service.host, service.port)
        )
    yield running
    for provider in running.values():
        await provider.stop()
    await stub.cleanup()


@pytest.fixture
async def start_broker(
    scheme: devscheme.DevScheme, consent_log_overrides: dict[str, object]
) -> AsyncIterator[Callable[..., object]]:
    started: list[RunningBroker] = []

    async def start(
        *, public_checkpoint_every_seconds: float = 0.0, **overrides: object
    ) -> RunningBroker:
        """A broker on the scheme's config with ``overrides``. Unlike the default (one fresh
        checkpoint a second), GET /v1/log/checkpoint here always covers every record, so
        tests can prove what they just did."""
        settings = load_settings(scheme.broker_config, **{**consent_log_overrides, **overrides})
        settings = dataclasses.replace(
            settings, public_checkpoint_every_seconds=public_checkpoint_every_seconds
        )
        app = create_app(settings)
        runner = await start_app(app, settings.host, settings.port)
        broker = RunningBroker(f"http://{settings.host}:{settings.port}", settings, app, runner)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        await broker.runner.cleanup()


@pytest.fixture
async def broker(start_broker: Callable[..., object], providers: object) -> RunningBroker:
    running = await start_broker()  # type: ignore[misc]
    assert isinstance(running, RunningBroker)
    return running


@pytest.fixture
def council_key(scheme: devscheme.DevScheme) -> Callable[[str], SigningKey]:
    return lambda member: SigningKey.from_pem(scheme.key_path(member).read_bytes())


@pytest.fixture
async def blue_badge_client(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[EligibilityClient]:
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as client:
        yield client


@pytest.fixture
async def schools_client(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[EligibilityClient]:
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        yield client


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def gather_indices(
    *appends: Awaitable[Appended], return_exceptions: bool = False
) -> list[Any]:
    """Run consent-log appends together: each one's log index (or, with
    ``return_exceptions``, its error)."""
    results = await asyncio.gather(*appends, return_exceptions=return_exceptions)
    return [r.index if isinstance(r, Appended) else r for r in results]


async def run_axb(*args: str) -> tuple[int, str, str]:
    """``axb ARGS`` as a separate process (its exit status, stdout, stderr), without blocking
    the event loop the test's broker runs on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class PrivateRedis:
    """A throwaway ``redis-server`` on its own port, which tests may kill and restart."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        config: str = "",
        args: Sequence[str] = (),
    ) -> None:
        """``config`` (redis.conf text) and ``args`` set a mode: Cluster, replica, Sentinel."""
        self.port = port or devscheme.free_port()
        self.workdir = workdir
        self.config = config
        self.args = tuple(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "redis.conf"
        config.write_text(self.config)
        with (self.workdir / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(
                [
                    shutil.which("redis-server") or "redis-server",
                    str(config),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                    *self.args,
                ],
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis.RedisError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                    )
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


async def blue_badge_answer_token(client: EligibilityClient, who: str) -> str:
    """A Blue Badge check for the test identity ``who``; the answer token, as a council keeps
    it (verified on the way in)."""
    from connectors.reference.population import subject_of

    query, jti = client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of(who),
        assurance="P2",
    )
    _, token = await client.exchange(query, jti)
    return token
