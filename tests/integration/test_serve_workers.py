"""``axb serve --workers 2``: two broker processes on one socket under a supervisor, sharing
Redis and one consent log — PostgreSQL, or one SQLite file on the machine. Checks are answered
with one gap-free log sequence; a worker killed with SIGKILL is restarted while the other keeps
answering; SIGTERM stops both in order and the supervisor exits 0 within the shutdown bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.scheme import dev as devscheme
from members.council import EligibilityClient
from tests.support.councils import blue_badge
from tests.support.logdb import LOG_BACKENDS, log_backend
from tests.support.processes import start_workers, tail, until_answers, workers_config
from tests.support.servers import RunningProvider
from tests.support.services import REDIS_URL

pytestmark = [pytest.mark.redis]


def workers_of(supervisor: subprocess.Popen[bytes]) -> set[int]:
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    return {int(pid) for pid in children.read_text().split()}


async def workers_in_readyz(url: str) -> dict[str, int]:
    """What a worker's /readyz says of the workers (a fresh connection: any worker answers);
    waits 50 ms after asking, so that 20 asks span a second."""
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        assert response.status == 200  # a worker down leaves the port served: still ready
        workers: dict[str, int] = (await response.json())["workers"]
    await asyncio.sleep(0.05)
    return workers


async def scrape(url: str) -> str:
    """One scrape on a fresh connection (any worker may answer it)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` on a metrics page, by its labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


async def every_scrape_counts_all_workers(url: str, answered: int, pids: set[int]) -> None:
    """Whichever worker answers a scrape, it counts every worker's checks (a dead worker's
    too) and shows each live worker's gauges, by pid."""
    for _ in range(6):
        text = await scrape(url)
        assert samples(text, "axb_checks_total")[frozenset({("result", "answered")})] == answered
        info = samples(text, "axb_worker_info")
        assert {int(dict(labels)["pid"]) for labels in info} == pids
        memory = samples(text, "process_resident_memory_bytes")
        assert {int(dict(labels)["pid"]) for labels in memory} == pids
        assert all(value > 10_000_000 for value in memory.values())
        assert samples(text, "axb_log_records")[frozenset()] >= answered


@dataclass(frozen=True)
class SharedLog:
    config: Path
    dsn: str | None  # None: the scheme's SQLite file
    schema: str | None
    sqlite_path: Path

    async def indices_and_latest_checkpoint(self) -> tuple[set[int], int | None]:
        if self.dsn is None:
            with sqlite3.connect(self.sqlite_path) as db:
                indices = {row[0] for row in db.execute("SELECT log_index FROM records")}
                (latest,) = db.execute("SELECT MAX(size) FROM checkpoints").fetchone()
            return indices, latest
        db = await asyncpg.connect(self.dsn, server_settings={"search_path": str(self.schema)})
        try:
            indices = {row[0] for row in await db.fetch("SELECT log_index FROM records")}
            return indices, await db.fetchval("SELECT MAX(size) FROM checkpoints")
        finally:
            await db.close()


@pytest.fixture(params=LOG_BACKENDS)
async def shared_log_config(
    scheme: devscheme.DevScheme, request: pytest.FixtureRequest
) -> AsyncIterator[SharedLog]:
    """The scheme's broker config on a log the workers share: a PostgreSQL schema of the
    test's own, or the scheme's SQLite file."""
    sqlite_path = scheme.root / "log" / "consent-log.sqlite3"
    if request.param == "sqlite":
        yield SharedLog(workers_config(scheme.broker_config, None, None), None, None, sqlite_path)
        return
    async with log_backend("postgres") as overrides:
        dsn, schema = str(overrides["consent_log"]), str(overrides["consent_log_schema"])
        config = workers_config(scheme.broker_config, dsn, schema)
        yield SharedLog(config, dsn, schema, sqlite_path)


async def test_two_workers_share_one_gap_free_log_a_killed_worker_is_restarted_and_sigterm_exits_0(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    shared_log_config: SharedLog,
    tmp_path: Path,
) -> None:
    config = shared_log_config.config
    log = tmp_path / "supervisor.log"
    supervisor = start_workers(config, listeners.broker.fileno(), log, REDIS_URL)
    listeners.broker.close()
    try:
        await until_answers(scheme.broker_url + "/readyz", supervisor, log)
        for _ in range(100):  # both workers up and ready
            if len(workers_of(supervisor)) == 2:
                break
            await asyncio.sleep(0.1)
        first = workers_of(supervisor)
        assert len(first) == 2, tail(log)
        council = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        async with EligibilityClient.from_config(council) as client:
            outcomes = await asyncio.gather(*(blue_badge(client) for _ in range(16)))
            assert outcomes == ["yes"] * 16
        assert (await workers_in_readyz(scheme.broker_url))["alive"] == 2
        await asyncio.sleep(1.2)  # each worker writes its gauges every second
        await every_scrape_counts_all_workers(scheme.broker_url, 16, first)
        killed = sorted(first)[0]
        os.kill(killed, signal.SIGKILL)  # its open connections die with it, as any crash's
        seen = [await workers_in_readyz(scheme.broker_url) for _ in range(20)]  # over ~1 s
        assert {"expected": 2, "alive": 1, "restarts": 0} in seen, seen  # /readyz reflects it
        async with EligibilityClient.from_config(council) as client:
            # the other worker answers while the supervisor restarts the dead one
            assert await asyncio.gather(*(blue_badge(client) for _ in range(8))) == ["yes"] * 8
            for _ in range(100):
                now = workers_of(supervisor)
                if len(now) == 2 and killed not in now:
                    break
                await asyncio.sleep(0.1)
            assert killed not in now
            assert len(now) == 2, tail(log)
            await until_answers(scheme.broker_url + "/readyz", supervisor, log)
            assert await workers_in_readyz(scheme.broker_url) == {
                "expected": 2,
                "alive": 2,
                "restarts": 1,
            }
            assert await asyncio.gather(*(blue_badge(client) for _ in range(8))) == ["yes"] * 8
        await asyncio.sleep(1.2)
        # the dead worker's answers still count; its gauges are gone, its successor's there
        await every_scrape_counts_all_workers(scheme.broker_url, 32, now)
        checked = await asyncio.to_thread(
            subprocess.run,
            ["promtool", "check", "metrics"],
            input=await scrape(scheme.broker_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(supervisor.wait, 15)
        took = time.monotonic() - started
        assert code == 0, tail(log)
        assert took < 8, f"the supervisor took {took:.1f} s to stop"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    indices, latest = await shared_log_config.indices_and_latest_checkpoint()
    assert indices == set(range(32)), "one log sequence across the workers, without a gap"
    assert latest == 32, "the final checkpoint covers every record"
