"""The shared consent log: PostgreSQL through asyncpg, one log sequence for many processes.

Each process group-commits its own batches. A batch takes a transaction-scoped advisory lock,
reads the next index, COPYs its rows and commits; the lock is released by the COMMIT (or by
the rollback if the process dies), so batches from every process form one gap-free sequence
and a later batch is never visible before an earlier one.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from broker.errors import LogUnavailable, SettingsError
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

log = structlog.get_logger("broker.stores.consent_log")

_SETUP_LOCK = 0x6178_6200  # serialises schema creation by brokers starting together

_SCHEMA = schema(integer="BIGINT", binary="BYTEA")
_FILTERS = {
    "requester": "requester",
    "purpose": "purpose",
    "check": "check_name",
    "outcome": "outcome",
    "lawful_basis": "lawful_basis",
    "kind": "kind",
    "identity_provider": "identity_provider",
}


# Every block number as one array, so both columns of the per-block pseudonym index are index
# conditions whatever the planner's statistics say (a join against generate_series chose a
# full index scan on a fresh, unanalysed table: 120 ms instead of 8 ms at 1,000,000 records).
_BLOCKS = (
    f"(log_index >> {SUBJECT_BLOCK_BITS}) = ANY(ARRAY(SELECT generate_series(0, "  # noqa: S608
    f"(SELECT COALESCE(MAX(log_index), 0) >> {SUBJECT_BLOCK_BITS} FROM records))))"
)
_BY_SUBJECT = (  # built from constants only
    f"SELECT log_index, digest, salt, body FROM records WHERE {_BLOCKS} "  # noqa: S608
    "AND subject_person = ANY($1::text[]) "
    f"UNION SELECT log_index, digest, salt, body FROM records WHERE {_BLOCKS} "
    "AND subject_nino = ANY($2::text[]) ORDER BY log_index"
)

_SEEN_START = SEEN_WINDOW_START.format(since="$3")
_SEEN_QUERY = SEEN_QUERY_SQL.format(  # the window's blocks as one array, as for subjects
    records="records",
    fence=" OFFSET 0",
    blocks=f"(log_index >> {SUBJECT_BLOCK_BITS}) = ANY(ARRAY(SELECT generate_series("  # noqa: S608
    f"({_SEEN_START}) >> {SUBJECT_BLOCK_BITS}, "
    f"(SELECT COALESCE(MAX(log_index), 0) >> {SUBJECT_BLOCK_BITS} FROM records))))",
    jti="$2::text",
    requester="$1::text",
    start=f"({_SEEN_START})",
)


def _stored(rows: Sequence[asyncpg.Record]) -> list[StoredRecord]:
    return [
        StoredRecord(
            r["log_index"],
            bytes(r["digest"]),
            None if r["salt"] is None else bytes(r["salt"]),
            None if r["body"] is None else bytes(r["body"]),
        )
        for r in rows
    ]


POOL_CLOSE_S = 1.0


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close ``pool`` gracefully if that takes at most ``POOL_CLOSE_S``, else terminate its
    connections: at a stop everything is committed already, and a database being stopped
    beside the broker (the same ``podman stop``) can leave the pool reconnecting for ever."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_S)
    except TimeoutError:
        log.warning("postgres_pool_terminated", after_s=POOL_CLOSE_S)
        pool.terminate()


async def create_tables(
    dsn: str, schema: str, ddl: str, record_columns: Sequence[tuple[str, str]] = ()
) -> None:
    """Run ``ddl`` (``CREATE ... IF NOT EXISTS``) in ``schema``, creating it if need be, and
    add ``record_columns`` (name, type) to an older ``records`` table."""
    bootstrap = await asyncpg.connect(dsn)
    try:
        async with bootstrap.transaction():
            # CREATE ... IF NOT EXISTS races between sessions: one process at a time
            await bootstrap.execute("SELECT pg_advisory_xact_lock($1)", _SETUP_LOCK)
            await bootstrap.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await bootstrap.execute(f"SET LOCAL search_path TO {schema}")
            await bootstrap.execute(ddl)
            # ALTER TABLE takes an ACCESS EXCLUSIVE lock even when the column is there: a
            # broker restarting beside live ones deadlocked with their appends. Alter only
            # an older table that lacks the column.
            present = {
                row["column_name"]
                for row in await bootstrap.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = $1 AND table_name = 'records'",
                    schema,
                )
            }
            for name, kind in record_columns:
                if name not in present:
                    await bootstrap.execute(f"ALTER TABLE records ADD COLUMN {name} {kind}")
    finally:
        await bootstrap.close()


class PostgresConsentLog(GroupCommitWriter):
    def __init__(self, dsn: str, *, schema: str = "axb", max_batch: int = 2048) -> None:
        super().__init__(max_batch=max_batch)
        if not schema.isidentifier():
            raise SettingsError("schema must be a plain identifier")
        self._dsn = dsn
        self._schema = schema
        # one lock per log (schema): serialises batch appends across processes
        self._lock_key = zlib.crc32(f"axb-consent-log:{schema}".encode())
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LogUnavailable("consent log closed")
        return self._pool

    async def start(self) -> None:
        await create_tables(self._dsn, self._schema, _SCHEMA, ADDED_COLUMNS)
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=4,
            server_settings={"search_path": self._schema},
            command_timeout=10,
        )
        self._start_writer()

    async def close(self) -> None:
        await self._stop_writer()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await close_pool(pool)

    async def _commit(
        self, records: Sequence[LogRecord], prepared: list[LogEntry] | None
    ) -> list[LogEntry]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key)
            first = await conn.fetchval("SELECT COALESCE(MAX(log_index) + 1, 0) FROM records")
            entries = (
                prepared
                if prepared and prepared[0].index == first
                else [entry_for(record, first + i) for i, record in enumerate(records)]
            )
            await conn.copy_records_to_table(
                "records",
                records=[row(r, e) for r, e in zip(records, entries, strict=True)],
                columns=list(COLUMNS),
                schema_name=self._schema,
            )
            withdrawals = [
                (r.requester, r.consent_id, e.index)
                for r, e in zip(records, entries, strict=True)
                if isinstance(r, WithdrawalRecord)
            ]
            if withdrawals:
                await conn.executemany(
                    "INSERT INTO withdrawals VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    withdrawals,
                )
        return entries

    async def _probe(self, now_ms: int) -> None:
        await self.pool.execute(PROBE.format("$1"), now_ms)

    async def size(self) -> int:
        value = await self.pool.fetchval("SELECT COALESCE(MAX(log_index) + 1, 0) FROM records")
        return int(value)

    async def digests(self, start: int, stop: int) -> list[bytes]:
        rows = await self.pool.fetch(
            "SELECT digest FROM records WHERE log_index >= $1 AND log_index < $2 "
            "ORDER BY log_index",
            start,
            stop,
        )
        return [bytes(r["digest"]) for r in rows]

    async def entries(self, start: int, stop: int) -> list[StoredRecord]:
        rows = await self.pool.fetch(
            "SELECT log_index, digest, salt, body FROM records "
            "WHERE log_index >= $1 AND log_index < $2 ORDER BY log_index",
            start,
            stop,
        )
        return _stored(rows)

    async def get(self, index: int) -> StoredRecord | None:
        found = await self.entries(index, index + 1)
        return found[0] if found else None

    async def identity_counts(
        self, *, since_ms: int | None, until_ms: int | None
    ) -> dict[str | None, int]:
        rows = await self.pool.fetch(
            "SELECT identity_provider, COUNT(*) AS n FROM records WHERE kind = 'check' "
            "AND recorded_at_ms >= $1 AND recorded_at_ms < $2 GROUP BY identity_provider",
            since_ms or 0,
            until_ms if until_ms is not None else 2**62,
        )
        return {r["identity_provider"]: int(r["n"]) for r in rows}

    async def find(self, where: RecordFilter, *, after: int, limit: int) -> list[StoredRecord]:
        clauses, params = ["log_index > $1"], [after]
        values: list[tuple[str, Any]] = [
            (f"{column} = ${{}}", getattr(where, name)) for name, column in _FILTERS.items()
        ]
        values += [
            ("recorded_at_ms >= ${}", where.since_ms),
            ("recorded_at_ms < ${}", where.until_ms),
        ]
        for template, value in values:
            if value is not None:
                params.append(value)
                clauses.append(template.format(len(params)))
        params.append(limit)
        sql = (  # clauses come from _FILTERS, values are bound parameters
            "SELECT log_index, digest, salt, body FROM records WHERE "  # noqa: S608
            + " AND ".join(clauses)
            + f" ORDER BY log_index LIMIT ${len(params)}"
        )
        return _stored(await self.pool.fetch(sql, *params))

    async def by_subject(self, persons: Sequence[str], ninos: Sequence[str]) -> list[StoredRecord]:
        rows = await self.pool.fetch(
            _BY_SUBJECT,
            list(persons),
            list(ninos),
        )
        return _stored(rows)

    async def is_withdrawn(self, requester: str, consent_id: str) -> bool:
        found = await self.pool.fetchval(
            "SELECT 1 FROM withdrawals WHERE requester = $1 AND consent_id = $2",
            requester,
            consent_id,
        )
        return found is not None

    async def seen_query(self, requester: str, jti: str, *, since_ms: int) -> bool:
        try:
            return await self.pool.fetchval(_SEEN_QUERY, requester, jti, since_ms) is not None
        except (asyncpg.PostgresError, OSError) as exc:  # the log cannot answer: 503
            raise LogUnavailable(f"consent log read failed: {type(exc).__name__}") from exc

    async def add_checkpoint(self, size: int, note: str, issued_at_ms: int) -> None:
        await self.pool.execute(
            "INSERT INTO checkpoints (size, note, issued_at_ms) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            size,
            note,
            issued_at_ms,
        )

    async def checkpoints(self) -> list[tuple[int, str]]:
        rows = await self.pool.fetch("SELECT size, note FROM checkpoints ORDER BY size")
        return [(int(r["size"]), str(r["note"])) for r in rows]

    async def add_cosignature(self, size: int, witness: str, line: str) -> None:
        await self.pool.execute(
            "INSERT INTO cosignatures (size, witness, line) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            size,
            witness,
            line,
        )

    async def cosignatures(self, since_size: int = 0) -> list[tuple[int, str, str]]:
        rows = await self.pool.fetch(
            "SELECT size, witness, line FROM cosignatures WHERE size >= $1 ORDER BY size, witness",
            since_size,
        )
        return [(int(r["size"]), str(r["witness"]), str(r["line"])) for r in rows]

    async def prune(self, before_ms: int) -> int:
        status = await self.pool.execute(
            PRUNE_SQL,
            before_ms,
        )
        return int(status.split()[-1])

    async def add_tiles(self, tiles: Sequence[Tile]) -> None:
        if not tiles:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO log_tiles (level, idx, hashes) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                [(t.level, t.index, t.hashes) for t in tiles],
            )

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        try:
            rows = await self.pool.fetch(
                "SELECT t.level, t.idx, t.hashes FROM log_tiles t "
                "JOIN unnest($1::bigint[], $2::bigint[]) AS k(level, idx) "
                "ON t.level = k.level AND t.idx = k.idx",
                [level for level, _ in keys],
                [index for _, index in keys],
            )
        except (asyncpg.PostgresError, OSError) as exc:  # the log cannot answer: 503
            raise LogUnavailable(f"consent log read failed: {type(exc).__name__}") from exc
        return {(int(r["level"]), int(r["idx"])): bytes(r["hashes"]) for r in rows}

    async def tile_count(self, level: int) -> int:
        value = await self.pool.fetchval(
            "SELECT COALESCE(MAX(idx) + 1, 0) FROM log_tiles WHERE level = $1", level
        )
        return int(value)

    async def drop_tiles(self) -> None:
        await self.pool.execute("DELETE FROM log_tiles")
