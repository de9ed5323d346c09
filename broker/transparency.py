"""The tamper-evident view of the consent log: a Merkle tree over committed records, signed
checkpoints, and inclusion and consistency proofs.

Every broker process keeps the tree in memory, synced from the store (which alone assigns
indices), and signs checkpoints with the log's Ed25519 key: at least every N records or T
seconds, and at shutdown. Ed25519 is deterministic and the tree is a function of the records,
so two processes checkpointing the same size write the same note.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import structlog

from broker.stores.consent_log import ConsentLog
from trust.checkpoint import Checkpoint, NoteSigner, sign_checkpoint
from trust.merkle import MerkleTree, leaf_hash
from trust.records import leaf_input

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
        self.store = store
        self.signer = signer
        self.origin = signer.name
        self.tree = MerkleTree()
        self._every_records = every_records
        self._every_seconds = every_seconds
        self._on_demand_every = on_demand_every_seconds
        self._latest_at = -math.inf  # clock() when the latest checkpoint was signed here
        self._clock = clock
        self._lock = asyncio.Lock()
        self._since_checkpoint = 0
        self._due = asyncio.Event()
        self.latest: tuple[int, str] | None = None

    async def sync(self) -> int:
        """Bring the tree up to every record committed so far (by any process)."""
        async with self._lock:
            size = await self.store.size()
            while self.tree.size < size:
                stop = min(size, self.tree.size + _SYNC_CHUNK)
                digests = await self.store.digests(self.tree.size, stop)
                if len(digests) != stop - self.tree.size:
                    raise RuntimeError("consent log has a gap: committed indices not contiguous")
                self.tree.extend(leaf_hash(leaf_input(d)) for d in digests)
            return self.tree.size

    async def start(self) -> None:
        await self.sync()
        stored = await self.store.checkpoints()
        self.latest = stored[-1] if stored else None

    async def checkpoint(self) -> tuple[int, str]:
        """Sign and store a checkpoint of the current size (if it grew); return the latest."""
        size = await self.sync()
        if self.latest is None or size > self.latest[0]:
            body = Checkpoint(self.origin, size, self.tree.root(size))
            note = sign_checkpoint(body, self.signer)
            await self.store.add_checkpoint(size, note, int(self._clock() * 1000))
            self.latest = (size, note)
            self._latest_at = self._clock()
            self._since_checkpoint = 0
            log.info("checkpoint", size=size)
        return self.latest

    async def on_demand(self) -> tuple[int, str]:
        """A checkpoint for an anonymous caller: a fresh one at most once per
        ``on_demand_every_seconds``, else the latest. Public callers cannot make the log sign
        (and store, and export) a checkpoint per record."""
        if self.latest is not None and self._clock() - self._latest_at < self._on_demand_every:
            return self.latest
        return await self.checkpoint()

    def appended(self) -> None:
        """Called after each append: a checkpoint falls due every N records."""
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._every_records:
            self._due.set()

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
        await self.sync()
        return self.tree.inclusion_proof(index, size)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        await self.sync()
        return self.tree.consistency_proof(old_size, new_size)
