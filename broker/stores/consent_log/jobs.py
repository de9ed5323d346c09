"""Durable bulk jobs, in the consent log's own database (SQLite or PostgreSQL).

Four tables beside the records: ``bulk_jobs`` (one row a job: its manifest's claims, status,
counts per outcome, the lease of the process running it), ``bulk_rows`` (row number, the
council's reference, which subject), ``bulk_subjects`` (each distinct subject once, with its
outcome and the log index of its consent record once checked) and ``bulk_notices`` (the
signed end-of-job notice a council asked for: written in the same transaction that ends the
job, so none is lost, then ``pending`` until delivered or abandoned, under a lease so that one
process posts it at a time).

Exactly once, across crashes: an item's consent record carries ``query_jti`` = job id ``.``
item number. A process that takes a job over (its lease expired: the owner died or stalled)
first *reconciles*: every record of the job already in the log marks its item done, so no item
is checked twice and none is lost. The subjects' identifiers are kept only while the job runs:
a terminal job keeps references and outcomes (deleted in turn after the retention period, by
status and age); its consent records stay in the log.

The logic is written once, against a small transaction interface that each backend provides.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson

from broker.errors import BrokerError, LogUnavailable
from broker.stores.consent_log.location import LogLocation, PostgresLocation, SqliteLocation
from broker.stores.consent_log.postgres import close_pool, create_tables

T = TypeVar("T")

OUTCOME_COLUMNS = {
    "yes": "n_yes",
    "no": "n_no",
    "no-match": "n_no_match",
    "undetermined": "n_undetermined",
    "refused": "n_refused",
}
_JOB_COLUMNS = (
    "job_id, requester, manifest_jti, manifest, status, reason, items, subjects, done_rows, "
    "done_subjects, n_yes, n_no, n_no_match, n_undetermined, n_refused, first_index, "
    "last_index, start_index, created_ms, updated_ms, finished_ms, lease_owner, lease_until_ms, "
    "cancel_requested, failures, sha_ndjson, sha_csv, results_deleted"
)


def schema(*, integer: str, binary: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS bulk_jobs (
    job_id           TEXT PRIMARY KEY,
    requester        TEXT NOT NULL,
    manifest_jti     TEXT NOT NULL,
    manifest         TEXT NOT NULL,
    status           TEXT NOT NULL,
    reason           TEXT,
    items            {integer} NOT NULL,
    subjects         {integer} NOT NULL DEFAULT 0,
    done_rows        {integer} NOT NULL DEFAULT 0,
    done_subjects    {integer} NOT NULL DEFAULT 0,
    n_yes            {integer} NOT NULL DEFAULT 0,
    n_no             {integer} NOT NULL DEFAULT 0,
    n_no_match       {integer} NOT NULL DEFAULT 0,
    n_undetermined   {integer} NOT NULL DEFAULT 0,
    n_refused        {integer} NOT NULL DEFAULT 0,
    first_index      {integer},
    last_index       {integer},
    start_index      {integer} NOT NULL DEFAULT 0,
    created_ms       {integer} NOT NULL,
    updated_ms       {integer} NOT NULL,
    finished_ms      {integer},
    lease_owner      TEXT,
    lease_until_ms   {integer},
    cancel_requested {integer} NOT NULL DEFAULT 0,
    failures         {integer} NOT NULL DEFAULT 0,
    sha_ndjson       TEXT,
    sha_csv          TEXT,
    results_deleted  {integer} NOT NULL DEFAULT 0,
    UNIQUE (requester, manifest_jti)
);
CREATE INDEX IF NOT EXISTS bulk_jobs_status ON bulk_jobs (status, created_ms);
CREATE TABLE IF NOT EXISTS bulk_rows (
    job_id      TEXT NOT NULL,
    row_no      {integer} NOT NULL,
    ref         TEXT NOT NULL,
    subject_key {binary} NOT NULL,
    PRIMARY KEY (job_id, row_no)
);
CREATE INDEX IF NOT EXISTS bulk_rows_subject ON bulk_rows (job_id, subject_key);
CREATE TABLE IF NOT EXISTS bulk_subjects (
    job_id      TEXT NOT NULL,
    seq         {integer} NOT NULL,
    subject_key {binary} NOT NULL,
    subject     TEXT,
    consent     TEXT,
    row_count   {integer} NOT NULL DEFAULT 0,
    outcome     TEXT,
    log_index   {integer},
    PRIMARY KEY (job_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS bulk_subjects_key ON bulk_subjects (job_id, subject_key);
CREATE TABLE IF NOT EXISTS bulk_notices (
    job_id         TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    attempts       {integer} NOT NULL DEFAULT 0,
    next_at_ms     {integer} NOT NULL,
    last_error     TEXT,
    delivered_ms   {integer},
    lease_owner    TEXT,
    lease_until_ms {integer}
);
CREATE INDEX IF NOT EXISTS bulk_notices_due ON bulk_notices (state, next_at_ms);
"""


class JobStoreError(BrokerError):
    """The job store refused an operation (a replayed manifest, a lease another holds)."""


class ManifestReused(JobStoreError):
    """A job with this manifest's ``jti`` exists already."""


class LeaseLost(JobStoreError):
    """Another process holds the job's lease now: this one must stop working on it."""


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored (no personal data: the manifest's claims hold none)."""

    job_id: str
    requester: str
    manifest_jti: str
    manifest: dict[str, Any]
    status: str
    reason: str | None
    items: int
    subjects: int
    done_rows: int
    done_subjects: int
    counts: dict[str, int]
    first_index: int | None
    last_index: int | None
    start_index: int
    created_ms: int
    updated_ms: int
    finished_ms: int | None
    lease_owner: str | None
    lease_until_ms: int | None
    cancel_requested: bool
    failures: int
    sha256: dict[str, str] | None
    results_deleted: bool


def _job(row: Sequence[Any]) -> Job:
    (job_id, requester, mjti, manifest, status, reason, items, subjects, done_rows) = row[:9]
    (done_subjects, yes, no, no_match, undetermined, refused, first, last, start) = row[9:18]
    (created, updated, finished, owner, until, cancel, failures, sha_n, sha_c, deleted) = row[18:]
    return Job(
        job_id=job_id,
        requester=requester,
        manifest_jti=mjti,
        manifest=orjson.loads(manifest),
        status=status,
        reason=reason,
        items=items,
        subjects=subjects,
        done_rows=done_rows,
        done_subjects=done_subjects,
        counts={
            "yes": yes,
            "no": no,
            "no-match": no_match,
            "undetermined": undetermined,
            "refused": refused,
        },
        first_index=first,
        last_index=last,
        start_index=start,
        created_ms=created,
        updated_ms=updated,
        finished_ms=finished,
        lease_owner=owner,
        lease_until_ms=until,
        cancel_requested=bool(cancel),
        failures=failures,
        sha256=None if sha_n is None else {"ndjson": sha_n, "csv": sha_c},
        results_deleted=bool(deleted),
    )


@dataclass(frozen=True, slots=True)
class Notice:
    """A job's end-of-job notice: attempts so far, ``pending``, ``delivered`` or ``gave-up``,
    and the last attempt's error (a status or exception name: never a response body)."""

    job: Job
    attempts: int
    state: str
    last_error: str | None


@dataclass(frozen=True, slots=True)
class PendingItem:
    """A distinct subject still to check (personal data: never logged)."""

    seq: int
    subject: dict[str, str]
    consent: dict[str, str] | None

    def __repr__(self) -> str:
        return f"PendingItem(seq={self.seq})"


class Tx(abc.ABC):
    """The few statements the logic needs, inside one transaction (``?`` placeholders)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> None: ...

    @abc.abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class JobStore(abc.ABC):
    """Jobs and their items; see the module doc. Every method is one transaction."""

    # PostgreSQL locks the job row a transaction reads and then updates; a claim skips jobs
    # another process is claiming. SQLite's writes are serialised by BEGIN IMMEDIATE anyway.
    for_update = ""
    skip_locked = ""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...

    @abc.abstractmethod
    async def read(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        """A read outside any write transaction (status and results must not wait on one)."""

    async def _one(self, tx: Tx, job_id: str) -> Job | None:
        rows = await tx.fetch(
            f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE job_id = ?{self.for_update}",  # noqa: S608
            job_id,
        )
        return _job(rows[0]) if rows else None

    async def get(self, job_id: str) -> Job | None:
        rows = await self.read(
            f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE job_id = ?",  # noqa: S608
            job_id,
        )
        return _job(rows[0]) if rows else None

    async def create(
        self,
        *,
        job_id: str,
        requester: str,
        manifest_jti: str,
        manifest: dict[str, Any],
        items: int,
        owner: str,
        now_ms: int,
        lease_until_ms: int,
    ) -> None:
        """A job in ``receiving``: its rows are being read, held by the intake's lease."""
        async with self.transaction() as tx:
            taken = await tx.fetch(
                "SELECT 1 FROM bulk_jobs WHERE requester = ? AND manifest_jti = ?",
                requester,
                manifest_jti,
            )
            if taken:
                raise ManifestReused("a job with this manifest exists")
            await tx.execute(
                "INSERT INTO bulk_jobs (job_id, requester, manifest_jti, manifest, status, items, "
                "created_ms, updated_ms, lease_owner, lease_until_ms) "
                "VALUES (?, ?, ?, ?, 'receiving', ?, ?, ?, ?, ?)",
                job_id,
                requester,
                manifest_jti,
                orjson.dumps(manifest).decode(),
                items,
                now_ms,
                now_ms,
                owner,
                lease_until_ms,
            )

    async def add_items(
        self,
        job_id: str,
        rows: Sequence[tuple[int, str, bytes]],
        subjects: Sequence[tuple[int, bytes, str, str | None]],
        *,
        lease_until_ms: int,
    ) -> None:
        """Rows ``(row_no, ref, subject_key)`` and subjects ``(seq, key, subject, consent)``;
        a subject already held (a duplicate) is kept once, under its first row's number."""
        async with self.transaction() as tx:
            await tx.executemany(
                "INSERT INTO bulk_rows (job_id, row_no, ref, subject_key) VALUES (?, ?, ?, ?)",
                [(job_id, *row) for row in rows],
            )
            await tx.executemany(
                "INSERT INTO bulk_subjects (job_id, seq, subject_key, subject, consent) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(job_id, *subject) for subject in subjects],
            )
            await tx.execute(
                "UPDATE bulk_jobs SET lease_until_ms = ? WHERE job_id = ?", lease_until_ms, job_id
            )

    async def queue(self, job_id: str, *, start_index: int, now_ms: int) -> Job:
        """Every row read and the file verified: count each subject's rows, queue the job."""
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE bulk_subjects SET row_count = (SELECT COUNT(*) FROM bulk_rows r "
                "WHERE r.job_id = bulk_subjects.job_id "
                "AND r.subject_key = bulk_subjects.subject_key) "
                "WHERE job_id = ?",
                job_id,
            )
            (subjects,) = (
                await tx.fetch("SELECT COUNT(*) FROM bulk_subjects WHERE job_id = ?", job_id)
            )[0]
            await tx.execute(
                "UPDATE bulk_jobs SET status = 'queued', subjects = ?, start_index = ?, "
                "updated_ms = ?, lease_owner = NULL, lease_until_ms = NULL WHERE job_id = ?",
                subjects,
                start_index,
                now_ms,
                job_id,
            )
            job = await self._one(tx, job_id)
        assert job is not None
        return job

    async def discard(self, job_id: str) -> None:
        """Forget a job whose items were refused (nothing of it was started)."""
        async with self.transaction() as tx:
            await self._delete_items(tx, job_id)
            await tx.execute("DELETE FROM bulk_jobs WHERE job_id = ?", job_id)

    @staticmethod
    async def _delete_items(tx: Tx, job_id: str) -> None:
        await tx.execute("DELETE FROM bulk_rows WHERE job_id = ?", job_id)
        await tx.execute("DELETE FROM bulk_subjects WHERE job_id = ?", job_id)

    async def claim(self, owner: str, *, now_ms: int, lease_ms: int) -> Job | None:
        """Take the oldest job that is queued, or running under a lease that has expired
        (its owner died or stalled), and hold it for ``lease_ms``."""
        async with self.transaction() as tx:
            found = await tx.fetch(
                "SELECT job_id FROM bulk_jobs WHERE status IN ('queued', 'running') "  # noqa: S608
                "AND (lease_until_ms IS NULL OR lease_until_ms < ?) "
                f"ORDER BY created_ms LIMIT 1{self.skip_locked}",
                now_ms,
            )
            if not found:
                return None
            (job_id,) = found[0]
            await tx.execute(
                "UPDATE bulk_jobs SET status = 'running', lease_owner = ?, lease_until_ms = ?, "
                "updated_ms = ? WHERE job_id = ?",
                owner,
                now_ms + lease_ms,
                now_ms,
                job_id,
            )
            return await self._one(tx, job_id)

    async def sweep_receiving(self, *, now_ms: int) -> int:
        """Forget jobs whose intake died (a receiving job whose lease expired): never started,
        never acknowledged."""
        async with self.transaction() as tx:
            stale = await tx.fetch(
                "SELECT job_id FROM bulk_jobs WHERE status = 'receiving' AND lease_until_ms < ?",
                now_ms,
            )
            for (job_id,) in stale:
                await self._delete_items(tx, job_id)
                await tx.execute("DELETE FROM bulk_jobs WHERE job_id = ?", job_id)
        return len(stale)

    async def pending(self, job_id: str, limit: int) -> list[PendingItem]:
        rows = await self.read(
            "SELECT seq, subject, consent FROM bulk_subjects WHERE job_id = ? "
            "AND outcome IS NULL AND subject IS NOT NULL ORDER BY seq LIMIT ?",
            job_id,
            limit,
        )
        return [
            PendingItem(
                seq, orjson.loads(subject), None if consent is None else orjson.loads(consent)
            )
            for seq, subject, consent in rows
        ]

    async def recorded(self, job: Job) -> list[tuple[int, str, int]]:
        """``(item, outcome, log_index)`` of every consent record of ``job`` in the log."""
        rows = await self.read(
            "SELECT query_jti, outcome, log_index FROM records WHERE requester = ? "
            "AND log_index >= ? AND query_jti LIKE ?",
            job.requester,
            job.start_index,
            job.job_id + ".%",
        )
        return [(int(jti.rsplit(".", 1)[1]), outcome, index) for jti, outcome, index in rows]

    async def complete(
        self,
        job_id: str,
        owner: str,
        done: Sequence[tuple[int, str, int]],
        *,
        now_ms: int,
        lease_until_ms: int,
    ) -> Job:
        """Mark items ``(seq, outcome, log_index)`` done (each once: an item done already is
        skipped), add their rows to the counts and renew the lease. Raises LeaseLost."""
        async with self.transaction() as tx:
            job = await self._one(tx, job_id)
            if job is None or job.lease_owner != owner or job.status != "running":
                raise LeaseLost("the job's lease is held elsewhere")
            by_seq = {seq: (outcome, index) for seq, outcome, index in done}
            open_rows: list[Sequence[Any]] = []
            seqs = sorted(by_seq)
            for start in range(0, len(seqs), 500):
                part = seqs[start : start + 500]
                marks = ", ".join("?" * len(part))
                open_rows += await tx.fetch(
                    "SELECT seq, row_count FROM bulk_subjects WHERE job_id = ? "  # noqa: S608
                    f"AND seq IN ({marks}) AND outcome IS NULL",
                    job_id,
                    *part,
                )
            counts = dict.fromkeys(OUTCOME_COLUMNS, 0)
            indices = []
            for seq, rows in open_rows:
                outcome, index = by_seq[seq]
                counts[outcome] += rows
                indices.append(index)
            await tx.executemany(
                "UPDATE bulk_subjects SET outcome = ?, log_index = ? WHERE job_id = ? AND seq = ?",
                [(by_seq[seq][0], by_seq[seq][1], job_id, seq) for seq, _ in open_rows],
            )
            sets = ", ".join(f"{column} = {column} + ?" for column in OUTCOME_COLUMNS.values())
            first = min(indices) if indices else None
            last = max(indices) if indices else None
            await tx.execute(
                f"UPDATE bulk_jobs SET {sets}, done_rows = done_rows + ?, "  # noqa: S608
                "done_subjects = done_subjects + ?, "
                "first_index = CASE WHEN first_index IS NULL OR first_index > ? THEN ? "
                "ELSE first_index END, "
                "last_index = CASE WHEN last_index IS NULL OR last_index < ? THEN ? "
                "ELSE last_index END, "
                "lease_until_ms = ?, updated_ms = ?, failures = 0 WHERE job_id = ?",
                *counts.values(),
                sum(counts.values()),
                len(open_rows),
                first,
                first,
                last,
                last,
                lease_until_ms,
                now_ms,
                job_id,
            )
            updated = await self._one(tx, job_id)
        assert updated is not None
        return updated

    async def finish(
        self,
        job_id: str,
        owner: str | None,
        status: str,
        *,
        reason: str | None,
        sha256: dict[str, str] | None,
        now_ms: int,
    ) -> Job | None:
        """End the job (``completed``, ``failed`` or ``cancelled``) and delete its subjects'
        identifiers; references and outcomes stay for the retention period. ``owner`` None:
        a queued job, which no process holds yet. Raises LeaseLost if another holds it."""
        async with self.transaction() as tx:
            job = await self._one(tx, job_id)
            if job is None or job.status not in ("queued", "running"):
                return job
            if job.lease_owner != owner or (owner is None and job.status != "queued"):
                raise LeaseLost("the job's lease is held elsewhere")
            await tx.execute(
                "UPDATE bulk_jobs SET status = ?, reason = ?, finished_ms = ?, updated_ms = ?, "
                "lease_owner = NULL, lease_until_ms = NULL, sha_ndjson = ?, sha_csv = ? "
                "WHERE job_id = ?",
                status,
                reason,
                now_ms,
                now_ms,
                None if sha256 is None else sha256["ndjson"],
                None if sha256 is None else sha256["csv"],
                job_id,
            )
            await tx.execute(
                "UPDATE bulk_subjects SET subject = NULL, consent = NULL WHERE job_id = ?", job_id
            )
            if job.manifest.get("notify"):
                await tx.execute(
                    "INSERT INTO bulk_notices (job_id, state, next_at_ms) "
                    "VALUES (?, 'pending', ?) ON CONFLICT DO NOTHING",
                    job_id,
                    now_ms,
                )
            return await self._one(tx, job_id)

    async def pause(self, job_id: str, owner: str, *, reason: str, retry_at_ms: int) -> int:
        """Give the job up until ``retry_at_ms`` (the log could not commit); returns how many
        times in a row that has happened."""
        async with self.transaction() as tx:
            job = await self._one(tx, job_id)
            if job is None or job.lease_owner != owner:
                return 0
            await tx.execute(
                "UPDATE bulk_jobs SET reason = ?, failures = failures + 1, lease_until_ms = ? "
                "WHERE job_id = ?",
                reason,
                retry_at_ms,
                job_id,
            )
            return job.failures + 1

    async def cancel(
        self, job_id: str, *, now_ms: int, unstarted_sha256: dict[str, str]
    ) -> Job | None:
        """Cancel: a queued job at once (its results files are empty: ``unstarted_sha256``);
        a running one at its next chunk (its owner, or whoever takes it over, ends it)."""
        async with self.transaction() as tx:
            job = await self._one(tx, job_id)
            if job is None or job.status not in ("queued", "running"):
                return job
            await tx.execute(
                "UPDATE bulk_jobs SET cancel_requested = 1, updated_ms = ? WHERE job_id = ?",
                now_ms,
                job_id,
            )
        if job.status == "queued":
            with contextlib.suppress(LeaseLost):  # claimed meanwhile: its runner ends it
                return await self.finish(
                    job_id,
                    None,
                    "cancelled",
                    reason="cancelled by the council",
                    sha256=unstarted_sha256,
                    now_ms=now_ms,
                )
        return await self.get(job_id)

    async def results(self, job_id: str, *, after: int, limit: int) -> list[tuple[int, str, str]]:
        """``(row, ref, outcome)`` of done rows after row ``after``, in row order."""
        rows = await self.read(
            "SELECT r.row_no, r.ref, s.outcome FROM bulk_rows r JOIN bulk_subjects s "
            "ON s.job_id = r.job_id AND s.subject_key = r.subject_key "
            "WHERE r.job_id = ? AND r.row_no > ? AND s.outcome IS NOT NULL "
            "ORDER BY r.row_no LIMIT ?",
            job_id,
            after,
            limit,
        )
        return [(int(row), str(ref), str(outcome)) for row, ref, outcome in rows]

    async def prune(self, *, finished_before_ms: int) -> int:
        """Retention: delete the rows and results of jobs that ended before the time (by
        status: only terminal jobs, never one queued or running). Records stay."""
        async with self.transaction() as tx:
            old = await tx.fetch(
                "SELECT job_id FROM bulk_jobs WHERE status IN ('completed', 'failed', 'cancelled') "
                "AND finished_ms < ? AND results_deleted = 0",
                finished_before_ms,
            )
            for (job_id,) in old:
                await self._delete_items(tx, job_id)
                await tx.execute("DELETE FROM bulk_notices WHERE job_id = ?", job_id)
                await tx.execute(
                    "UPDATE bulk_jobs SET results_deleted = 1 WHERE job_id = ?", job_id
                )
        return len(old)

    async def claim_notice(self, owner: str, *, now_ms: int, lease_ms: int) -> Notice | None:
        """Take the notice longest due (pending, its retry time come, no live lease) for
        ``lease_ms``: this process posts it, no other."""
        async with self.transaction() as tx:
            found = await tx.fetch(
                "SELECT job_id, attempts FROM bulk_notices WHERE state = 'pending' "  # noqa: S608
                "AND next_at_ms <= ? AND (lease_until_ms IS NULL OR lease_until_ms < ?) "
                f"ORDER BY next_at_ms LIMIT 1{self.skip_locked}",
                now_ms,
                now_ms,
            )
            if not found:
                return None
            job_id, attempts = found[0]
            await tx.execute(
                "UPDATE bulk_notices SET lease_owner = ?, lease_until_ms = ? WHERE job_id = ?",
                owner,
                now_ms + lease_ms,
                job_id,
            )
            job = await self._one(tx, job_id)
        assert job is not None
        return Notice(job, int(attempts), "pending", None)

    async def notice_tried(
        self,
        job_id: str,
        owner: str,
        *,
        now_ms: int,
        error: str | None,
        retry_at_ms: int | None,
    ) -> None:
        """Record one delivery attempt: delivered (``error`` None), to retry at
        ``retry_at_ms``, or (``retry_at_ms`` None) abandoned. A lease another process holds now
        is left alone."""
        state = "delivered" if error is None else "gave-up" if retry_at_ms is None else "pending"
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE bulk_notices SET state = ?, attempts = attempts + 1, last_error = ?, "
                "next_at_ms = ?, delivered_ms = ?, lease_owner = NULL, lease_until_ms = NULL "
                "WHERE job_id = ? AND lease_owner = ?",
                state,
                error,
                retry_at_ms if retry_at_ms is not None else now_ms,
                now_ms if error is None else None,
                job_id,
                owner,
            )

    async def notice_of(self, job_id: str) -> Notice | None:
        """The job's notice as it stands (``None``: it asked for none, or not ended yet)."""
        rows = await self.read(
            "SELECT attempts, state, last_error FROM bulk_notices WHERE job_id = ?", job_id
        )
        job = await self.get(job_id) if rows else None
        if job is None:
            return None
        attempts, state, error = rows[0]
        return Notice(job, int(attempts), str(state), error)

    async def all_jobs(self, *, requester: str | None = None, limit: int = 100) -> list[Job]:
        """Every council's jobs (or ``requester``'s), newest first: what an auditor lists."""
        if requester is not None:
            return await self.jobs_of(requester, limit=limit)
        rows = await self.read(
            f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE status <> 'receiving' "  # noqa: S608
            "ORDER BY created_ms DESC LIMIT ?",
            limit,
        )
        return [_job(row) for row in rows]

    async def jobs_of(self, requester: str, *, limit: int = 100) -> list[Job]:
        rows = await self.read(
            f"SELECT {_JOB_COLUMNS} FROM bulk_jobs WHERE requester = ? "  # noqa: S608
            "AND status <> 'receiving' ORDER BY created_ms DESC LIMIT ?",
            requester,
            limit,
        )
        return [_job(row) for row in rows]


class _SqliteTx(Tx):
    def __init__(self, store: SqliteJobStore) -> None:
        self._store = store

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._store._write(lambda db: db.execute(sql, args).fetchall())

    async def execute(self, sql: str, *args: Any) -> None:
        await self._store._write(lambda db: db.execute(sql, args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._store._write(lambda db: db.executemany(sql, rows))


class SqliteJobStore(JobStore):
    """Beside the embedded log in its file: one connection that writes (on a thread of its
    own) and one that reads, so status and results never wait for a chunk's commit."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-jobs-write")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-jobs-read")
        self._db_write: sqlite3.Connection | None = None
        self._db_read: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA synchronous=FULL")
        return db

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def open_writer() -> None:
            db = self._connect()
            db.executescript(schema(integer="INTEGER", binary="BLOB"))
            self._db_write = db

        await loop.run_in_executor(self._writer, open_writer)
        self._db_read = await loop.run_in_executor(self._reader, self._connect)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for executor, db in ((self._writer, self._db_write), (self._reader, self._db_read)):
            if db is not None:
                await loop.run_in_executor(executor, db.close)
            executor.shutdown(wait=True)
        self._db_write = self._db_read = None

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db_write
        if db is None:
            raise LogUnavailable("the job store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, work, db)
        except sqlite3.Error as exc:
            raise LogUnavailable(f"job store write failed: {type(exc).__name__}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:  # one transaction at a time on the writing connection
            await self._write(lambda db: db.execute("BEGIN IMMEDIATE"))
            try:
                yield _SqliteTx(self)
                await self._write(lambda db: db.execute("COMMIT"))
            except BaseException:  # a failed COMMIT too (a full disk): never left open
                with contextlib.suppress(Exception):
                    await self._write(lambda db: db.in_transaction and db.execute("ROLLBACK"))
                raise

    async def read(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        db = self._db_read
        if db is None:
            raise LogUnavailable("the job store is closed")

        def run() -> list[Sequence[Any]]:
            return db.execute(sql, args).fetchall()

        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, run)
        except sqlite3.Error as exc:
            raise LogUnavailable(f"job store read failed: {type(exc).__name__}") from exc


_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class _PostgresTx(Tx):
    def __init__(self, conn: Any) -> None:  # a pooled asyncpg connection
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return [tuple(r) for r in await self._conn.fetch(_numbered(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(_numbered(sql), *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(_numbered(sql), rows)


class PostgresJobStore(JobStore):
    """Beside the shared log in its schema: any broker process may take over a job whose
    owner died (row locks, ``SKIP LOCKED``, keep two from claiming one job)."""

    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, dsn: str, *, schema: str = "axb") -> None:
        self._dsn = dsn
        self._schema = schema
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        await create_tables(self._dsn, self._schema, schema(integer="BIGINT", binary="BYTEA"))
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=4,
            server_settings={"search_path": self._schema},
            command_timeout=30,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_pool(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LogUnavailable("the job store is closed")
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield _PostgresTx(conn)
        except (asyncpg.PostgresError, OSError) as exc:
            raise LogUnavailable(f"job store write failed: {type(exc).__name__}") from exc

    async def read(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        try:
            return [tuple(r) for r in await self.pool.fetch(_numbered(sql), *args)]
        except (asyncpg.PostgresError, OSError) as exc:
            raise LogUnavailable(f"job store read failed: {type(exc).__name__}") from exc


def open_job_store(location: LogLocation) -> JobStore:
    """The job store beside the consent log at ``location``."""
    match location:
        case PostgresLocation(dsn=dsn, schema=schema_name):
            return PostgresJobStore(dsn, schema=schema_name)
        case SqliteLocation(path=path):
            return SqliteJobStore(path)
