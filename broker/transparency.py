"""The tamper-evident view of the consent log: a Merkle tree over committed records, signed
checkpoints, inclusion and consistency proofs, and the tree's hash tiles.

The tree is kept as C2SP ``tlog-tiles`` (:mod:`trust.tiles`): each full tile of 256 hashes is
written to the store beside the records as the tree grows, and a process holds only the tree's
right edge (under 256 hashes a level) and a bounded cache of recently used tiles, so its memory
does not grow with the log. Every process syncs the tree from the store (which alone assigns
indices); tiles are a function of the records, so processes sharing a log write the same ones.
At start-up the tree is restored from the kept tiles and checked against the latest signed
checkpoint: records changed behind the broker's back stop it there.

Checkpoints are signed with the log's Ed25519 key: at least every N records or T seconds, and
at shutdown. Ed25519 is deterministic and the tree is a function of the records, so two
processes checkpointing the same size write the same note.

Everything that writes the log goes through :meth:`TransparencyLog.append` (append, then count
towards the next checkpoint); everything that reads it for proofs and exports goes through the
methods here, never through the store or the tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import structlog

from broker.errors import LogGap
from broker.stores.consent_log import Appended, ConsentLog, StoredRecord
from trust.checkpoint import (
    Checkpoint,
    NoteSigner,
    note_signatures,
    parse_checkpoint,
    sign_checkpoint,
)
from trust.errors import ProofRequestError
from trust.merkle import HASH_SIZE, MerkleTree, leaf_hash
from trust.records import LogRecord, leaf_input
from trust.tiles import TILE_WIDTH, TiledTree, TileKey, parse_tile_path

log = structlog.get_logger("broker.transparency")
_SYNC_CHUNK = 16_384  # 64 level-0 tiles a read: bounds what one sync step holds
TILE_CACHE = 256
"""Full tiles a process keeps in memory, most recently used first: 256 of them (each with its
interior nodes, 16 KB) are 4 MB, and a proof reads at most a few tiles a level."""
_CACHE_FILLED = 8  # of the tiles one sync fills, the newest are cached (proofs of new records)


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
        self._tree = TiledTree()  # replaced, never changed, so a snapshot stays consistent
        self._cache: OrderedDict[TileKey, MerkleTree] = OrderedDict()
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
        """Bring the tree up to every record committed so far (by any process), keeping each
        tile it fills in the store before the tree moves on."""
        async with self._lock:
            size = await self._store.size()
            while self._tree.size < size:
                stop = min(size, self._tree.size + _SYNC_CHUNK)
                digests = await self._store.digests(self._tree.size, stop)
                if len(digests) != stop - self._tree.size:
                    raise LogGap("committed indices are not contiguous")
                grown = self._tree.copy()
                filled = grown.extend(leaf_hash(leaf_input(d)) for d in digests)
                await self._store.add_tiles(filled)
                self._tree = grown
                for tile in filled[-_CACHE_FILLED:]:
                    self._remember(tile.key, MerkleTree.from_packed(tile.hashes))
            return self._tree.size

    async def _restore(self) -> None:
        """Start the tree at the last full level-0 tile kept, from the tiles alone; a log kept
        before tiles (or missing some) has its tiles written afresh from its records."""
        at = await self._store.tile_count(0) * TILE_WIDTH
        if at > await self._store.size():
            raise LogGap("the log's tiles cover more records than it holds")
        edge = TiledTree.edge_tiles(at)
        keys = [key for level in edge.values() for key in level]
        read = await self._store.tiles(keys)
        if len(read) == len(keys):
            roots = {
                level: [MerkleTree.from_packed(read[key]).root() for key in level_keys]
                for level, level_keys in edge.items()
            }
            self._tree = TiledTree.restore(at, roots)
        else:
            log.warning("log_tiles_rebuilt", missing=len(keys) - len(read))
            self._tree = TiledTree()

    async def _tiles(self, keys: Iterable[TileKey]) -> dict[TileKey, MerkleTree]:
        """The full tiles of ``keys``, from the cache or the store (then cached)."""
        found: dict[TileKey, MerkleTree] = {}
        wanted: list[TileKey] = []
        for key in keys:
            cached = self._cache.get(key)
            if cached is None:
                wanted.append(key)
            else:
                self._cache.move_to_end(key)
                found[key] = cached
        if wanted:
            read = await self._store.tiles(wanted)
            for key in wanted:
                data = read.get(key)
                if data is None or len(data) != TILE_WIDTH * HASH_SIZE:
                    raise LogGap(f"the log's hash tile {key} is missing or malformed")
                found[key] = self._remember(key, MerkleTree.from_packed(data))
        return found

    def _remember(self, key: TileKey, tile: MerkleTree) -> MerkleTree:
        self._cache[key] = tile
        self._cache.move_to_end(key)
        while len(self._cache) > TILE_CACHE:
            self._cache.popitem(last=False)
        return tile

    async def _root(self, size: int) -> bytes:
        tree = self._tree
        return tree.root(size, await self._tiles(tree.tiles_for_root(size)))

    async def start(self) -> None:
        """Restore the tree from its tiles, read the records past them, and check the tree
        makes the latest signed checkpoint. Tiles that do not are written afresh from every
        record (tiles are derived, records are the log); records that still do not stop the
        broker (``LogGap``), and no tile is left built from them. Records under intact tiles are
        not re-read here (a start stays cheap at millions of records): the auditor's export
        check reads every one."""
        await self._restore()
        await self.sync()
        stored = await self._store.checkpoints()
        self.latest = stored[-1] if stored else None
        if await self._makes_latest():
            return
        log.warning("log_tiles_rebuilt", reason="not the tree of the latest checkpoint")
        await self._rebuild()
        if not await self._makes_latest():
            await self._store.drop_tiles()
            raise LogGap(
                "the log's records do not make the tree of its latest signed checkpoint: "
                "they were changed behind the broker"
            )

    async def _rebuild(self) -> None:
        await self._store.drop_tiles()
        self._tree = TiledTree()
        self._cache.clear()
        await self.sync()

    async def _makes_latest(self) -> bool:
        if self.latest is None:
            return True
        signed = parse_checkpoint(note_signatures(self.latest[1])[0])
        if signed.size > self._tree.size:
            return False
        return await self._root(signed.size) == signed.root_hash

    async def checkpoint(self) -> tuple[int, str]:
        """Sign and store a checkpoint of the current size (if it grew); return the latest."""
        size = await self.sync()
        if self.latest is None or size > self.latest[0]:
            body = Checkpoint(self.origin, size, await self._root(size))
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

    async def leaf(self, index: int) -> bytes:
        """The Merkle leaf hash at ``index`` (of the tree as of the last :meth:`sync`)."""
        tree = self._tree
        return tree.leaf(index, await self._tiles(tree.tiles_for_leaf(index)))

    async def tile(self, path: str) -> bytes | None:
        """The hash tile at C2SP ``path`` (``tile/<L>/<N>[.p/<W>]``), or ``None`` if the tree
        does not have it yet. A partial tile of width W is the first W hashes of its tile,
        full or not, so it never changes once served. Raises ``ProofRequestError`` for a path
        that is not a tile's."""
        level, index, width = parse_tile_path(path)
        for attempt in range(2):
            tree = self._tree
            full_tiles = tree.full_tiles(level)
            if index < full_tiles:
                full = (await self._tiles([(level, index)]))[(level, index)]
                return full.leaves()[: width * HASH_SIZE]
            partial = tree.partial_tile(level)
            if index == full_tiles and width < TILE_WIDTH and len(partial) >= width * HASH_SIZE:
                return partial[: width * HASH_SIZE]
            if attempt == 0:
                await self.sync()  # another process may have appended
        return None

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

    async def entry_bundle(self, path: str) -> bytes | None:
        """The C2SP entry bundle at ``path`` (``tile/entries/<N>[.p/<W>]``): each record's leaf
        data (what the leaf hash is the RFC 9162 hash of: a prefix and the salted digest,
        nothing of the record itself) as a big-endian 16-bit length and the bytes; ``None``
        if the tree does not have them yet."""
        _, index, width = parse_tile_path("tile/0/" + path.removeprefix("tile/entries/"))
        start = index * TILE_WIDTH
        if start + width > self._tree.size and start + width > await self.sync():
            return None
        digests = await self._store.digests(start, start + width)
        if len(digests) != width:
            raise LogGap("committed indices are not contiguous")
        entries = [leaf_input(digest) for digest in digests]
        return b"".join(len(entry).to_bytes(2, "big") + entry for entry in entries)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Raises ``ProofRequestError`` for a size beyond the log or an index outside it."""
        await self._within(size)
        tree = self._tree
        tiles = await self._tiles(tree.tiles_for_inclusion(index, size))
        return tree.inclusion_proof(index, size, tiles)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Raises ``ProofRequestError`` for sizes beyond the log or out of order."""
        await self._within(new_size)
        tree = self._tree
        tiles = await self._tiles(tree.tiles_for_consistency(old_size, new_size))
        return tree.consistency_proof(old_size, new_size, tiles)

    async def _within(self, size: int) -> None:
        if size > self._tree.size and size > await self.sync():
            raise ProofRequestError(f"size {size} is beyond the log's size {self._tree.size}")
