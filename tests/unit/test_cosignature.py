"""Witness cosignatures (C2SP tlog-cosignature, Ed25519 cosignature/v1), witness policies and
what a witness decides on add-checkpoint (C2SP tlog-witness), all pure."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trust.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    generate_signer,
    open_note,
    sign_checkpoint,
    verifier_key,
)
from trust.cosignature import (
    CosignatureVerifier,
    Cosigner,
    Ed25519Key,
    cosigned_message,
    generate_cosigner,
    load_cosigner,
    verified_cosignatures,
)
from trust.errors import CheckpointError, KeyFormatError, RegistryError
from trust.merkle import EMPTY_ROOT, MerkleTree, leaf_hash
from trust.witness_policy import (
    Witness,
    open_witnessed_checkpoint,
    parse_witness,
    parse_witness_policy,
    require_quorum,
)
from trust.witnessing import AddCheckpoint, WitnessRefusal, judge, parse_add_checkpoint

ORIGIN = "example.test/log"
NOW = 1_790_000_000
LOG_SKEY, LOG_VKEY = generate_signer(ORIGIN)
LOG_SIGNER, LOG_KEY = NoteSigner(LOG_SKEY), NoteVerifier(LOG_VKEY)


def tree(size: int, salt: bytes = b"") -> MerkleTree:
    built = MerkleTree()
    built.extend(leaf_hash(salt + i.to_bytes(4, "big")) for i in range(size))
    return built


def note_of(size: int, salt: bytes = b"", signer: NoteSigner = LOG_SIGNER) -> str:
    return sign_checkpoint(Checkpoint(signer.name, size, tree(size, salt).root()), signer)


def witness(name: str) -> tuple[Cosigner, CosignatureVerifier]:
    skey, vkey = generate_cosigner(name)
    return load_cosigner(skey), CosignatureVerifier(vkey)


def test_key_id_and_signed_message_follow_the_spec_byte_for_byte() -> None:
    cosigner, verifier = witness("witness.test/w1")
    public = base64.b64decode(verifier.vkey.split("+", 2)[2])
    assert public[0] == 0x04
    expected_id = hashlib.sha256(b"witness.test/w1\n\x04" + public[1:]).digest()[:4]
    assert cosigner.key_id == verifier.key_id == int.from_bytes(expected_id, "big")
    text = format_checkpoint(Checkpoint(ORIGIN, 3, tree(3).root()))
    assert cosigned_message(text, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + (
        text.encode()
    )
    cosignature = cosigner.cosign(text, 1679315147)
    raw = base64.b64decode(cosignature.line.split(" ")[2])
    assert cosignature.line.startswith("— witness.test/w1 ")
    assert raw[:4] == expected_id
    assert int.from_bytes(raw[4:12], "big") == 1679315147
    # the signature is plain Ed25519 over that message, checkable without our code
    Ed25519PublicKey.from_public_bytes(public[1:]).verify(
        raw[12:], cosigned_message(text, 1679315147)
    )


def test_cosignatures_verify_and_unknown_lines_are_ignored() -> None:
    w1, v1 = witness("witness.test/w1")
    w2, _ = witness("witness.test/w2")
    note = note_of(5)
    text = open_note(note, LOG_KEY)
    cosigned = note + w1.cosign(text, NOW).line + w2.cosign(text, NOW).line
    found = verified_cosignatures(cosigned, [v1], now=NOW)
    assert list(found) == ["witness.test/w1"]
    assert found["witness.test/w1"].timestamp == NOW
    assert open_note(cosigned, LOG_KEY) == text  # the log's own check skips witness lines


def test_a_tampered_checkpoint_timestamp_or_signature_is_refused() -> None:
    w1, v1 = witness("witness.test/w1")
    note = note_of(5)
    line = w1.cosign(open_note(note, LOG_KEY), NOW).line
    other_root = note.replace(note.split("\n")[2], base64.b64encode(tree(5, b"x").root()).decode())
    with pytest.raises(CheckpointError):
        verified_cosignatures(other_root + line, [v1], now=NOW)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1  # one second later: the timestamp is signed too
    forged = f"— witness.test/w1 {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(CheckpointError, match="invalid cosignature"):
        verified_cosignatures(note + forged, [v1], now=NOW)


def test_a_cosignature_dated_in_the_future_is_refused() -> None:
    w1, v1 = witness("witness.test/w1")
    note = note_of(2)
    line = w1.cosign(open_note(note, LOG_KEY), NOW + 3600).line
    with pytest.raises(CheckpointError, match="future"):
        verified_cosignatures(note + line, [v1], now=NOW)


def test_cosignature_and_log_signature_cannot_pass_for_each_other() -> None:
    """The same Ed25519 key as a log key (type 0x01) and as a witness key (0x04) has two key
    ids: neither kind of line is taken for the other."""
    seed = bytes(range(32))
    shared = Ed25519Key(seed)
    log_vkey = verifier_key(ORIGIN, shared.public_key)
    log_hash = log_vkey.split("+")[1]
    log_signer = NoteSigner(
        f"PRIVATE+KEY+{ORIGIN}+{log_hash}+" + base64.b64encode(b"\x01" + seed).decode()
    )
    as_witness = Cosigner(ORIGIN, shared)
    as_witness_key = CosignatureVerifier(as_witness.vkey)
    assert as_witness.key_id != log_signer.key_hash
    note = note_of(4, signer=log_signer)
    text = open_note(note, NoteVerifier(log_vkey))
    assert verified_cosignatures(note, [as_witness_key], now=NOW) == {}
    cosigned_only = text + "\n" + as_witness.cosign(text, NOW).line
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_note(cosigned_only, NoteVerifier(log_vkey))
    with pytest.raises(KeyFormatError):
        CosignatureVerifier(LOG_VKEY)  # a log verifier key is not a witness key
    with pytest.raises(KeyFormatError):
        load_cosigner(LOG_SKEY)


def test_a_witness_timestamp_is_never_zero() -> None:
    w1, _ = witness("witness.test/w1")
    with pytest.raises(CheckpointError):
        w1.cosign(format_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT)), 0)


# --- witness policy ------------------------------------------------------------------------


def witnesses(*names: str) -> tuple[dict[str, Witness], dict[str, Cosigner]]:
    members, signers = {}, {}
    for name in names:
        skey, vkey = generate_cosigner(f"witness.test/{name}")
        members[name] = parse_witness(name, {"vkey": vkey, "url": "http://127.0.0.1:9/"})
        signers[name] = load_cosigner(skey)
    return members, signers


def test_k_of_n_groups_and_nested_groups_decide_the_quorum() -> None:
    members, _ = witnesses("a", "b", "c", "d")
    policy = parse_witness_policy(
        {
            "groups": [
                {"name": "eu", "k": 2, "of": ["a", "b", "c"]},
                {"name": "all", "k": 2, "of": ["eu", "d"]},
            ],
            "quorum": "all",
        },
        members,
    )
    assert not policy.satisfied_by({"a", "b"})  # eu holds, d does not
    assert policy.satisfied_by({"a", "c", "d"})
    assert not policy.satisfied_by({"a", "d"})
    assert policy.describe() == "2 of 2 in all"


@pytest.mark.parametrize(
    "raw",
    [
        {"groups": [{"name": "g", "k": 0, "of": ["a"]}], "quorum": "g"},
        {"groups": [{"name": "g", "k": 3, "of": ["a", "b"]}], "quorum": "g"},
        {"groups": [{"name": "g", "k": 1, "of": []}], "quorum": "g"},
        {"groups": [{"name": "g", "k": 1, "of": ["a", "a"]}], "quorum": "g"},
        {"groups": [{"name": "g", "k": 1, "of": ["nobody"]}], "quorum": "g"},
        {
            "groups": [
                {"name": "g", "k": 1, "of": ["later"]},
                {"name": "later", "k": 1, "of": ["a"]},
            ],
            "quorum": "g",
        },
        {"groups": [{"name": "a", "k": 1, "of": ["b"]}], "quorum": "a"},
        {"groups": [], "quorum": "nothing"},
        {"groups": [], "quorum": "a", "extra": 1},
    ],
)
def test_a_policy_that_could_be_met_by_nobody_or_anybody_is_refused(raw: dict[str, Any]) -> None:
    members, _ = witnesses("a", "b")
    with pytest.raises(RegistryError):
        parse_witness_policy(raw, members)


def test_witnessed_checkpoint_counts_only_policy_witnesses_and_needs_a_quorum() -> None:
    members, signers = witnesses("a", "b", "c")
    policy = parse_witness_policy(
        {"groups": [{"name": "g", "k": 2, "of": ["a", "b", "c"]}], "quorum": "g"}, members
    )
    note = note_of(7)
    text = open_note(note, LOG_KEY)
    stranger, _ = witness("witness.test/stranger")
    one = note + signers["a"].cosign(text, NOW).line + stranger.cosign(text, NOW).line
    assert not open_witnessed_checkpoint(one, LOG_KEY, policy, now=NOW).quorum
    with pytest.raises(CheckpointError, match="short of the policy's quorum 2 of 3"):
        require_quorum(one, LOG_KEY, policy, now=NOW)
    two = one + signers["c"].cosign(text, NOW).line
    witnessed = require_quorum(two, LOG_KEY, policy, now=NOW)
    assert set(witnessed.cosignatures) == {"a", "c"}
    assert witnessed.size == 7


def test_a_suspended_witness_counts_for_nothing() -> None:
    members, signers = witnesses("a", "b")
    suspended = {
        **members,
        "b": parse_witness(
            "b", {"vkey": members["b"].verifier.vkey, "url": "http://127.0.0.1:9"}, active=False
        ),
    }
    policy = parse_witness_policy(
        {"groups": [{"name": "g", "k": 2, "of": ["a", "b"]}], "quorum": "g"}, suspended
    )
    note = note_of(3)
    text = open_note(note, LOG_KEY)
    both = note + signers["a"].cosign(text, NOW).line + signers["b"].cosign(text, NOW).line
    assert not open_witnessed_checkpoint(both, LOG_KEY, policy, now=NOW).quorum


def test_witness_metadata_must_be_a_witness_key_and_a_safe_url() -> None:
    _, vkey = generate_cosigner("witness.test/a")
    with pytest.raises(RegistryError):
        parse_witness("a", {"vkey": vkey, "url": "http://witness.example"})
    with pytest.raises(RegistryError):
        parse_witness("a", {"vkey": LOG_VKEY, "url": "https://witness.example"})


# --- add-checkpoint ------------------------------------------------------------------------

KEYS = {ORIGIN: LOG_KEY}


def request(
    old: int, size: int, *, proof: list[bytes] | None = None, salt: bytes = b""
) -> AddCheckpoint:
    if proof is None:
        proof = [] if old in (0, size) else tree(size, salt).consistency_proof(old, size)
    return AddCheckpoint(old, tuple(proof), note_of(size, salt))


def status_of(submitted: AddCheckpoint, latest: tuple[int, bytes] | None) -> int:
    try:
        judge(submitted, log_keys=KEYS, latest=latest)
    except WitnessRefusal as refusal:
        return refusal.status
    return 200


def test_request_body_round_trips_and_malformed_bodies_are_400() -> None:
    submitted = request(3, 8)
    assert parse_add_checkpoint(submitted.body()) == submitted
    for body in (
        b"old 03\n\n" + submitted.note.encode(),
        b"old 3\n" + submitted.note.encode(),
        b"old 3\nnot-base64\n\n" + submitted.note.encode(),
        b"\xff\n\n",
        b"old 3\n" + b"A" * 43 + b"=\n" * 64 + b"\n" + submitted.note.encode(),
    ):
        with pytest.raises(WitnessRefusal) as refused:
            parse_add_checkpoint(body)
        assert refused.value.status == 400


def test_consistent_checkpoints_are_accepted_from_zero_and_from_the_latest() -> None:
    checkpoint, text = judge(request(0, 5), log_keys=KEYS, latest=None)
    assert checkpoint.size == 5
    assert text.startswith(ORIGIN + "\n5\n")
    assert status_of(request(5, 9), (5, tree(5).root())) == 200
    assert status_of(request(5, 5), (5, tree(5).root())) == 200  # the same checkpoint again


def test_each_refusal_has_the_spec_status() -> None:
    other_skey, _ = generate_signer(ORIGIN)
    stranger = AddCheckpoint(0, (), note_of(5, signer=NoteSigner(other_skey)))
    unknown = AddCheckpoint(
        0, (), note_of(5, signer=NoteSigner(generate_signer("other.test/log")[0]))
    )
    bad_signature = note_of(5).replace("5\n", "6\n", 1)
    latest = (5, tree(5).root())
    assert status_of(unknown, None) == 404
    assert status_of(stranger, None) == 403
    assert status_of(AddCheckpoint(0, (), bad_signature), None) == 403
    assert status_of(request(9, 5, proof=[]), None) == 400  # old larger than the checkpoint
    assert status_of(request(0, 9), latest) == 409
    assert status_of(request(3, 9), latest) == 409
    assert status_of(request(5, 9, proof=[b"\x00" * 32]), latest) == 422
    assert status_of(request(5, 9, salt=b"fork"), latest) == 422  # a fork of the log
    assert status_of(request(5, 5, salt=b"fork"), latest) == 422  # another root, same size
    assert status_of(request(0, 5, proof=[b"\x00" * 32]), None) == 422
    empty_but_not = sign_checkpoint(Checkpoint(ORIGIN, 0, tree(1).root()), LOG_SIGNER)
    assert status_of(AddCheckpoint(0, (), empty_but_not), None) == 422


def test_a_409_says_the_size_last_cosigned() -> None:
    with pytest.raises(WitnessRefusal) as refused:
        judge(request(0, 9), log_keys=KEYS, latest=(5, tree(5).root()))
    assert refused.value.latest_size == 5
