"""The embedded consent log: SQLite in WAL mode with ``synchronous=FULL``, one process.

All database work runs on one dedicated thread; the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from broker.errors import LogUnavailable
from broker.stores.consent_log.base import GroupCommitWriter, RecordFilter, StoredRecord
from broker.stores.consent_log.columns import (
    ADDED_COLUMNS,
    COLUMNS,
    PROBE,
    PRUNE_SQL,
    SEEN_QUERY_SQL,
    SEEN_WINDOW_START,
    SUBJECT_BLOCK_BITS,
    row,
    schema,
)
from trust.records import LogEntry, LogRecord, WithdrawalRecord, entry_for
from trust.tiles import Tile, TileKey

T = TypeVar("T")

_SCHEMA = schema(integer="INTEGER", binary="BLOB")
# Built from constants only (column names and placeholders): no value is ever interpolated.
_INSERT = f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"  # noqa: S608
_FILTERS = {
    "requester": "requester = ?",
    "purpose": "purpose = ?",
    "check": "check_name = ?",
    "outcome": "outcome = ?",
    "lawful_basis": "lawful_basis = ?",
    "kind": "kind = ?",
    "identity_provider": "identity_provider = ?",
    "since_ms": "recorded_at_ms >= ?",
    "until_ms": "recorded_at_ms < ?",
}


def _stored(rows: list[Any]) -> list[StoredRecord]:
    return [
        StoredRecord(index, bytes(d), s and bytes(s), b and bytes(b)) for index, d, s, b in rows
    ]


def _set_wal(db: sqlite3.Connection, attempts: int = 100) -> None:
    """Switch to WAL. Two processes opening one new file at once can both find it locked:
    SQLite answers that pragma SQLITE_BUSY without waiting on the busy timeout, so wait here."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


_SEEN_START = SEEN_WINDOW_START.format(since="?3")
_SEEN_BLOCKS = (  # the window's blocks as a recursive count, each an index seek (constants only)
    f"WITH RECURSIVE block(n) AS (SELECT ({_SEEN_START}) >> {SUBJECT_BLOCK_BITS} "  # noqa: S608
    "UNION ALL SELECT n + 1 FROM block WHERE n < "
    f"(SELECT COALESCE(MAX(log_index), 0) >> {SUBJECT_BLOCK_BITS} FROM records)) "
)
_SEEN_QUERY = _SEEN_BLOCKS + SEEN_QUERY_SQL.format(
    records="records INDEXED BY records_query_by_block",
    fence="",
    blocks=f"(log_index >> {SUBJECT_BLOCK_BITS}) IN (SELECT n FROM block)",  # noqa: S608
    jti="?2",
    requester="?1",
    start=f"({_SEEN_START})",
)


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at once (``BEGIN IMMEDIATE``); committed, or
    rolled back on any error."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("COMMIT")  # a commit that fails (a full disk) is rolled back too
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteConsentLog(GroupCommitWriter):
    def __init__(self, path: Path, *, max_batch: int = 2048, synchronous: str = "FULL") -> None:
        super().__init__(max_batch=max_batch)
        self._path = path
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consent-log")
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise LogUnavailable("consent log closed")
        return self._db

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        _set_wal(db)
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        # Checkpoint the WAL into the database every ~40 MB rather than every ~4 MB: fewer,
        # larger checkpoints inside COMMIT (durability is the WAL's fsync either way).
        db.execute("PRAGMA wal_autocheckpoint=10000")
        db.executescript(_SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(records)")}
        for name, kind in ADDED_COLUMNS:
            if name not in present:
                db.execute(f"ALTER TABLE records ADD COLUMN {name} {kind}")
        self._db = db

    async def start(self) -> None:
        await self._run(self._open)
        self._start_writer()

    async def close(self) -> None:
        await self._stop_writer()
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self._executor.shutdown(wait=True)

    def _commit_sync(
        self, records: Sequence[LogRecord], prepared: list[LogEntry] | None
    ) -> list[LogEntry]:
        db = self._connection()
        # The next index is read inside the write lock, so several processes sharing one file
        # still form one gap-free sequence. A bad record fails the batch, never half of it.
        with _immediate(db):
            (first,) = db.execute("SELECT COALESCE(MAX(log_index) + 1, 0) FROM records").fetchone()
            entries = (
                prepared
                if prepared and prepared[0].index == first
                else [entry_for(record, first + i) for i, record in enumerate(records)]
            )
            db.executemany(_INSERT, [row(r, e) for r, e in zip(records, entries, strict=True)])
            db.executemany(
                "INSERT OR IGNORE INTO withdrawals VALUES (?, ?, ?)",
                [
                    (r.requester, r.consent_id, e.index)
                    for r, e in zip(records, entries, strict=True)
                    if isinstance(r, WithdrawalRecord)
                ],
            )
        return entries

    async def _commit(
        self, records: Sequence[LogRecord], prepared: list[LogEntry] | None
    ) -> list[LogEntry]:
        return await self._run(self._commit_sync, records, prepared)

    def _probe_sync(self, now_ms: int) -> None:
        db = self._connection()
        with _immediate(db):
            db.execute(PROBE.format("?"), (now_ms,))

    async def _probe(self, now_ms: int) -> None:
        await self._run(self._probe_sync, now_ms)

    async def size(self) -> int:
        rows = await self._run(
            self._query, "SELECT COALESCE(MAX(log_index) + 1, 0) FROM records", ()
        )
        return int(rows[0][0])

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:  # the log cannot answer: fail closed, as 503
            raise LogUnavailable(f"consent log read failed: {type(exc).__name__}") from exc

    async def digests(self, start: int, stop: int) -> list[bytes]:
        rows = await self._run(
            self._query,
            "SELECT digest FROM records WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, stop),
        )
        return [bytes(digest) for (digest,) in rows]

    async def entries(self, start: int, stop: int) -> list[StoredRecord]:
        rows = await self._run(
            self._query,
            "SELECT log_index, digest, salt, body FROM records "
            "WHERE log_index >= ? AND log_index < ? ORDER BY log_index",
            (start, stop),
        )
        return _stored(rows)

    async def get(self, index: int) -> StoredRecord | None:
        found = await self.entries(index, index + 1)
        return found[0] if found else None

    async def find(self, where: RecordFilter, *, after: int, limit: int) -> list[StoredRecord]:
        clauses, params = ["log_index > ?"], [after]
        for name, clause in _FILTERS.items():
            value = getattr(where, name)
            if value is not None:
                clauses.append(clause)
                params.append(value)
        sql = (  # clauses come from _FILTERS, values are bound parameters
            "SELECT log_index, digest, salt, body FROM records WHERE "  # noqa: S608
            + " AND ".join(clauses)
            + " ORDER BY log_index LIMIT ?"
        )
        return _stored(await self._run(self._query, sql, (*params, limit)))

    async def identity_counts(
        self, *, since_ms: int | None, until_ms: int | None
    ) -> dict[str | None, int]:
        sql = (
            "SELECT identity_provider, COUNT(*) FROM records WHERE kind = 'check' "
            "AND recorded_at_ms >= ? AND recorded_at_ms < ? GROUP BY identity_provider"
        )
        bounds = (since_ms or 0, until_ms if until_ms is not None else 2**62)
        return {provider: int(n) for provider, n in await self._run(self._query, sql, bounds)}

    async def by_subject(self, persons: Sequence[str], ninos: Sequence[str]) -> list[StoredRecord]:
        marks_p = ",".join("?" * len(persons)) or "NULL"
        marks_n = ",".join("?" * len(ninos)) or "NULL"
        sql = (  # only placeholders and constants are interpolated
            "WITH RECURSIVE block(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM block WHERE n < "  # noqa: S608
            f"(SELECT COALESCE(MAX(log_index), 0) >> {SUBJECT_BLOCK_BITS} FROM records)) "
            "SELECT log_index, digest, salt, body FROM block CROSS JOIN records "
            f"WHERE (log_index >> {SUBJECT_BLOCK_BITS}) = block.n "
            f"AND subject_person IN ({marks_p}) "
            "UNION SELECT log_index, digest, salt, body FROM block CROSS JOIN records "
            f"WHERE (log_index >> {SUBJECT_BLOCK_BITS}) = block.n "
            f"AND subject_nino IN ({marks_n}) "
            "ORDER BY log_index"
        )
        return _stored(await self._run(self._query, sql, (*persons, *ninos)))

    async def is_withdrawn(self, requester: str, consent_id: str) -> bool:
        rows = await self._run(
            self._query,
            "SELECT 1 FROM withdrawals WHERE requester = ? AND consent_id = ?",
            (requester, consent_id),
        )
        return bool(rows)

    async def seen_query(self, requester: str, jti: str, *, since_ms: int) -> bool:
        return bool(await self._run(self._query, _SEEN_QUERY, (requester, jti, since_ms)))

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        cursor = self._connection().execute(sql, params)
        return cursor.rowcount

    async def add_checkpoint(self, size: int, note: str, issued_at_ms: int) -> None:
        await self._run(
            self._execute,
            "INSERT OR IGNORE INTO checkpoints (size, note, issued_at_ms) VALUES (?, ?, ?)",
            (size, note, issued_at_ms),
        )

    async def checkpoints(self) -> list[tuple[int, str]]:
        rows = await self._run(self._query, "SELECT size, note FROM checkpoints ORDER BY size", ())
        return [(int(size), str(note)) for size, note in rows]

    async def add_cosignature(self, size: int, witness: str, line: str) -> None:
        await self._run(
            self._execute,
            "INSERT OR IGNORE INTO cosignatures (size, witness, line) VALUES (?, ?, ?)",
            (size, witness, line),
        )

    async def cosignatures(self, since_size: int = 0) -> list[tuple[int, str, str]]:
        rows = await self._run(
            self._query,
            "SELECT size, witness, line FROM cosignatures WHERE size >= ? ORDER BY size, witness",
            (since_size,),
        )
        return [(int(size), str(witness), str(line)) for size, witness, line in rows]

    async def prune(self, before_ms: int) -> int:
        return await self._run(
            self._execute,
            PRUNE_SQL.replace("$1", "?"),
            (before_ms,),
        )

    def _add_tiles_sync(self, tiles: Sequence[Tile]) -> None:
        db = self._connection()
        with _immediate(db):
            db.executemany(
                "INSERT OR IGNORE INTO log_tiles (level, idx, hashes) VALUES (?, ?, ?)",
                [(t.level, t.index, t.hashes) for t in tiles],
            )

    async def add_tiles(self, tiles: Sequence[Tile]) -> None:
        if tiles:
            await self._run(self._add_tiles_sync, tiles)

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        found: dict[TileKey, bytes] = {}
        for level in {level for level, _ in keys}:
            wanted = sorted(index for lv, index in keys if lv == level)
            marks = ",".join("?" * len(wanted))
            rows = await self._run(
                self._query,
                f"SELECT idx, hashes FROM log_tiles WHERE level = ? AND idx IN ({marks})",  # noqa: S608
                (level, *wanted),
            )
            found.update({(level, int(index)): bytes(hashes) for index, hashes in rows})
        return found

    async def tile_count(self, level: int) -> int:
        rows = await self._run(
            self._query,
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_tiles WHERE level = ?",
            (level,),
        )
        return int(rows[0][0])

    async def drop_tiles(self) -> None:
        await self._run(self._execute, "DELETE FROM log_tiles", ())
