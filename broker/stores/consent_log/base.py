"""The consent-log interface and the group-commit writer both backends share."""

from __future__ import annotations

import abc
import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from broker.errors import LogUnavailable
from trust.records import LogEntry, LogRecord, entry_for
from trust.tiles import Tile, TileKey


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A committed record as stored: body and salt are ``None`` once pruned."""

    index: int
    digest: bytes
    salt: bytes | None
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a record was committed: its log index and its salted digest (the Merkle leaf is
    built from the digest). The broker signs both into the answer, as the council's receipt."""

    index: int
    digest: bytes


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
    identity_provider: str | None = None


class ConsentLog(Protocol):
    observe_commit: Callable[[int, float], None] | None  # (records, seconds) per group commit

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def running(self) -> bool: ...

    async def ready(self) -> bool:
        """Whether the log can commit now: running, and its last commit went through (or, if
        there was none in the last second, a probe commit does)."""
        ...

    async def drain(self) -> None: ...

    async def append(self, record: LogRecord) -> Appended:
        """Durably append ``record``; returns its index and digest. Raises LogUnavailable."""
        ...

    async def size(self) -> int:
        """How many records are committed (by every process sharing the log)."""
        ...

    async def digests(self, start: int, stop: int) -> list[bytes]:
        """The committed record digests for indices ``start`` to ``stop - 1``, in order."""
        ...

    async def get(self, index: int) -> StoredRecord | None: ...

    async def find(self, where: RecordFilter, *, after: int, limit: int) -> list[StoredRecord]: ...

    async def identity_counts(
        self, *, since_ms: int | None, until_ms: int | None
    ) -> dict[str | None, int]:
        """How many check records each identity provider's credential backed (``None``: the
        council asserted the identity, or the credential was refused)."""
        ...

    async def by_subject(
        self, persons: Sequence[str], ninos: Sequence[str]
    ) -> list[StoredRecord]: ...

    async def entries(self, start: int, stop: int) -> list[StoredRecord]: ...

    async def is_withdrawn(self, requester: str, consent_id: str) -> bool: ...

    async def seen_query(self, requester: str, jti: str, *, since_ms: int) -> bool:
        """Whether a record of ``requester`` recorded since ``since_ms`` carries ``jti``: the
        proof of a jti's first use when the replay store has forgotten."""
        ...

    async def add_checkpoint(self, size: int, note: str, issued_at_ms: int) -> None: ...

    async def checkpoints(self) -> list[tuple[int, str]]:
        """Every checkpoint note stored, by size."""
        ...

    async def add_cosignature(self, size: int, witness: str, line: str) -> None:
        """Keep a witness's verified cosignature line of the checkpoint of ``size``."""
        ...

    async def cosignatures(self, since_size: int = 0) -> list[tuple[int, str, str]]:
        """``(size, witness member id, line)`` of every cosignature of checkpoints of at
        least ``since_size``, by size."""
        ...

    async def prune(self, before_ms: int) -> int:
        """Delete bodies and salts of records older than ``before_ms``; returns how many."""
        ...

    async def add_tiles(self, tiles: Sequence[Tile]) -> None:
        """Keep full hash tiles of the log's tree, all in one transaction; a tile already kept
        stays as it is (tiles are a function of the records, so every process writes the
        same)."""
        ...

    async def tiles(self, keys: Sequence[TileKey]) -> dict[TileKey, bytes]:
        """The kept tiles of ``keys`` (``(level, index)``); a key not kept is absent."""
        ...

    async def tile_count(self, level: int) -> int:
        """How many tiles of ``level`` are kept (they are kept in order: 0 up to this)."""
        ...

    async def drop_tiles(self) -> None:
        """Delete every kept tile (they are written afresh from the records)."""
        ...


Waiter = tuple[LogRecord, "asyncio.Future[Appended]"]


class GroupCommitWriter(abc.ABC):
    """Queues appends and commits them in batches, one transaction per batch, pipelined: while
    one batch commits (the database works, the event loop is free), the next batch is gathered
    and its entries (canonical body, salt, digest) are built for the indices it will most
    likely get. The commit checks the guess inside its transaction and rebuilds if another
    process took those indices first, so the sequence stays exact."""

    def __init__(self, *, max_batch: int = 2048) -> None:
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Waiter | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._next_index: int | None = None  # the index after the last committed batch
        self.commits = 0
        # told (records, seconds) of each group commit that went through (the app's metrics)
        self.observe_commit: Callable[[int, float], None] | None = None
        self._commit_started = 0.0
        self._committing = True  # did the last commit (or probe) go through?
        self._judged_at = -math.inf  # time.monotonic() of that last commit or probe

    @abc.abstractmethod
    async def _probe(self, now_ms: int) -> None:
        """Commit one tiny write (the probe row) in a transaction of its own; raise if the log
        cannot commit."""

    async def ready(self) -> bool:
        if not self.running():
            return False
        now = time.monotonic()
        if now - self._judged_at < 1.0:
            return self._committing
        self._judged_at = now
        try:
            await self._probe(int(time.time() * 1000))
        except Exception:  # any failure to commit: not ready, and say nothing more
            self._committing = False
        else:
            self._committing = True
        return self._committing

    @abc.abstractmethod
    async def _commit(
        self, records: Sequence[LogRecord], prepared: list[LogEntry] | None
    ) -> list[LogEntry]:
        """Commit ``records`` in one transaction at the next indices; return their entries.
        ``prepared`` are entries built for guessed indices: use them if the guess holds."""

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="consent-log-writer")

    def running(self) -> bool:
        return self._writer is not None and not self._writer.done()

    async def append(self, record: LogRecord) -> Appended:
        if not self.running():
            raise LogUnavailable("consent log is not running")
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((record, future))
        # No shield needed: a cancelled caller cancels only its future; the record, already
        # queued, is still committed (the writer skips futures that are done).
        return await future

    def _take(self, batch: list[Waiter], room: int) -> bool:
        """Move queued waiters into ``batch`` without waiting; True if a stop was queued."""
        while len(batch) < room and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    @staticmethod
    def _prepare(batch: Sequence[Waiter], first: int) -> list[LogEntry]:
        return [entry_for(record, first + i) for i, (record, _) in enumerate(batch)]

    async def _write_loop(self) -> None:
        in_flight: asyncio.Task[list[LogEntry]] | None = None
        flying: list[Waiter] = []
        stopping = False
        while True:
            batch: list[Waiter] = []
            if in_flight is None and not stopping:
                item = await self._queue.get()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            if not stopping:
                stopping = self._take(batch, self._max_batch)
            prepared: list[LogEntry] | None = None
            if in_flight is not None and self._next_index is not None and batch:
                guess = self._next_index + len(flying)
                prepared = self._prepare(batch, guess)  # overlaps the commit in flight
            if in_flight is not None:
                await self._settle(in_flight, flying)
                in_flight, flying = None, []
                if not stopping:  # what queued during the commit joins this batch
                    extra: list[Waiter] = []
                    stopping = self._take(extra, self._max_batch - len(batch))
                    if prepared is not None and extra:
                        prepared += self._prepare(extra, prepared[-1].index + 1)
                    batch += extra
            if batch:
                records = [record for record, _ in batch]
                self._commit_started = time.perf_counter()
                in_flight = asyncio.create_task(self._commit(records, prepared))
                flying = batch
            elif stopping:
                return

    async def _settle(self, task: asyncio.Task[list[LogEntry]], batch: list[Waiter]) -> None:
        try:
            entries = await task
        except Exception as exc:  # every waiter learns its record is not durable
            self._next_index = None  # unknown now: the next commit reads it afresh
            self._committing, self._judged_at = False, time.monotonic()
            for _, future in batch:
                if not future.done():
                    future.set_exception(LogUnavailable(f"commit failed: {exc}"))
            return
        self.commits += 1
        if self.observe_commit is not None:
            self.observe_commit(len(batch), time.perf_counter() - self._commit_started)
        self._committing, self._judged_at = True, time.monotonic()
        self._next_index = entries[-1].index + 1
        for entry, (_, future) in zip(entries, batch, strict=True):
            if not future.done():
                future.set_result(Appended(entry.index, entry.digest))

    async def drain(self) -> None:
        """Commit everything queued and stop accepting appends (before a final checkpoint)."""
        await self._stop_writer()

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._queue.put_nowait(None)  # the writer commits what is queued, then stops
            await self._writer
            self._writer = None
