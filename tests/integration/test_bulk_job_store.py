"""The bulk job store on both backends (SQLite file, PostgreSQL schema): leases, takeover,
reconciliation against the records already in the log, items counted once, terminal states,
retention by status and age."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest

from broker.stores.consent_log import (
    ConsentLog,
    PostgresLocation,
    SqliteLocation,
    open_consent_log,
)
from broker.stores.consent_log.jobs import JobStore, LeaseLost, open_job_store
from tests.support.logdb import LOG_BACKENDS
from tests.support.services import PG_ADMIN_DSN, pg_admin
from trust import bulk
from trust.messages import Subject
from trust.pseudonym import PseudonymKey
from trust.records import record_for

KEY = PseudonymKey("pk-test", b"k" * 32)
REQUESTER = "council-x"
SUBJECT = '{"family_name":"Testwell","date_of_birth":"2016-03-14"}'


@pytest.fixture(params=LOG_BACKENDS)
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[ConsentLog, JobStore]]:
    schema = f"axb_t_{secrets.token_hex(6)}"
    location = (
        SqliteLocation(tmp_path / "log.sqlite3")
        if request.param == "sqlite"
        else PostgresLocation(PG_ADMIN_DSN, schema)
    )
    log = open_consent_log(location)
    jobs = open_job_store(location)
    await log.start()
    await jobs.start()
    try:
        yield log, jobs
    finally:
        await jobs.close()
        await log.close()
        if request.param != "sqlite":
            await pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def queued_job(jobs: JobStore, *, items: int, now_ms: int = 1000) -> str:
    """A job of ``items`` rows, every second row repeating the subject before it."""
    job_id = secrets.token_hex(16)
    await jobs.create(
        job_id=job_id,
        requester=REQUESTER,
        manifest_jti=secrets.token_urlsafe(24),
        manifest={"check": "c", "purpose": "p", "as_of": "2026-12-01"},
        items=items,
        owner="intake",
        now_ms=now_ms,
        lease_until_ms=now_ms + 1000,
    )
    rows = [(n, f"r{n}", bytes([(n + 1) // 2]) * 16) for n in range(1, items + 1)]
    subjects = [(n, key, SUBJECT, None) for n, _, key in rows]
    await jobs.add_items(job_id, rows, subjects, lease_until_ms=now_ms + 1000)
    await jobs.queue(job_id, start_index=0, now_ms=now_ms)
    return job_id


def item_record(job_id: str, seq: int, outcome: str = "yes") -> object:
    manifest = bulk.BulkManifest(
        REQUESTER, "j" * 24, 0, 60, "c", "p", "public-task", date(2026, 12, 1), None, 1,
        bulk.digest_of(b""), "ndjson",
    )  # fmt: skip
    query = bulk.job_query(
        manifest,
        jti=bulk.item_jti(job_id, seq),
        subject=Subject({"family_name": "Testwell", "date_of_birth": "2016-03-14"}),
        consent=None,
    )
    return record_for(query, key=KEY, now_ms=1, outcome=outcome)  # type: ignore[arg-type]


async def test_duplicates_are_one_item_counted_for_each_row(
    stores: tuple[ConsentLog, JobStore],
) -> None:
    _, jobs = stores
    job_id = await queued_job(jobs, items=5)
    job = await jobs.get(job_id)
    assert job is not None
    assert (job.status, job.items, job.subjects) == ("queued", 5, 3)
    claimed = await jobs.claim("a", now_ms=2000, lease_ms=500)
    assert claimed is not None
    assert claimed.job_id == job_id
    pending = await jobs.pending(job_id, 10)
    assert [p.seq for p in pending] == [1, 3, 5]
    done = await jobs.complete(
        job_id, "a", [(1, "yes", 7), (3, "no", 9), (5, "yes", 8)], now_ms=2100, lease_until_ms=3000
    )
    assert done.counts["yes"] == 3
    assert done.counts["no"] == 2
    assert (done.done_rows, done.done_subjects, done.first_index, done.last_index) == (5, 3, 7, 9)
    again = await jobs.complete(job_id, "a", [(1, "no", 7)], now_ms=2200, lease_until_ms=3000)
    assert again.counts == done.counts  # an item is counted once, whoever reports it again
    results = await jobs.results(job_id, after=0, limit=10)
    assert [(r, ref, o) for r, ref, o in results] == [
        (1, "r1", "yes"), (2, "r2", "yes"), (3, "r3", "no"), (4, "r4", "no"), (5, "r5", "yes"),
    ]  # fmt: skip


async def test_a_dead_owners_job_is_taken_over_and_reconciled_with_the_log(
    stores: tuple[ConsentLog, JobStore],
) -> None:
    log, jobs = stores
    job_id = await queued_job(jobs, items=4)
    assert await jobs.claim("dead", now_ms=2000, lease_ms=500) is not None
    # the owner committed item 1's record, then died before marking it done
    appended = await log.append(item_record(job_id, 1, "no"))  # type: ignore[arg-type]
    assert await jobs.claim("other", now_ms=2400, lease_ms=500) is None  # lease still held
    taken = await jobs.claim("other", now_ms=2600, lease_ms=500)
    assert taken is not None
    assert taken.lease_owner == "other"
    assert await jobs.recorded(taken) == [(1, "no", appended.index)]
    with pytest.raises(LeaseLost):
        await jobs.complete(job_id, "dead", [(3, "yes", 5)], now_ms=2700, lease_until_ms=3000)
    marked = await jobs.complete(
        job_id, "other", await jobs.recorded(taken), now_ms=2700, lease_until_ms=3200
    )
    assert marked.done_rows == 2
    assert [p.seq for p in await jobs.pending(job_id, 10)] == [3]


async def test_two_processes_never_claim_one_job(stores: tuple[ConsentLog, JobStore]) -> None:
    _, jobs = stores
    job_id = await queued_job(jobs, items=2)
    claims = await asyncio.gather(
        *(jobs.claim(f"p{n}", now_ms=2000, lease_ms=10_000) for n in range(4))
    )
    assert [c.job_id for c in claims if c is not None] == [job_id]


async def test_cancel_ends_a_queued_job_at_once_and_keeps_its_terminal_state(
    stores: tuple[ConsentLog, JobStore],
) -> None:
    _, jobs = stores
    job_id = await queued_job(jobs, items=2)
    empty = bulk.ResultsDigests().digests()
    cancelled = await jobs.cancel(job_id, now_ms=3000, unstarted_sha256=empty)
    assert cancelled is not None
    assert cancelled.status == "cancelled"
    assert await jobs.claim("a", now_ms=4000, lease_ms=500) is None
    assert await jobs.pending(job_id, 10) == []  # its identifiers were deleted as it ended


async def test_retention_deletes_old_ended_results_only(
    stores: tuple[ConsentLog, JobStore],
) -> None:
    _, jobs = stores
    ended = await queued_job(jobs, items=2)
    running = await queued_job(jobs, items=2, now_ms=1001)
    assert await jobs.claim("a", now_ms=2000, lease_ms=10**9) is not None  # `ended`, oldest
    await jobs.finish(ended, "a", "completed", reason=None, sha256=None, now_ms=5000)
    assert await jobs.claim("a", now_ms=2000, lease_ms=10**9) is not None  # `running`
    assert await jobs.prune(finished_before_ms=5000) == 0  # not old enough
    assert await jobs.prune(finished_before_ms=10**12) == 1
    after = await jobs.get(ended)
    assert after is not None
    assert after.results_deleted
    assert after.status == "completed"
    assert await jobs.results(ended, after=0, limit=10) == []
    still = await jobs.get(running)
    assert still is not None
    assert not still.results_deleted
    assert len(await jobs.pending(running, 10)) == 1
