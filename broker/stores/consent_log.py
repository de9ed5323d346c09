"""The consent log: every query's record, committed before its answer leaves.

``ConsentLog`` is the interface the pipeline uses; ``SqliteConsentLog`` is the embedded default
(WAL, ``synchronous=FULL``). Appends are group-committed: concurrent checks queue their records,
one writer commits them in a single transaction, and each ``append`` returns only once its
record is durable. The returned integer is the record's log index (0, 1, 2, ...).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import orjson

from broker.errors import LogUnavailable
from trust.records import ConsentRecord


class ConsentLog(Protocol):
    async def start(self) -> None: ...

    async def append(self, record: ConsentRecord) -> int:
        """Durably append ``record``; returns its log index. Raises LogUnavailable."""
        ...

    async def size(self) -> int: ...

    def running(self) -> bool: ...

    async def records(self, start: int, stop: int) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    log_index      INTEGER PRIMARY KEY,
    recorded_at_ms INTEGER NOT NULL,
    requester      TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    check_name     TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    lawful_basis   TEXT,
    query_jti      TEXT NOT NULL,
    subject_key_id TEXT NOT NULL,
    subject_person TEXT NOT NULL,
    subject_nino   TEXT,
    body           BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records (recorded_at_ms);
CREATE INDEX IF NOT EXISTS records_person ON records (subject_person);
CREATE INDEX IF NOT EXISTS records_nino ON records (subject_nino);
"""


def _row(index: int, record: ConsentRecord) -> tuple[Any, ...]:
    return (
        index,
        record.recorded_at_ms,
        record.requester,
        record.purpose,
        record.check,
        record.outcome,
        record.lawful_basis,
        record.query_jti,
        record.subject.key_id,
        record.subject.person,
        record.subject.nino,
        orjson.dumps({"log_index": index, **record.to_json()}),
    )


class SqliteConsentLog:
    def __init__(self, path: Path, *, max_batch: int = 1024) -> None:
        self._path = path
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[ConsentRecord, asyncio.Future[int]] | None] = (
            asyncio.Queue()
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-log")
        self._db: sqlite3.Connection | None = None
        self._next_index = 0
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        self._next_index = self._count()

    def _count(self) -> int:
        assert self._db is not None
        (count,) = self._db.execute(
            "SELECT COALESCE(MAX(log_index) + 1, 0) FROM records"
        ).fetchone()
        return int(count)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._open)
        self._writer = asyncio.create_task(self._write_loop(), name="consent-log-writer")

    async def append(self, record: ConsentRecord) -> int:
        if self._writer is None or self._writer.done():
            raise LogUnavailable("consent log is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return await asyncio.shield(future)

    def _commit(self, records: Sequence[ConsentRecord]) -> int:
        """Runs on the writer thread: one transaction for the whole batch."""
        db = self._db
        if db is None:
            raise LogUnavailable("consent log closed")
        first = self._next_index
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [_row(first + i, record) for i, record in enumerate(records)],
            )
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._next_index = first + len(records)
        return first

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch: list[tuple[ConsentRecord, asyncio.Future[int]]] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if not batch:
                continue
            try:
                first = await loop.run_in_executor(
                    self._executor, self._commit, [record for record, _ in batch]
                )
            except Exception as exc:  # every waiter learns its record is not durable
                for _, future in batch:
                    if not future.done():
                        future.set_exception(LogUnavailable(f"commit failed: {exc}"))
                continue
            self.commits += 1
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    async def size(self) -> int:
        return self._next_index

    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def _read(self, start: int, stop: int) -> list[dict[str, Any]]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT body FROM records WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, stop),
        ).fetchall()
        return [orjson.loads(body) for (body,) in rows]

    async def records(self, start: int, stop: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, start, stop)

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put_nowait(None)  # the writer commits what is queued, then stops
            await self._writer
            self._writer = None
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)
