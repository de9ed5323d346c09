"""The consent log's Merkle tree as C2SP ``tlog-tiles`` hash tiles: bounded memory at any size.

A *tile* at level ``L`` holds 256 consecutive hashes of tree nodes of height ``8 * L``: level 0
holds leaf hashes, level 1 the roots of the 256-leaf subtrees that the level-0 tiles are, and
so on. Every node of the tree is either one of those hashes or the root of at most 128 of them
in one tile, so the tiles alone answer every root and proof (as Go's ``sumdb/tlog`` and
Tessera do). A full tile never changes; the last tile of each level is *partial* until it
fills.

:class:`TiledTree` is the log's side: it keeps only the right edge in memory (each level's
partial tile, under 256 hashes), hands back each tile as it fills so the caller stores it, and
answers roots and proofs from the full tiles the caller reads back. Which tiles a proof needs
is known before it is computed (:meth:`TiledTree.tiles_for_inclusion` and friends), so the
caller reads them (asynchronously, from its store or a cache) and passes them in; nothing here
does I/O. Paths follow C2SP: ``tile/<L>/<N>[.p/<W>]`` with ``N`` in groups of three digits,
each but the last prefixed ``x`` (``x001/x234/067``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from trust.errors import ProofRequestError, TileMissing
from trust.merkle import (
    HASH_SIZE,
    MerkleTree,
    consistency_path,
    inclusion_path,
    tree_root,
)

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "TileKey",
    "TiledTree",
    "parse_tile_path",
    "tile_path",
]

TILE_HEIGHT: Final = 8
"""Levels of the tree one tile spans: C2SP fixes it at 8."""
TILE_WIDTH: Final = 1 << TILE_HEIGHT
"""Hashes in a full tile: 256."""
MAX_TILE_LEVEL: Final = 63 // TILE_HEIGHT
"""The highest level a tree of at most 2**63 leaves has: 7."""

TileKey = tuple[int, int]
"""``(level, index)`` of a tile."""


@dataclass(frozen=True, slots=True)
class Tile:
    """A full hash tile: 256 hashes of level ``level``'s tile ``index``, packed."""

    level: int
    index: int
    hashes: bytes

    @property
    def key(self) -> TileKey:
        return self.level, self.index


_GROUP = re.compile(r"(?:x[0-9]{3}/)*[0-9]{3}")


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """The C2SP path of a hash tile, ``tile/<L>/<N>[.p/<W>]`` (partial when ``width < 256``)."""
    digits = f"{index:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    path = f"tile/{level}/" + "/".join([f"x{g}" for g in groups[:-1]] + groups[-1:])
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def parse_tile_path(path: str) -> tuple[int, int, int]:
    """``(level, index, width)`` of a C2SP hash-tile path; only the canonical spelling of each
    is accepted (no leading zero groups, no ``.p/256``), so one tile has exactly one path."""
    if not path.startswith("tile/"):
        raise ProofRequestError("a tile path starts with tile/")
    level_text, _, rest = path[len("tile/") :].partition("/")
    if not level_text.isascii() or not level_text.isdigit() or len(level_text) > 1:
        raise ProofRequestError("a tile level is one digit")
    level = int(level_text)
    if level > MAX_TILE_LEVEL:
        raise ProofRequestError(f"a tile level is at most {MAX_TILE_LEVEL}")
    index_text, partial, width_text = rest.partition(".p/")
    if not _GROUP.fullmatch(index_text):
        raise ProofRequestError("a tile index is groups of three digits, x-prefixed but the last")
    index = int(index_text.replace("x", "").replace("/", ""))
    width = TILE_WIDTH
    if partial:
        if not width_text.isascii() or not width_text.isdigit() or len(width_text) > 3:
            raise ProofRequestError("a partial tile's width is a number from 1 to 255")
        width = int(width_text)
        if not 1 <= width < TILE_WIDTH:
            raise ProofRequestError("a partial tile's width is a number from 1 to 255")
    if tile_path(level, index, width) != path:
        raise ProofRequestError("not the canonical path of a tile")
    return level, index, width


def _locate(level: int, position: int) -> tuple[int, int, int, int]:
    """Where the node of height ``level`` at ``position`` is: ``(tile level, tile index,
    height inside the tile, position at that height inside the tile)``."""
    tile_level, height = divmod(level, TILE_HEIGHT)
    tile_index = (position << height) >> TILE_HEIGHT
    return tile_level, tile_index, height, position - (tile_index << (TILE_HEIGHT - height))


class TiledTree:
    """An append-only RFC 9162 tree of which only the right edge is held: each level's partial
    tile. Full tiles are handed out by :meth:`extend` and read back by the caller.

    Not thread-safe; :meth:`copy` is cheap (the edge is under 256 hashes a level), so a caller
    can grow a copy, store its new tiles, and only then adopt it.
    """

    __slots__ = ("_edge", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._edge: list[MerkleTree] = [MerkleTree()]  # level L's partial tile, as a tree

    @property
    def size(self) -> int:
        """Leaves appended so far."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def copy(self) -> TiledTree:
        twin = TiledTree()
        twin._size = self._size
        twin._edge = [edge.copy() for edge in self._edge]
        return twin

    @classmethod
    def restore(cls, size: int, full_tile_roots: Mapping[int, list[bytes]]) -> TiledTree:
        """The tree of ``size`` leaves (a multiple of 256) from the roots of the full tiles its
        right edge is made of: for each level ``L >= 1`` with a partial tile, the roots of the
        level ``L - 1`` tiles :meth:`edge_tiles` names, in order."""
        if size % TILE_WIDTH:
            raise ProofRequestError("a tree is restored at a multiple of 256 leaves")
        tree = cls()
        tree._size = size
        for level, keys in cls.edge_tiles(size).items():
            roots = full_tile_roots.get(level, [])
            if len(roots) != len(keys):
                raise TileMissing(f"level {level} of the edge needs {len(keys)} tile roots")
            while len(tree._edge) <= level:
                tree._edge.append(MerkleTree())
            tree._edge[level].extend(roots)
        return tree

    @staticmethod
    def edge_tiles(size: int) -> dict[int, list[TileKey]]:
        """For each level ``L >= 1`` of a tree of ``size`` leaves (a multiple of 256), the full
        tiles of level ``L - 1`` whose roots make up level ``L``'s partial tile."""
        edge: dict[int, list[TileKey]] = {}
        level = 1
        while size >> (TILE_HEIGHT * level):
            complete = size >> (TILE_HEIGHT * level)  # nodes of height 8L, each a tile's root
            start = complete - complete % TILE_WIDTH
            if complete > start:
                edge[level] = [(level - 1, i) for i in range(start, complete)]
            level += 1
        return edge

    def full_tiles(self, level: int) -> int:
        """How many tiles of ``level`` are full."""
        return self._size >> (TILE_HEIGHT * (level + 1))

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[Tile]:
        """Append leaf hashes; return every tile they filled, lowest level first within each
        fill, in the order they filled."""
        items = list(leaf_hashes)
        probe = MerkleTree()
        probe.extend(items)  # checks every hash before any is added (and raises on a bad one)
        packed = probe.leaves()
        filled: list[Tile] = []
        offset = 0
        while offset < len(packed):
            edge = self._edge[0]
            room = (TILE_WIDTH - edge.size) * HASH_SIZE
            chunk = packed[offset : offset + room]
            offset += len(chunk)
            edge.extend_packed(chunk)
            self._size += len(chunk) // HASH_SIZE
            level = 0
            while self._edge[level].size == TILE_WIDTH:
                full = self._edge[level]
                filled.append(Tile(level, self.full_tiles(level) - 1, full.leaves()))
                self._edge[level] = MerkleTree()
                if level + 1 == len(self._edge):
                    self._edge.append(MerkleTree())
                self._edge[level + 1].append(full.root())
                level += 1
        return filled

    def partial_tile(self, level: int) -> bytes:
        """The hashes of ``level``'s partial tile (fewer than 256; possibly none)."""
        return self._edge[level].leaves() if level < len(self._edge) else b""

    # What a computation needs, before it is done

    def tiles_for_root(self, size: int) -> set[TileKey]:
        return self._needs(lambda block: tree_root(block, size, self._size))

    def tiles_for_inclusion(self, index: int, size: int) -> set[TileKey]:
        return self._needs(lambda block: inclusion_path(block, index, size, self._size))

    def tiles_for_consistency(self, old_size: int, new_size: int) -> set[TileKey]:
        return self._needs(lambda block: consistency_path(block, old_size, new_size, self._size))

    def tiles_for_leaf(self, index: int) -> set[TileKey]:
        if not 0 <= index < self._size:
            raise ProofRequestError(f"index {index} is not below the tree size {self._size}")
        return self._full_tile_of(0, index)

    # The computations, given the full tiles they need (each as a MerkleTree of its hashes)

    def root(self, size: int, tiles: Mapping[TileKey, MerkleTree]) -> bytes:
        return tree_root(self._reader(tiles), size, self._size)

    def inclusion_proof(
        self, index: int, size: int, tiles: Mapping[TileKey, MerkleTree]
    ) -> list[bytes]:
        return inclusion_path(self._reader(tiles), index, size, self._size)

    def consistency_proof(
        self, old_size: int, new_size: int, tiles: Mapping[TileKey, MerkleTree]
    ) -> list[bytes]:
        return consistency_path(self._reader(tiles), old_size, new_size, self._size)

    def leaf(self, index: int, tiles: Mapping[TileKey, MerkleTree]) -> bytes:
        if not 0 <= index < self._size:
            raise ProofRequestError(f"index {index} is not below the tree size {self._size}")
        return self._reader(tiles)(0, index)

    # internals

    def _full_tile_of(self, level: int, position: int) -> set[TileKey]:
        tile_level, tile_index, _, _ = _locate(level, position)
        return set() if tile_index >= self.full_tiles(tile_level) else {(tile_level, tile_index)}

    def _needs(self, compute: Callable[[Callable[[int, int], bytes]], object]) -> set[TileKey]:
        needed: set[TileKey] = set()

        def record(level: int, position: int) -> bytes:
            needed.update(self._full_tile_of(level, position))
            return bytes(HASH_SIZE)

        compute(record)
        return needed

    def _reader(self, tiles: Mapping[TileKey, MerkleTree]) -> Callable[[int, int], bytes]:
        def block(level: int, position: int) -> bytes:
            tile_level, tile_index, height, inner = _locate(level, position)
            if tile_index < self.full_tiles(tile_level):
                tile = tiles.get((tile_level, tile_index))
                if tile is None:
                    raise TileMissing(f"tile {tile_path(tile_level, tile_index)} was not read")
            else:
                tile = self._edge[tile_level]
            return tile.node(height, inner)

        return block
