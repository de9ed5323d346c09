"""The consent log's Merkle tree: RFC 6962 / RFC 9162 hashing, roots and proofs, with SHA-256.

Two halves:

- :class:`MerkleTree`, the log's side: an append-only in-memory tree that answers the root of
  any earlier size and the inclusion and consistency proofs between any two sizes.
- :func:`verify_inclusion` and :func:`verify_consistency`, the auditor's side: pure checks of
  a proof against roots the auditor already trusts (from signed checkpoints). They return
  ``None`` or raise :class:`~trust.errors.LogProofError`; nothing else.

The tree keeps one byte array per level: level 0 holds the leaf hashes, level ``k`` the hash of
every complete, aligned block of ``2**k`` leaves. A complete block never changes once its last
leaf is appended, so those arrays serve every historical size too: the root of the first ``n``
leaves is the right-fold of the complete blocks that tile ``[0, n)`` (one per set bit of
``n``), and every proof element is such a tiling of an aligned range. Roots and proofs cost
O(log n) hash operations; an append costs one leaf write plus, amortised, one node hash.
Hashes are stored packed, 32 bytes each, so a million leaves take about 64 MB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from trust.errors import LogProofError, ProofRequestError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "BlockReader",
    "MerkleTree",
    "consistency_path",
    "inclusion_path",
    "leaf_hash",
    "node_hash",
    "root_from_leaves",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""The root of the empty tree, MTH({}) = SHA-256() (RFC 9162 §2.1.1)."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one leaf's data."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    _require_hash(left, "left child hash", ProofRequestError)
    _require_hash(right, "right child hash", ProofRequestError)
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


_sha256 = hashlib.sha256


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(_NODE_PREFIX + left + right).digest()


def _require_hash(value: object, what: str, error: type[LogProofError]) -> None:
    if not isinstance(value, bytes):
        raise error(f"{what} must be {HASH_SIZE} bytes, got a {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise error(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def _require_count(value: object, what: str, error: type[LogProofError]) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{what} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise error(f"{what} must not be negative, got {value}")
    return value


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162 §2.1.1: the largest power of two strictly smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(hashes: Iterable[bytes]) -> bytes:
    """MTH(D[n]) computed directly from the leaf hashes, level by level.

    Independent of :class:`MerkleTree`'s block arithmetic, so each checks the other; it is
    also what an offline verifier uses to rebuild a root from a full export. Pairing each
    level from the left and carrying an odd last node up unchanged gives exactly the
    RFC 9162 split at the largest power of two below ``n``.
    """
    items = list(hashes)
    if set(map(type, items)) - {bytes} or set(map(len, items)) - {HASH_SIZE}:
        for position, value in enumerate(items):
            _require_hash(value, f"leaf hash {position}", ProofRequestError)
    if not items:
        return EMPTY_ROOT
    step = 2 * HASH_SIZE
    level = b"".join(items)
    while len(level) > HASH_SIZE:
        packed = memoryview(level)
        even = len(level) - len(level) % step
        paired = b"".join(
            [_sha256(_NODE_PREFIX + packed[i : i + step]).digest() for i in range(0, even, step)]
        )
        level = paired + level[even:]  # an odd last node moves up unchanged
    return level


class MerkleTree:
    """An append-only RFC 9162 Merkle tree of leaf hashes, held in memory.

    Not thread-safe: an append updates several levels, so the owner serialises access.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        # _levels[k] packs the hashes of aligned blocks of 2**k leaves, 32 bytes each; the
        # invariant is len(_levels[k + 1]) == (len(_levels[k]) // HASH_SIZE) // 2 * HASH_SIZE.
        self._levels: list[bytearray] = [bytearray()]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return len(self._levels[0]) // HASH_SIZE

    def __len__(self) -> int:
        return self.size

    def append(self, leaf_hash: bytes) -> int:
        """Append one leaf hash (already ``leaf_hash(data)``) and return its index."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            _require_hash(leaf_hash, "leaf hash", ProofRequestError)
        levels = self._levels
        index = len(levels[0]) // HASH_SIZE
        levels[0] += leaf_hash
        # Each trailing zero bit of the new count is one more block just completed.
        count = index + 1
        level = 0
        while count & 1 == 0:
            parent_hash = _sha256(_NODE_PREFIX + levels[level][-2 * HASH_SIZE :]).digest()
            level += 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += parent_hash
            count >>= 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes; all are checked before any is added."""
        items = list(leaf_hashes)
        if not items:
            return
        # C-speed screening; the slow loop only runs to name the culprit.
        if set(map(type, items)) - {bytes} or set(map(len, items)) - {HASH_SIZE}:
            for position, value in enumerate(items):
                _require_hash(value, f"leaf hash {position}", ProofRequestError)
        self._levels[0] += b"".join(items)
        self._hash_up()

    @classmethod
    def from_packed(cls, packed: bytes) -> MerkleTree:
        """A tree of the leaf hashes packed in ``packed`` (32 bytes each), as a hash tile
        holds them."""
        tree = cls()
        tree.extend_packed(packed)
        return tree

    def extend_packed(self, packed: bytes) -> None:
        """Append the leaf hashes packed in ``packed`` (32 bytes each)."""
        if len(packed) % HASH_SIZE:
            raise ProofRequestError(f"packed leaf hashes must be a multiple of {HASH_SIZE} bytes")
        self._levels[0] += packed
        self._hash_up()

    def copy(self) -> MerkleTree:
        """An independent tree of the same leaves (no hashing: the levels are copied)."""
        twin = MerkleTree()
        twin._levels = [bytearray(level) for level in self._levels]
        return twin

    def _hash_up(self) -> None:
        """Hash every block that the leaves appended last completed."""
        levels = self._levels
        step = 2 * HASH_SIZE
        level = 0
        while True:
            if level + 1 == len(levels):
                levels.append(bytearray())
            child, parent = levels[level], levels[level + 1]
            have = len(parent) // HASH_SIZE
            wanted = len(child) // step
            if have == wanted:
                break
            pending = memoryview(bytes(child[have * step : wanted * step]))
            parent += b"".join(
                [
                    _sha256(_NODE_PREFIX + pending[i : i + step]).digest()
                    for i in range(0, len(pending), step)
                ]
            )
            level += 1

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        _check_index(index, self.size)
        return self._block(0, index)

    def leaves(self) -> bytes:
        """Every leaf hash, packed 32 bytes each, in order."""
        return bytes(self._levels[0])

    def node(self, level: int, position: int) -> bytes:
        """The hash of the complete, aligned block of ``2**level`` leaves at ``position``
        (leaves ``position * 2**level`` onwards), which must lie inside the tree."""
        if (position + 1) << level > self.size:
            raise ProofRequestError(f"block {position} of level {level} is not complete")
        return self._block(level, position)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all of them)."""
        return tree_root(self._block, self.size if size is None else size, self.size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1, nearest sibling first."""
        return inclusion_path(self._block, index, size, self.size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1, lowest subtree first.

        Empty when ``old_size`` is 0 or equals ``new_size``: the empty tree and a tree itself
        are prefixes of every later tree with nothing to prove.
        """
        return consistency_path(self._block, old_size, new_size, self.size)

    def _block(self, level: int, position: int) -> bytes:
        start = position * HASH_SIZE
        return bytes(self._levels[level][start : start + HASH_SIZE])


# The proofs as functions of a block reader, ``block(level, position)``: the hash of the
# complete, aligned block of ``2**level`` leaves at ``position``. :class:`MerkleTree` reads its
# levels; ``trust.tiles`` reads hash tiles. Every range RFC 9162's recursion visits begins at a
# multiple of a power of two at least as large as itself, so it is tiled by complete aligned
# blocks, one per set bit of its width.

BlockReader = Callable[[int, int], bytes]


def _check_size(size: int, what: str, tree_size: int) -> None:
    _require_count(size, what, ProofRequestError)
    if size > tree_size:
        raise ProofRequestError(f"{what} {size} is beyond the tree's size {tree_size}")


def _check_index(index: int, size: int) -> None:
    _require_count(index, "index", ProofRequestError)
    if index >= size:
        raise ProofRequestError(f"index {index} is not below the tree size {size}")


def _range_hash(block: BlockReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for ``start < end`` with ``start`` aligned to the largest block."""
    width = end - start
    blocks: list[bytes] = []
    position = start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            blocks.append(block(level, position >> level))
            position += 1 << level
    result = blocks.pop()
    while blocks:
        result = _node(blocks.pop(), result)
    return result


def tree_root(block: BlockReader, size: int, tree_size: int) -> bytes:
    """MTH of the first ``size`` leaves of a tree of ``tree_size`` leaves read by ``block``."""
    _check_size(size, "size", tree_size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hash(block, 0, size)


def inclusion_path(block: BlockReader, index: int, size: int, tree_size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, nearest sibling first."""
    _check_size(size, "size", tree_size)
    _check_index(index, size)
    path: list[bytes] = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _largest_power_of_two_below(high - low)
        if index < middle:
            path.append(_range_hash(block, middle, high))
            high = middle
        else:
            path.append(_range_hash(block, low, middle))
            low = middle
    path.reverse()
    return path


def consistency_path(
    block: BlockReader, old_size: int, new_size: int, tree_size: int
) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1, lowest subtree first."""
    _check_size(old_size, "old_size", tree_size)
    _check_size(new_size, "new_size", tree_size)
    if old_size > new_size:
        raise ProofRequestError(
            f"old_size {old_size} is larger than new_size {new_size}: "
            "a consistency proof only runs forward"
        )
    proof: list[bytes] = []
    if old_size == 0 or old_size == new_size:
        return proof
    # SUBPROOF(m, D[low:high], whole_old_tree_is_a_known_root), unrolled.
    low, high, m, known = 0, new_size, old_size, True
    while True:
        n = high - low
        if m == n:
            if not known:
                proof.append(_range_hash(block, low, high))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(_range_hash(block, low + k, high))
            high = low + k
        else:
            proof.append(_range_hash(block, low, low + k))
            low += k
            m -= k
            known = False
    proof.reverse()
    return proof


def _check_proof_hashes(proof: Sequence[bytes], what: str) -> None:
    if isinstance(proof, bytes | bytearray | str):
        raise LogProofError(f"{what} must be a sequence of hashes, not {type(proof).__name__}")
    for position, element in enumerate(proof):
        _require_hash(element, f"{what} element {position}", LogProofError)


def _inclusion_proof_shape(index: int, size: int) -> tuple[int, int]:
    """(inner, border): the path below and along the right border where index and size-1 part."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` whose root is ``root``.

    RFC 9162 §2.1.3.2. Returns ``None`` on success and raises
    :class:`~trust.errors.LogProofError` on any failure.
    """
    _require_count(index, "index", LogProofError)
    _require_count(size, "size", LogProofError)
    if index >= size:
        raise LogProofError(f"index {index} is not below the tree size {size}")
    _require_hash(leaf_hash, "leaf hash", LogProofError)
    _require_hash(root, "root hash", LogProofError)
    _check_proof_hashes(proof, "inclusion proof")
    inner, border = _inclusion_proof_shape(index, size)
    if len(proof) != inner + border:
        raise LogProofError(
            f"wrong inclusion proof length for index {index} in size {size}: "
            f"got {len(proof)}, want {inner + border}"
        )

    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise LogProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise LogProofError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` and ``old_root`` is a prefix of the newer one.

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. Equal sizes need an empty proof and
    equal roots; from size 0 the proof is empty and the old root must be the empty root.
    Returns ``None`` on success and raises :class:`~trust.errors.LogProofError` otherwise.
    """
    _require_count(old_size, "old_size", LogProofError)
    _require_count(new_size, "new_size", LogProofError)
    if old_size > new_size:
        raise LogProofError(
            f"old_size {old_size} is larger than new_size {new_size}: the log cannot shrink"
        )
    _require_hash(old_root, "old root hash", LogProofError)
    _require_hash(new_root, "new root hash", LogProofError)
    _check_proof_hashes(proof, "consistency proof")

    if old_size == new_size:
        if proof:
            raise LogProofError("wrong consistency proof length for equal sizes: want 0")
        if old_root != new_root:
            raise LogProofError(f"two different roots for the same size {old_size}")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise LogProofError("the root of the empty tree is not the empty root")
        return
    if old_size == 0:
        if proof:
            raise LogProofError("wrong consistency proof length from the empty tree: want 0")
        if old_root != EMPTY_ROOT:
            raise LogProofError("the root of the empty tree is not the empty root")
        return

    inner, border = _inclusion_proof_shape(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    seeded = old_size == 1 << shift  # old tree is one complete subtree: its root seeds
    want = inner - shift + border + (0 if seeded else 1)
    if len(proof) != want:
        raise LogProofError(
            f"wrong consistency proof length from size {old_size} to {new_size}: "
            f"got {len(proof)}, want {want}"
        )

    path = [old_root, *proof] if seeded else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LogProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("consistency proof is shorter than the path to the root")
    if fr != old_root:
        raise LogProofError(f"consistency proof does not reproduce the root of size {old_size}")
    if sr != new_root:
        raise LogProofError(f"consistency proof does not reproduce the root of size {new_size}")
