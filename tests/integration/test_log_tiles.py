"""The log's tree lives in C2SP tiles beside the records, on both backends: a broker restarted
goes on from its tiles, an independent Go mirror reads them and every proof the broker serves
is the one the tiles give; a changed tile is rebuilt from the records, and records the broker
reads at start (past its last full tile, or all of them when no tiles are kept) that do not make
the latest signed checkpoint stop it. A record changed under an intact tile is found by the
auditor's export check, which reads every record (test_audit_console)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from broker.app_keys import TRANSPARENCY
from broker.errors import LogGap
from tests.support.go import go_check
from tests.support.logdb import log_sql
from tests.support.servers import RunningBroker, StartBroker
from trust.records import WithdrawalRecord, leaf_input


@pytest.fixture
def consent_log_overrides(each_log_backend: dict[str, object]) -> dict[str, object]:
    return each_log_backend  # every broker here runs on SQLite, then on PostgreSQL


async def append(broker: RunningBroker, first: int, count: int) -> None:
    """``count`` records straight into the broker's log (no check needed to fill a tree)."""
    log = broker.app[TRANSPARENCY]
    await asyncio.gather(
        *(
            log.append(
                WithdrawalRecord(
                    recorded_at_ms=1_800_000_000_000 + n,
                    requester="council-a",
                    consent_id=f"c-{n}",
                    withdrawn_at="2026-11-27T09:00:00+00:00",
                    request_jti=f"wjti-{n:030d}",
                )
            )
            for n in range(first, first + count)
        )
    )


async def tiles_kept(broker: RunningBroker) -> list[tuple[int, int]]:
    rows = await log_sql(broker.settings, "SELECT level, idx FROM log_tiles ORDER BY level, idx")
    return [(int(level), int(index)) for level, index in rows]


async def get(broker: RunningBroker, path: str) -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(broker.url + path) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


async def test_a_restarted_broker_goes_on_from_its_tiles_and_go_mirrors_them(
    start_broker: StartBroker,
) -> None:
    first = await start_broker()
    await append(first, 0, 700)
    _, older = await first.app[TRANSPARENCY].checkpoint()
    assert await tiles_kept(first) == [(0, 0), (0, 1)]
    await first.stop()

    second = await start_broker()
    assert second.app[TRANSPARENCY].size == 700
    await append(second, 700, 600)  # past three more tile boundaries
    size, latest = await second.app[TRANSPARENCY].checkpoint()
    assert size == 1_300
    assert await tiles_kept(second) == [(0, i) for i in range(5)]

    _, vkey, _ = await get(second, "/v1/log/key")
    result = await asyncio.to_thread(  # the broker answers the mirror on this loop
        go_check,
        "tilecheck",
        {
            "url": second.url,
            "vkey": vkey.decode().strip(),
            "checkpoint": latest,
            "older": [older],
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok inclusion 1300 of 1300" in result.stdout
    assert "ok consistency 1299 of 1299" in result.stdout
    assert "ok signed 700->1300" in result.stdout
    assert "FAIL" not in result.stdout


async def test_tiles_are_served_read_only_as_c2sp_says(start_broker: StartBroker) -> None:
    broker = await start_broker()
    await append(broker, 0, 300)
    await broker.app[TRANSPARENCY].checkpoint()
    status, full, headers = await get(broker, "/v1/log/tile/0/000")
    assert (status, len(full)) == (200, 256 * 32)
    assert headers["Content-Type"] == "application/octet-stream"
    assert "immutable" in headers["Cache-Control"]
    status, partial, _ = await get(broker, "/v1/log/tile/0/001.p/44")
    assert (status, len(partial)) == (200, 44 * 32)
    status, prefix, _ = await get(broker, "/v1/log/tile/0/000.p/10")
    assert (status, prefix) == (200, full[: 10 * 32])  # a partial tile never changes
    status, bundle, _ = await get(broker, "/v1/log/tile/entries/001.p/44")
    assert status == 200
    assert len(bundle) == 44 * (2 + len(leaf_input(bytes(32))))
    for path, want in [
        ("/v1/log/tile/0/001.p/45", 404),  # the tree does not have it yet
        ("/v1/log/tile/0/002", 404),
        ("/v1/log/tile/1/000.p/2", 404),
        ("/v1/log/tile/entries/001", 404),
        ("/v1/log/tile/0/1", 400),
        ("/v1/log/tile/0/001.p/256", 400),
        ("/v1/log/tile/9/000", 400),
        ("/v1/log/tile/entries/x000/001", 400),
    ]:
        status, _, headers = await get(broker, path)
        assert status == want, path
        assert headers["Content-Type"] == "application/problem+json", path


async def test_a_record_changed_behind_the_broker_stops_it_and_a_changed_tile_is_rebuilt(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker()
    await append(broker, 0, 600)
    await broker.app[TRANSPARENCY].checkpoint()
    await broker.stop()
    settings = broker.settings
    digests = dict(await log_sql(settings, "SELECT log_index, digest FROM records"))
    [(tile,)] = await log_sql(settings, "SELECT hashes FROM log_tiles WHERE idx = 0")

    async def swap(index: int, digest: bytes) -> None:
        await log_sql(settings, "UPDATE records SET digest = ? WHERE log_index = ?", digest, index)

    # A record past the last full tile swapped: the broker re-reads those at start, and the
    # tree they make is not the one signed. No tile is left built from the changed record.
    await swap(550, bytes(32))
    with pytest.raises(LogGap, match="latest signed checkpoint"):
        await start_broker()
    assert await tiles_kept(broker) == []

    # With no tiles to go on (a log from before tiles, or just dropped) every record is read
    # again, so a record inside the first tile swapped stops it too.
    await swap(550, digests[550])
    await swap(3, bytes(32))
    with pytest.raises(LogGap, match="latest signed checkpoint"):
        await start_broker()
    assert await tiles_kept(broker) == []

    # The records mended: the broker starts, its tiles written afresh from the records.
    await swap(3, digests[3])
    restarted = await start_broker()
    assert await tiles_kept(restarted) == [(0, 0), (0, 1)]
    await restarted.stop()

    # A tile changed (the records intact): the tiles are rebuilt, the broker starts.
    await log_sql(settings, "UPDATE log_tiles SET hashes = ? WHERE idx = 0", bytes(256 * 32))
    again = await start_broker()
    assert await log_sql(settings, "SELECT hashes FROM log_tiles WHERE idx = 0") == [(tile,)]
    status, served, _ = await get(again, "/v1/log/tile/0/000")
    assert (status, served) == (200, bytes(tile))
