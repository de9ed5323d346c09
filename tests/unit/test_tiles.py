"""The tiled tree answers every root and proof exactly as the in-memory tree does, from its
tiles alone, at sizes across tile boundaries of two levels; and tile paths are C2SP's."""

from __future__ import annotations

import hashlib
import random

import pytest

from trust.errors import ProofRequestError, TileMissing
from trust.merkle import MerkleTree, verify_consistency, verify_inclusion
from trust.tiles import TILE_WIDTH, Tile, TiledTree, parse_tile_path, tile_path


def leaves(start: int, stop: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(start, stop)]


class Store:
    """What the log's store does with tiles: keeps each one it is handed, once."""

    def __init__(self) -> None:
        self.tiles: dict[tuple[int, int], bytes] = {}

    def keep(self, filled: list[Tile]) -> None:
        for tile in filled:
            assert len(tile.hashes) == TILE_WIDTH * 32
            assert self.tiles.setdefault(tile.key, tile.hashes) == tile.hashes
        self.tiles.update({t.key: t.hashes for t in filled})

    def read(self, keys: set[tuple[int, int]]) -> dict[tuple[int, int], MerkleTree]:
        return {key: MerkleTree.from_packed(self.tiles[key]) for key in keys}


def grown(sizes: list[int]) -> tuple[TiledTree, MerkleTree, Store]:
    tiled, plain, store = TiledTree(), MerkleTree(), Store()
    done = 0
    for size in sizes:
        batch = leaves(done, size)
        store.keep(tiled.extend(batch))
        plain.extend(batch)
        done = size
    return tiled, plain, store


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 0, 256, "tile/0/000"),
        (0, 1234067, 256, "tile/0/x001/x234/067"),
        (1, 5, 17, "tile/1/005.p/17"),
        (3, 999, 256, "tile/3/999"),
        (2, 1000, 1, "tile/2/x001/000.p/1"),
    ],
)
def test_tile_paths_are_c2sp_and_parse_back(level: int, index: int, width: int, path: str) -> None:
    assert tile_path(level, index, width) == path
    assert parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/0",  # not three digits
        "tile/0/x000/001",  # a leading zero group
        "tile/0/001.p/256",  # a full tile spelt as partial
        "tile/0/001.p/0",
        "tile/0/001.p/007",
        "tile/8/001",  # above the highest level
        "tile/00/001",
        "tile/entries/001",
        "tile/0/001/",
        "tile/0/x001",
        "tile/0/０01",
        "tile/0/001.p/",
        "../tile/0/001",
    ],
)
def test_a_non_canonical_tile_path_is_refused(path: str) -> None:
    with pytest.raises(ProofRequestError):
        parse_tile_path(path)


def test_filled_tiles_are_handed_out_once_each_lowest_level_first() -> None:
    tiled = TiledTree()
    assert tiled.extend(leaves(0, 255)) == []
    [first] = tiled.extend(leaves(255, 256))
    assert (first.level, first.index) == (0, 0)
    assert first.hashes == b"".join(leaves(0, 256))
    filled = tiled.extend(leaves(256, 256 * 256))
    assert [t.key for t in filled][-2:] == [(0, 255), (1, 0)]
    assert len(filled) == 256
    level_one = filled[-1].hashes
    assert level_one[:32] == MerkleTree(leaves(0, 256)).root()
    assert tiled.partial_tile(0) == b""
    assert tiled.partial_tile(1) == b""
    assert len(tiled.partial_tile(2)) == 32


@pytest.mark.parametrize(
    "sizes",
    [
        [1],
        [255, 256, 257],
        [3, 700, 1_300],
        [65_535, 65_536, 65_537],
        [66_000, 70_001],
    ],
)
def test_roots_and_proofs_from_tiles_match_the_in_memory_tree(sizes: list[int]) -> None:
    tiled, plain, store = grown(sizes)
    size = plain.size
    rng = random.Random(size)
    probes = {0, size - 1, size // 2, *(rng.randrange(size) for _ in range(40))}
    probes |= {i for i in (255, 256, 65_535, 65_536) if i < size}
    for m in sorted({1, size, *(rng.randrange(1, size + 1) for _ in range(20)), *probes}):
        if m > size or m == 0:
            continue
        assert tiled.root(m, store.read(tiled.tiles_for_root(m))) == plain.root(m)
        consistency = tiled.consistency_proof(
            m, size, store.read(tiled.tiles_for_consistency(m, size))
        )
        assert consistency == plain.consistency_proof(m, size)
        verify_consistency(m, size, plain.root(m), plain.root(), consistency)
    for index in sorted(probes):
        for at in {size, index + 1}:
            needed = tiled.tiles_for_inclusion(index, at)
            assert len(needed) <= 2 * 3  # a path touches few tiles
            proof = tiled.inclusion_proof(index, at, store.read(needed))
            assert proof == plain.inclusion_proof(index, at)
            leaf = tiled.leaf(index, store.read(tiled.tiles_for_leaf(index)))
            verify_inclusion(leaf, index, at, proof, plain.root(at))


def test_a_tree_restored_from_its_tiles_goes_on_exactly_as_the_original() -> None:
    tiled, plain, store = grown([65_536 + 3 * 256 + 40])
    at = tiled.size - tiled.size % TILE_WIDTH
    edge = TiledTree.edge_tiles(at)
    assert edge == {1: [(0, 256 + i) for i in range(3)], 2: [(1, 0)]}
    roots = {
        level: [MerkleTree.from_packed(store.tiles[key]).root() for key in keys]
        for level, keys in edge.items()
    }
    restored = TiledTree.restore(at, roots)
    store.keep(restored.extend(leaves(at, tiled.size + 300)))
    plain.extend(leaves(tiled.size, tiled.size + 300))
    size = plain.size
    assert restored.root(size, store.read(restored.tiles_for_root(size))) == plain.root()
    needed = restored.tiles_for_consistency(1000, size)
    assert restored.consistency_proof(1000, size, store.read(needed)) == plain.consistency_proof(
        1000, size
    )


def test_a_missing_tile_or_a_bad_request_is_named() -> None:
    tiled, _, store = grown([1_000])
    needed = tiled.tiles_for_inclusion(3, 1_000)
    assert needed
    with pytest.raises(TileMissing, match="tile/0/000"):
        tiled.inclusion_proof(3, 1_000, {})
    with pytest.raises(ProofRequestError, match="beyond"):
        tiled.tiles_for_inclusion(3, 1_001)
    with pytest.raises(ProofRequestError, match="not below"):
        tiled.tiles_for_leaf(1_000)
    with pytest.raises(ProofRequestError, match="multiple of 256"):
        TiledTree.restore(1_000, {})
    with pytest.raises(TileMissing):
        TiledTree.restore(1_024, {})
    with pytest.raises(ProofRequestError):
        tiled.extend([b"short"])
    assert tiled.size == 1_000  # a bad leaf adds nothing
    assert len(store.read(needed)) == len(needed)


def test_a_copy_grows_apart_from_its_original() -> None:
    tiled, _, _ = grown([300])
    twin = tiled.copy()
    twin.extend(leaves(300, 600))
    assert (tiled.size, twin.size) == (300, 600)
    assert len(tiled.partial_tile(0)) == 44 * 32
