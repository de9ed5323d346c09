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
import pytest

from broker.scheme import dev as devscheme
from broker.stores.consent_log import (
    LogLocation,
    PostgresLocation,
    SqliteLocation,
    open_consent_log,
)
from members.council import EligibilityClient
from members.errors import CheckFailed
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
