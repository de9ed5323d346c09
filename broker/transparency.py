"""The tamper-evident view of the consent log: a Merkle tree over committed records, signed
checkpoints, and inclusion and consistency proofs.

Every broker process keeps the tree in memory, synced from the store (which alone assigns
indices), and signs checkpoints with the log's Ed25519 key: at least every N records or T
seconds, and at shutdown. Ed25519 is deterministic and the tree is a function of the records,
so two processes checkpointing the same size write the same note.

Everything that writes the log goes through :meth:`TransparencyLog.append` (append, then count
towards the next checkpoint); everything that reads it for proofs and exports goes through the
methods here, never through the store or the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import structlog

from broker.errors import LogGap
from broker.stores.consent_log import Appended, ConsentLog, StoredRecord
from trust.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from trust.errors import ProofRequestError
from trust.merkle import MerkleTree, leaf_hash
from trust.records import LogRecord, leaf_input

log = structlog.get_logger("broker.transparency")
_SYNC_CHUNK = 50_000


class TransparencyLog:
    def __init__(
        self,
        store: ConsentLog,
        signer: NoteSigner,
        *,
        every_records: int = 1000,
        every_seconds: float = 5.0,
        on_demand_every_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._signer = signer
        self.origin = signer.name
        self._tree = MerkleTree()
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._on_demand_every = on_demand_every_seconds
        self._latest_at = -math.inf  # clock() when the latest checkpoint was signed here
        self._clock = clock
        self._lock = asyncio.Lock()
        self._since_checkpoint = 0
        self._due = asyncio.Event()
        self.latest: tuple[int, str] | None = None
        self.signed = asyncio.Event()  # set at each new checkpoint (the witness client waits)
        self._cosigned_size = 0  # the largest checkpoint size with a cosignature, as last read
        self.observe_append: Callable[[float], None] | None = None  # seconds, per append
        self._appended_size = 0

    @property
    def known_size(self) -> int:
        """Records in the log as far as this process knows: its tree, or its latest append."""
        return max(self._tree.size, self._appended_size)

    def checkpoint_age_s(self) -> float:
        """Seconds since this process signed its latest checkpoint (NaN: not yet)."""
        return self._clock() - self._latest_at if math.isfinite(self._latest_at) else math.nan

    async def sync(self) -> int:
        """Bring the tree up to every record committed so far (by any process)."""
        async with self._lock:
            size = await self._store.size()
            while self._tree.size < size:
                stop = min(size, self._tree.size + _SYNC_CHUNK)
                digests = await self._store.digests(self._tree.size, stop)
                if len(digests) != stop - self._tree.size:
                    raise LogGap("committed indices are not contiguous")
                self._tree.extend(leaf_hash(leaf_input(d)) for d in digests)
            return self._tree.size

    async def start(self) -> None:
        await self.sync()
        stored = await self._store.checkpoints()
        self.latest = stored[-1] if stored else None

    async def checkpoint(self) -> tuple[int, str]:
        """Sign and store a checkpoint of the current size (if it grew); return the latest."""
        size = await self.sync()
        if self.latest is None or size > self.latest[0]:
            body = Checkpoint(self.origin, size, self._tree.root(size))
            note = sign_checkpoint(body, self._signer)
            await self._store.add_checkpoint(size, note, int(self._clock() * 1000))
            self.latest = (size, note)
            self._latest_at = self._clock()
            self._since_checkpoint = 0
            self.signed.set()
            log.info("checkpoint", size=size)
        return self.latest

    async def on_demand(self) -> tuple[int, str]:
        """A checkpoint for an anonymous caller: a fresh one at most once per
        ``on_demand_every_seconds``, else the latest. Public callers cannot make the log sign
        (and store, and export) a checkpoint per record."""
        if self.latest is not None and self._clock() - self._latest_at < self._on_demand_every:
            return self.latest
        return await self.checkpoint()

    async def append(self, record: LogRecord) -> Appended:
        """Durably append ``record`` (raises ``LogUnavailable``); a checkpoint falls due every N
        records."""
        started = time.perf_counter()
        appended = await self._store.append(record)
        if self.observe_append is not None:
            self.observe_append(time.perf_counter() - started)
        self._appended_size = max(self._appended_size, appended.index + 1)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._every_records:
            self._due.set()
        return appended

    @property
    def size(self) -> int:
        """The tree's size as of the last :meth:`sync`."""
        return self._tree.size

    def leaf(self, index: int) -> bytes:
        """The Merkle leaf hash at ``index`` (of the tree as of the last :meth:`sync`)."""
        return self._tree.leaf(index)

    async def records(self, start: int, stop: int) -> list[StoredRecord]:
        """Committed records ``start`` to ``stop - 1``, in order."""
        return await self._store.entries(start, stop)

    async def checkpoints(self) -> list[tuple[int, str]]:
        """Every checkpoint note stored, by size, with the witnesses' cosignature lines."""
        lines: dict[int, str] = {}
        for size, _, line in await self._store.cosignatures():
            lines[size] = lines.get(size, "") + line
        return [
            (size, note + lines.get(size, "")) for size, note in await self._store.checkpoints()
        ]

    async def add_cosignature(self, size: int, witness: str, line: str) -> None:
        """Keep a witness's verified cosignature line on the checkpoint of ``size``."""
        await self._store.add_cosignature(size, witness, line)
        self._cosigned_size = max(self._cosigned_size, size)

    async def latest_cosigned(self) -> tuple[int, str] | None:
        """The largest checkpoint any witness cosigned, with every cosignature line kept for it
        (by any process), or ``None``."""
        rows = await self._store.cosignatures(self._cosigned_size)
        if not rows:
            return None
        size = rows[-1][0]
        self._cosigned_size = size
        if self.latest is not None and self.latest[0] == size:
            note = self.latest[1]
        else:  # signed by another process: notes never change once stored
            note = dict(await self._store.checkpoints()).get(size, "")
        if not note:
            return None
        return size, note + "".join(line for s, _, line in rows if s == size)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), timeout=self._every_seconds)
            self._due.clear()
            try:
                await self.checkpoint()
            except Exception as exc:  # the next round tries again; checks are unaffected
                log.warning("checkpoint_failed", error=type(exc).__name__)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Raises ``ProofRequestError`` for a size beyond the log or an index outside it."""
        await self._within(size)
        return self._tree.inclusion_proof(index, size)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Raises ``ProofRequestError`` for sizes beyond the log or out of order."""
        await self._within(new_size)
        return self._tree.consistency_proof(old_size, new_size)

    async def _within(self, size: int) -> None:
        if size > self._tree.size and size > await self.sync():
            raise ProofRequestError(f"size {size} is beyond the log's size {self._tree.size}")
