"""The consent log's Merkle tree against RFC 6962 / RFC 9162 and against itself.

Independent checks, in order of authority:

- the reference vectors of the Go implementations (transparency-dev/merkle ``testonly`` and
  ``proof/verify_test.go``, inherited from certificate-transparency-go): leaf inputs, every
  root of sizes 0..8, and known inclusion and consistency proofs;
- values pinned from pymerkle 7.0.0 (an unrelated Python implementation, not a dependency):
  roots of larger trees and the inclusion paths of 305 (index, size) pairs;
- :func:`root_from_leaves` (level-by-level pairing) against :class:`MerkleTree` (block
  arithmetic) for every size up to 70 and some larger ones;
- exhaustive proof round trips for small trees, each also checked to fail under tampering.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

import pytest

from trust.errors import LogProofError, ProofRequestError, TrustError
from trust.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle testonly/constants.go: LeafInputs() and RootHashes().
RFC_LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]

# transparency-dev/merkle proof/verify_test.go: inclusionProofs (1-based leaf there,
# 0-based index here) and consistencyProofs.
RFC_INCLUSION_PROOFS: list[tuple[int, int, list[str]]] = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
RFC_CONSISTENCY_PROOFS: list[tuple[int, int, list[str]]] = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Pinned from pymerkle 7.0.0 (InmemoryTree, sha256, RFC 6962 prefixes) over the leaf data
# b"axb consent log leaf %d" for i in range(5000); see pinned_leaves().
PYMERKLE_ROOTS = {
    1000: "fa0db7beca672af812bd032af5d54719cf1348ec99cc84724f0dbec42820690a",
    1023: "deef8ca90e922923fd2aeb12a6ba90dc5d988a31080e2fb85299a7c9358f4486",
    1024: "c8188602321c188b4cb1bfb8b10fafb6cf71ae6adeb3a9e3d197cbe0da8579eb",
    1025: "798091d75e3fe01362b6f696280c9bf10295b91dca7239c887c06ecb9806fce7",
    2047: "6bc1eddd914f113fee76c47a86a42f7edbba568c8702ac62faa66351cee21f9d",
    4096: "b270e68e7be199aa5795749d7715393ed0bed4642ae1a84e38cb73e73930a9a6",
    4097: "4376196f3438f3efc7812cb3b519a7653853eef268c7f9e02ee3b7494046f26f",
    5000: "c4b1fccd515b74ac190039040c8b73c70adcfd47e38de47d107559aaa47801af",
}
# SHA-256 over the concatenated inclusion paths of pinned_inclusion_pairs(), from pymerkle.
PYMERKLE_INCLUSION_DIGEST = "d32559792d964dcea2dfafea46d14e1dcc4f08048802905ab4d094ff09a42cd1"

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def leaves(n: int, tag: str = "leaf") -> list[bytes]:
    return [leaf_hash(f"{tag}-{i}".encode()) for i in range(n)]


def pinned_leaves() -> list[bytes]:
    return [leaf_hash(b"axb consent log leaf %d" % i) for i in range(5000)]


def pinned_inclusion_pairs() -> list[tuple[int, int]]:
    rng = random.Random(6962)
    pairs = []
    for _ in range(300):
        size = rng.randint(1, 5000)
        pairs.append((rng.randint(0, size - 1), size))
    return [*pairs, (0, 5000), (4999, 5000), (4096, 4097), (1023, 1025), (1234, 4097)]


def flip(value: bytes, bit: int = 3) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


def rejects(check: Callable[..., None], *args: object) -> bool:
    try:
        check(*args)
    except LogProofError:
        return True
    return False


RFC_TREE = MerkleTree(leaf_hash(data) for data in RFC_LEAF_INPUTS)
SMALL_LEAVES = leaves(70)
SMALL_TREE = MerkleTree(SMALL_LEAVES)


# known answers


def test_hash_functions_use_rfc6962_domain_separation() -> None:
    assert leaf_hash(b"") == RFC_ROOTS[1]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT == RFC_ROOTS[0]


def test_roots_match_the_rfc6962_reference_vectors() -> None:
    for size, expected in enumerate(RFC_ROOTS):
        assert RFC_TREE.root(size) == expected, size
        assert root_from_leaves(leaf_hash(d) for d in RFC_LEAF_INPUTS[:size]) == expected, size
    assert RFC_TREE.root() == RFC_ROOTS[8]


@pytest.mark.parametrize(("index", "size", "expected"), RFC_INCLUSION_PROOFS)
def test_inclusion_proofs_match_the_reference_vectors(
    index: int, size: int, expected: list[str]
) -> None:
    proof = RFC_TREE.inclusion_proof(index, size)
    assert [p.hex() for p in proof] == expected
    verify_inclusion(leaf_hash(RFC_LEAF_INPUTS[index]), index, size, proof, RFC_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "expected"), RFC_CONSISTENCY_PROOFS)
def test_consistency_proofs_match_the_reference_vectors(
    old: int, new: int, expected: list[str]
) -> None:
    proof = RFC_TREE.consistency_proof(old, new)
    assert [p.hex() for p in proof] == expected
    verify_consistency(old, new, RFC_ROOTS[old], RFC_ROOTS[new], proof)


def test_roots_and_inclusion_paths_match_pymerkle() -> None:
    tree = MerkleTree(pinned_leaves())
    for size, expected in PYMERKLE_ROOTS.items():
        assert tree.root(size).hex() == expected, size
    digest = hashlib.sha256()
    for index, size in pinned_inclusion_pairs():
        for element in tree.inclusion_proof(index, size):
            digest.update(element)
    assert digest.hexdigest() == PYMERKLE_INCLUSION_DIGEST


# roots


def test_every_root_up_to_70_matches_root_from_leaves() -> None:
    grown = MerkleTree()
    for size in range(71):
        expected = root_from_leaves(SMALL_LEAVES[:size])
        assert SMALL_TREE.root(size) == expected, size
        assert grown.root() == expected, size
        if size < 70:
            assert grown.append(SMALL_LEAVES[size]) == size
    assert MerkleTree().root() == EMPTY_ROOT == root_from_leaves([])


@pytest.mark.parametrize("seed", range(4))
def test_random_larger_trees_agree_however_they_were_built(seed: int) -> None:
    rng = random.Random(seed)
    hashes = leaves(rng.randint(100, 3000), tag=f"seed{seed}")
    appended = MerkleTree()
    for value in hashes:
        appended.append(value)
    extended = MerkleTree()
    cut = rng.randint(0, len(hashes))
    extended.extend(hashes[:cut])
    extended.extend(iter(hashes[cut:]))
    assert appended.size == extended.size == len(hashes)
    for size in [len(hashes), *(rng.randint(0, len(hashes)) for _ in range(10))]:
        expected = root_from_leaves(hashes[:size])
        assert appended.root(size) == extended.root(size) == expected, size
    index = rng.randrange(len(hashes))
    assert appended.inclusion_proof(index, len(hashes)) == extended.inclusion_proof(
        index, len(hashes)
    )


def test_historical_roots_survive_later_appends() -> None:
    tree = MerkleTree(SMALL_LEAVES[:13])
    before = [tree.root(size) for size in range(14)]
    tree.extend(SMALL_LEAVES[13:])
    assert [tree.root(size) for size in range(14)] == before
    assert tree.leaf(12) == SMALL_LEAVES[12]
    assert len(tree) == 70


# inclusion: every proof of every small tree verifies, and every tampering is caught


def inclusion_tamperings(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> list[tuple[str, Callable[[], None]]]:
    def probe(li: bytes, i: int, s: int, p: Sequence[bytes], r: bytes) -> Callable[[], None]:
        return lambda: verify_inclusion(li, i, s, p, r)

    probes = [
        ("index - 1", probe(leaf, index - 1, size, proof, root)),
        ("index + 1", probe(leaf, index + 1, size, proof, root)),
        ("index ^ 2", probe(leaf, index ^ 2, size, proof, root)),
        ("size * 2", probe(leaf, index, size * 2, proof, root)),
        ("size // 2", probe(leaf, index, size // 2, proof, root)),
        ("wrong leaf", probe(flip(leaf), index, size, proof, root)),
        ("wrong root", probe(leaf, index, size, proof, flip(root))),
        ("empty root", probe(leaf, index, size, proof, EMPTY_ROOT)),
        ("other root", probe(leaf, index, size, proof, SOME_HASH)),
        ("trailing root", probe(leaf, index, size, [*proof, root], root)),
        ("trailing garbage", probe(leaf, index, size, [*proof, b""], root)),
        ("preceding root", probe(leaf, index, size, [root, *proof], root)),
        ("short leaf", probe(leaf[:31], index, size, proof, root)),
    ]
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = flip(changed[position])
        probes.append((f"proof[{position}] flipped", probe(leaf, index, size, changed, root)))
    if proof:
        probes.append(("truncated", probe(leaf, index, size, proof[:-1], root)))
    if proof[::-1] != proof:
        probes.append(("reversed", probe(leaf, index, size, proof[::-1], root)))
    if len(proof) > 1:
        inserted = [proof[0], SOME_HASH, *proof[1:]]
        probes.append(("inserted", probe(leaf, index, size, inserted, root)))
    return probes


@pytest.mark.parametrize("size", range(1, 41))
def test_every_inclusion_proof_verifies_and_tampering_fails(size: int) -> None:
    root = SMALL_TREE.root(size)
    for index in range(size):
        leaf = SMALL_LEAVES[index]
        proof = SMALL_TREE.inclusion_proof(index, size)
        verify_inclusion(leaf, index, size, proof, root)
        accepted = [
            name
            for name, check in inclusion_tamperings(leaf, index, size, proof, root)
            if not rejects(check)
        ]
        assert accepted == [], f"index {index} size {size}: accepted {accepted}"
        # Every other leaf of the tree fails at this index.
        other = SMALL_LEAVES[(index + 1) % size] if size > 1 else SOME_HASH
        assert rejects(verify_inclusion, other, index, size, proof, root)
        # A proof names no size of its own: one path can serve two sizes (index 0 of 3 and
        # of 4 leaves), and the signed checkpoint is what binds a size to its root. So a
        # neighbouring size is tampering only together with that size's real root.
        for near in (size - 1, size + 1):
            if index < near and proof != SMALL_TREE.inclusion_proof(index, near):
                near_root = SMALL_TREE.root(near)
                assert rejects(verify_inclusion, leaf, index, near, proof, near_root)


# consistency: every proof between small trees verifies, and every tampering is caught


def consistency_tamperings(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> list[tuple[str, Callable[[], None]]]:
    def probe(m: int, n: int, r1: bytes, r2: bytes, p: Sequence[bytes]) -> Callable[[], None]:
        return lambda: verify_consistency(m, n, r1, r2, p)

    probes = [
        ("old - 1", probe(old - 1, new, old_root, new_root, proof)),
        ("old + 1", probe(old + 1, new, old_root, new_root, proof)),
        ("old ^ 2", probe(old ^ 2, new, old_root, new_root, proof)),
        ("new * 2", probe(old, new * 2, old_root, new_root, proof)),
        ("new // 2", probe(old, new // 2, old_root, new_root, proof)),
        ("wrong old root", probe(old, new, flip(old_root), new_root, proof)),
        ("wrong new root", probe(old, new, old_root, flip(new_root), proof)),
        ("swapped roots", probe(old, new, new_root, old_root, proof)),
        ("empty proof", probe(old, new, old_root, new_root, [])),
        ("trailing garbage", probe(old, new, old_root, new_root, [*proof, b""])),
        ("trailing old root", probe(old, new, old_root, new_root, [*proof, old_root])),
        ("trailing new root", probe(old, new, old_root, new_root, [*proof, new_root])),
        ("preceding old root", probe(old, new, old_root, new_root, [old_root, *proof])),
        ("preceding new root", probe(old, new, old_root, new_root, [new_root, *proof])),
        ("truncated", probe(old, new, old_root, new_root, proof[:-1])),
    ]
    if proof:
        probes.append(
            ("preceding proof[0]", probe(old, new, old_root, new_root, [proof[0], *proof]))
        )
    for position in range(len(proof)):
        changed = list(proof)
        changed[position] = flip(changed[position], bit=4)
        probes.append((f"proof[{position}] flipped", probe(old, new, old_root, new_root, changed)))
    return probes


@pytest.mark.parametrize("new", range(1, 41))
def test_every_consistency_proof_verifies_and_tampering_fails(new: int) -> None:
    new_root = SMALL_TREE.root(new)
    for old in range(1, new + 1):
        old_root = SMALL_TREE.root(old)
        proof = SMALL_TREE.consistency_proof(old, new)
        verify_consistency(old, new, old_root, new_root, proof)
        if old == new:
            assert proof == []
            assert rejects(verify_consistency, old, new, old_root, new_root, [old_root])
            assert rejects(verify_consistency, old, new, old_root, flip(new_root), proof)
            continue
        accepted = [
            name
            for name, check in consistency_tamperings(old, new, old_root, new_root, proof)
            if not rejects(check)
        ]
        assert accepted == [], f"{old} -> {new}: accepted {accepted}"
        # As with inclusion, a neighbouring size counts only with its own real root.
        for near_old, near_new in ((old - 1, new), (old + 1, new), (old, new + 1)):
            if 0 < near_old <= near_new and proof != SMALL_TREE.consistency_proof(
                near_old, near_new
            ):
                r1, r2 = SMALL_TREE.root(near_old), SMALL_TREE.root(near_new)
                assert rejects(verify_consistency, near_old, near_new, r1, r2, proof)


def test_consistency_from_the_empty_tree() -> None:
    assert SMALL_TREE.consistency_proof(0, 9) == []
    assert SMALL_TREE.consistency_proof(0, 0) == []
    verify_consistency(0, 9, EMPTY_ROOT, SMALL_TREE.root(9), [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(LogProofError, match="empty root"):
        verify_consistency(0, 9, SOME_HASH, SMALL_TREE.root(9), [])
    with pytest.raises(LogProofError, match="empty root"):
        verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])
    with pytest.raises(LogProofError, match="length"):
        verify_consistency(0, 9, EMPTY_ROOT, SMALL_TREE.root(9), [SOME_HASH])


def test_a_forked_log_fails_consistency() -> None:
    forked = MerkleTree([*SMALL_LEAVES[:20], leaf_hash(b"rewritten"), *SMALL_LEAVES[21:40]])
    for old in (21, 25, 32, 33):
        proof = forked.consistency_proof(old, 40)
        with pytest.raises(LogProofError):
            verify_consistency(old, 40, SMALL_TREE.root(old), forked.root(40), proof)


# errors


def test_verification_failures_are_log_proof_errors_with_clear_messages() -> None:
    root = SMALL_TREE.root(8)
    proof = SMALL_TREE.inclusion_proof(3, 8)
    with pytest.raises(LogProofError, match="not below the tree size"):
        verify_inclusion(SMALL_LEAVES[8], 8, 8, proof, root)
    with pytest.raises(LogProofError, match="must not be negative"):
        verify_inclusion(SMALL_LEAVES[3], -1, 8, proof, root)
    with pytest.raises(LogProofError, match=r"wrong inclusion proof length .* got 2, want 3"):
        verify_inclusion(SMALL_LEAVES[3], 3, 8, proof[:2], root)
    with pytest.raises(LogProofError, match="does not lead to the root"):
        verify_inclusion(SMALL_LEAVES[4], 3, 8, proof, root)
    with pytest.raises(LogProofError, match="32 bytes"):
        verify_inclusion(SMALL_LEAVES[3], 3, 8, proof, root[:31])
    with pytest.raises(LogProofError, match="sequence of hashes"):
        verify_inclusion(SMALL_LEAVES[3], 3, 8, b"".join(proof), root)  # type: ignore[arg-type]
    with pytest.raises(LogProofError, match="cannot shrink"):
        verify_consistency(9, 8, SMALL_TREE.root(9), root, [])
    with pytest.raises(LogProofError, match="wrong consistency proof length"):
        verify_consistency(3, 8, SMALL_TREE.root(3), root, [])
    with pytest.raises(LogProofError, match="root of size 3"):
        verify_consistency(3, 8, SOME_HASH, root, SMALL_TREE.consistency_proof(3, 8))
    with pytest.raises(LogProofError, match="same size"):
        verify_consistency(8, 8, SOME_HASH, root, [])
    # A verification failure is not a bad request: the HTTP layer must not map it to 400.
    with pytest.raises(LogProofError) as caught:
        verify_inclusion(SMALL_LEAVES[4], 3, 8, proof, root)
    assert not isinstance(caught.value, ValueError)
    assert isinstance(caught.value, TrustError)


@pytest.mark.parametrize(
    ("request_proof", "message"),
    [
        (lambda t: t.inclusion_proof(-1, 5), "must not be negative"),
        (lambda t: t.inclusion_proof(5, 5), "not below the tree size"),
        (lambda t: t.inclusion_proof(0, 0), "not below the tree size"),
        (lambda t: t.inclusion_proof(0, 11), "beyond the tree's size"),
        (lambda t: t.inclusion_proof(True, 5), "must be an integer"),
        (lambda t: t.inclusion_proof(0, 5.0), "must be an integer"),
        (lambda t: t.root(11), "beyond the tree's size"),
        (lambda t: t.root(-1), "must not be negative"),
        (lambda t: t.consistency_proof(6, 5), "larger than new_size"),
        (lambda t: t.consistency_proof(-1, 5), "must not be negative"),
        (lambda t: t.consistency_proof(3, 11), "beyond the tree's size"),
        (lambda t: t.leaf(10), "not below the tree size"),
        (lambda t: t.append(b"\x00" * 31), "32 bytes"),
        (lambda t: t.append("00" * 32), "32 bytes"),
        (lambda t: t.extend([b"\x00" * 32, b"\x00" * 33]), "leaf hash 1 must be 32 bytes"),
    ],
)
def test_bad_requests_raise_a_value_error_kind(
    request_proof: Callable[[MerkleTree], object], message: str
) -> None:
    tree = MerkleTree(SMALL_LEAVES[:10])
    with pytest.raises(ProofRequestError, match=message) as caught:
        request_proof(tree)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, LogProofError)
    assert tree.size == 10  # a refused append or extend changes nothing
    assert tree.root() == root_from_leaves(SMALL_LEAVES[:10])


def test_root_from_leaves_refuses_anything_but_32_byte_hashes() -> None:
    with pytest.raises(ProofRequestError, match="leaf hash 2"):
        root_from_leaves([SOME_HASH, SOME_HASH, b"short"])
    with pytest.raises(ProofRequestError):
        node_hash(SOME_HASH, b"")
