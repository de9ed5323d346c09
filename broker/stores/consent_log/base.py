"""The consent-log interface and the group-commit writer both backends share."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.errors import LogUnavailable
from trust.records import LogEntry, LogRecord


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record as stored: body and salt are ``None`` once pruned."""

    index: int
    digest: bytes
    salt: bytes | None
    body: bytes | None


@dataclass(frozen=True, slots=True)
class RecordFilter:
    since_ms: int | None = None
    until_ms: int | None = None
    requester: str | None = None
    purpose: str | None = None
    check: str | None = None
    outcome: str | None = None
    lawful_basis: str | None = None
    kind: str | None = None


class ConsentLog(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def running(self) -> bool: ...

    async def drain(self) -> None: ...

    async def append(self, record: LogRecord) -> int:
        """Durably append ``record``; returns its log index. Raises LogUnavailable."""
        ...

    async def size(self) -> int:
        """How many records are committed (by every process sharing the log)."""
        ...

    async def digests(self, start: int, stop: int) -> list[bytes]:
        """The committed record digests for indices ``start`` to ``stop - 1``, in order."""
        ...

    async def get(self, index: int) -> StoredRecord | None: ...

    async def find(self, where: RecordFilter, *, after: int, limit: int) -> list[StoredRecord]: ...

    async def by_subject(
        self, persons: Sequence[str], ninos: Sequence[str]
    ) -> list[StoredRecord]: ...

    async def entries(self, start: int, stop: int) -> list[StoredRecord]: ...

    async def is_withdrawn(self, requester: str, consent_id: str) -> bool: ...

    async def add_checkpoint(self, size: int, note: str, issued_at_ms: int) -> None: ...

    async def checkpoints(self) -> list[tuple[int, str]]:
        """Every checkpoint note stored, by size."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Delete bodies and salts of records older than ``before_ms``; returns how many."""
        ...


class GroupCommitWriter(abc.ABC):
    """Queues appends and commits them in batches, one transaction per batch."""

    def __init__(self, *, max_batch: int = 2048) -> None:
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[LogRecord, asyncio.Future[int]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0

    @abc.abstractmethod
    async def _commit(self, records: Sequence[LogRecord]) -> list[LogEntry]:
        """Commit ``records`` in one transaction at the next indices; return their entries."""

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="consent-log-writer")

    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def append(self, record: LogRecord) -> int:
        if not self.running():
            raise LogUnavailable("consent log is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[tuple[LogRecord, asyncio.Future[int]]] = []
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
                entries = await self._commit([record for record, _ in batch])
            except Exception as exc:  # every waiter learns its record is not durable
                for _, future in batch:
                    if not future.done():
                        future.set_exception(LogUnavailable(f"commit failed: {exc}"))
                continue
            self.commits += 1
            for entry, (_, future) in zip(entries, batch, strict=True):
                if not future.done():
                    future.set_result(entry.index)

    async def drain(self) -> None:
        """Commit everything queued and stop accepting appends (before a final checkpoint)."""
        await self._stop_writer()

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._queue.put_nowait(None)  # the writer commits what is queued, then stops
            await self._writer
            self._writer = None


def open_consent_log(location: str | Path, *, schema: str = "axb") -> ConsentLog:
    """A PostgreSQL log for a ``postgresql://`` URL (tables in ``schema``), else an SQLite
    file at that path."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from broker.stores.consent_log.postgres import PostgresConsentLog

        return PostgresConsentLog(text, schema=schema)
    from broker.stores.consent_log.sqlite import SqliteConsentLog

    return SqliteConsentLog(Path(text))
