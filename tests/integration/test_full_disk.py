"""The log's disk fills up: checks get 503 with no answer, and /readyz says not ready (so a load
balancer stops sending traffic) until the disk has room again. A real tmpfs, really full."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from broker.app_keys import STORES
from broker.scheme import dev as devscheme
from broker.stores.consent_log import (
    LogLocation,
    PostgresLocation,
    RecordFilter,
    SqliteLocation,
    open_consent_log,
)
from members.bulk import BulkJobs
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.bulk import strangers, submit_fsm
from tests.support.councils import blue_badge
from tests.support.logdb import LOG_BACKENDS, log_backend
from tests.support.servers import RunningBroker, StartBroker


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as handle, pytest.raises(OSError, match="No space") as full:  # noqa: PT012
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    assert full.value.errno == errno.ENOSPC
    return filler


async def ready(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/readyz") as response:
        return response.status, await response.json()


async def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


@pytest.fixture
async def broker_on_small_disk(
    small_disk: Path, start_broker: StartBroker, providers: object
) -> AsyncIterator[RunningBroker]:
    broker = await start_broker(consent_log=str(small_disk / "log.sqlite3"))
    yield broker
    with contextlib.suppress(Exception):
        await broker.stop()


async def test_a_full_disk_makes_checks_503_and_readiness_false_until_it_has_room(
    scheme: devscheme.DevScheme, broker_on_small_disk: RunningBroker, small_disk: Path
) -> None:
    broker = broker_on_small_disk
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as client:

        async def check() -> str:
            return await blue_badge(client)

        assert await check() == "yes"
        assert (await ready(broker.url))[0] == 200
        filler = fill(small_disk)
        for _ in range(3):
            with pytest.raises(CheckFailed) as refused:
                await check()
            assert refused.value.status == 503
            assert refused.value.problem["type"].endswith("log-unavailable")

        async def not_ready() -> bool:
            status, body = await ready(broker.url)
            return status == 503 and body["checks"]["consent_log"] is False

        await until(not_ready)
        filler.unlink()

        async def ready_again() -> bool:
            return (await ready(broker.url))[0] == 200

        await until(ready_again)
        assert await check() == "yes"


@pytest.mark.parametrize("backend", LOG_BACKENDS)
async def test_readiness_is_a_real_commit_on_each_backend(backend: str, tmp_path: Path) -> None:
    async with log_backend(backend) as overrides:
        location = log_location_of(overrides, tmp_path / "log.sqlite3")
        log = open_consent_log(location)
        await log.start()
        assert await log.ready()
        await log.close()
        assert not await log.ready()


def log_location_of(overrides: dict[str, object], sqlite_path: Path) -> LogLocation:
    if "consent_log" in overrides:
        return PostgresLocation(str(overrides["consent_log"]), str(overrides["consent_log_schema"]))
    return SqliteLocation(sqlite_path)


async def test_a_bulk_job_pauses_while_the_log_disk_is_full_and_resumes_with_exact_counts(
    scheme: devscheme.DevScheme, small_disk: Path, start_broker: StartBroker, providers: object
) -> None:
    broker = await start_broker(
        consent_log=str(small_disk / "log.sqlite3"),
        bulk={"chunk_items": 5, "lease_s": 0.5, "poll_s": 0.05},
    )
    rows = strangers(300)
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as client:
        jobs = BulkJobs(client)
        job = await submit_fsm(jobs, rows)

        async def under_way() -> bool:
            return bool((await jobs.status(job["id"]))["processed"] >= 40)

        await until(under_way)
        filler = fill(small_disk)
        await asyncio.sleep(1.5)  # chunks fail to commit: the job pauses, it does not end
        paused = await jobs.status(job["id"])
        assert paused["status"] == "running"
        assert paused["processed"] < len(rows)
        await asyncio.sleep(1.0)
        assert (await jobs.status(job["id"]))["processed"] == paused["processed"]
        with pytest.raises(CheckFailed) as unfinished:
            await jobs.results(job["id"])
        assert unfinished.value.status == 409
        # nothing answered without its record: every item counted done has one
        recorded = [
            r
            for r in await broker.app[STORES].consent_log.find(
                RecordFilter(requester=devscheme.COUNCIL_SCHOOLS), after=-1, limit=1000
            )
            if r.body is not None and orjson.loads(r.body)["query_jti"].startswith(job["id"])
        ]
        assert len(recorded) >= paused["records"]
        filler.unlink()
        ended = await jobs.wait(job["id"], poll_s=0.1)
        signed, body = await jobs.results(job["id"])
    assert ended["status"] == "completed"
    assert ended["processed"] == ended["records"] == signed.records == len(rows)
    assert len(body.splitlines()) == len(rows)
