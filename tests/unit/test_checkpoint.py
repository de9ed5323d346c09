"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519.

The note layer is checked against golang.org/x/mod/sumdb/note, the reference implementation:
its test keys and expected signed note (note_test.go) and its malformed-message cases, plus
two real checkpoints signed by sum.golang.org under its published verifier key.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from trust.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    generate_signer,
    key_hash,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    sign_checkpoint,
    split_notes,
    verifier_key,
    verify_ed25519,
)
from trust.errors import CheckpointError, KeyFormatError, TrustError
from trust.merkle import leaf_hash

# golang.org/x/mod/sumdb/note/note_test.go
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOT"
    "GwnWLox33WWd1RvMc+QQ=\n"
)

# sum.golang.org's verifier key (as built into the go command) and two checkpoints it signed.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTES = [
    (
        "go.sum database tree\n15368405\n/g9am3I6YWNKaZX/jkne1fqd9zEyjss+JXyPXG0WfkY=\n\n"
        "— sum.golang.org Az3grqJGUaSGukG9p8nI2vKgiFn7qGHxn0W+mrwyI6Gz3F0t1J3LzmWk/p96Ybf2"
        "95EjwdSwlzgijq5WA9d1Ded7owM=\n",
        15368405,
    ),
    (
        "go.sum database tree\n63512409\nF7eHRPqN/cqPtqti14NKdGGaI1Giw8coWP3KxihFZbg=\n\n"
        "— sum.golang.org Az3gri1OBHKT87Xj8UXU8zjoHGy/X+7Nl94f8TZkELVaasolmGApUsWqwVG9vE6h"
        "gqYb/ph/w2vdkLIVRH7bMB/FPQ4=\n",
        63512409,
    ),
]

ORIGIN = "axb.example/consent-log"
ROOT = leaf_hash(b"a root of some tree")
ROOT64 = base64.b64encode(ROOT).decode()
SKEY, VKEY = generate_signer(ORIGIN)
SIGNER = NoteSigner(SKEY)
VERIFIER = NoteVerifier(VKEY)


def good_checkpoint(**changes: object) -> Checkpoint:
    fields: dict[str, object] = {
        "origin": ORIGIN,
        "size": 1234,
        "root_hash": ROOT,
        "extensions": (),
    }
    fields.update(changes)
    return Checkpoint(**fields)  # type: ignore[arg-type]


# the note layer, against Go's reference implementation


def test_signer_reproduces_the_go_known_answer() -> None:
    signer = NoteSigner(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_hash == 0xC74F20A3
    assert signer.vkey == PETER_VKEY
    assert signer.sign_note(GO_TEXT) == GO_TEXT + "\n" + PETER_SIG


def test_verifier_key_format_matches_go() -> None:
    verifier = NoteVerifier(PETER_VKEY)
    assert (verifier.name, verifier.key_hash, verifier.vkey) == (
        "PeterNeumann",
        0xC74F20A3,
        PETER_VKEY,
    )
    assert verifier_key("PeterNeumann", verifier.public_key) == PETER_VKEY
    assert key_hash("PeterNeumann", b"\x01" + verifier.public_key) == 0xC74F20A3
    assert NoteVerifier(ENOCH_VKEY).key_hash == 0xAF0CFE78


def test_open_note_accepts_go_notes_and_skips_other_keys() -> None:
    note = GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, NoteVerifier(PETER_VKEY)) == GO_TEXT
    assert open_note(note, NoteVerifier(ENOCH_VKEY)) == GO_TEXT
    # Repeated lines are tolerated, as Go's Open drops repeats.
    assert open_note(GO_TEXT + "\n" + PETER_SIG + PETER_SIG, NoteVerifier(PETER_VKEY))


def corrupt(signature_line: str) -> str:
    return signature_line[:60] + "ABCD" + signature_line[60:]


@pytest.mark.parametrize(
    "note",
    [
        # note_test.go TestOpen: badMsgs
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        "\udcff" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
        "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        # too many signatures, an invalid signature, no signature by the key
        GO_TEXT + "\n" + PETER_SIG * 101,
        GO_TEXT + "\n" + corrupt(PETER_SIG),
        GO_TEXT + "\n" + ENOCH_SIG,
        # a bad signature by the key is not excused by a good one after it
        GO_TEXT + "\n" + corrupt(PETER_SIG) + PETER_SIG,
    ],
    ids=lambda note: repr(note[-24:]),
)
def test_open_note_refuses_what_go_refuses(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_note(note, NoteVerifier(PETER_VKEY))


def test_real_sum_golang_org_checkpoints_open() -> None:
    verifier = NoteVerifier(SUMDB_VKEY)
    for note, size in SUMDB_NOTES:
        checkpoint = parse_checkpoint(open_note(note, verifier))
        assert (checkpoint.origin, checkpoint.size) == ("go.sum database tree", size)
        # Its key is not named after its origin, so it is no checkpoint of ours.
        with pytest.raises(CheckpointError, match="not after the log origin"):
            open_checkpoint(note, verifier, "go.sum database tree")


def manglings(key: str) -> Iterator[str]:
    """note_test.go TestNewVerifier/TestNewSigner: every proper substring, every byte + 1."""
    for i in range(len(key) + 1):
        for j in range(i + 1, len(key) + 1):
            if (i, j) != (0, len(key)):
                yield key[i:j]
    for i in range(len(key)):
        yield key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :]


def test_mangled_verifier_keys_are_refused() -> None:
    accepted = []
    for mangled in [
        *manglings(PETER_VKEY),
        # wrong key length with adjusted key hash; unknown algorithm with adjusted key hash
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]:
        try:
            NoteVerifier(mangled)
        except KeyFormatError:
            continue
        accepted.append(mangled)
    assert accepted == []


def test_mangled_signer_keys_are_refused() -> None:
    accepted = []
    for mangled in manglings(PETER_SKEY):
        try:
            NoteSigner(mangled)
        except KeyFormatError:
            continue
        accepted.append(mangled)
    assert accepted == []


@pytest.mark.parametrize("name", ["", "has space", "tab\there", "a+b", "nl\n", "nbsp\u00a0"])
def test_key_names_follow_the_note_rules(name: str) -> None:
    with pytest.raises(KeyFormatError):
        generate_signer(name)
    with pytest.raises(KeyFormatError):
        verifier_key(name, bytes(32))


def test_generated_keys_have_the_go_shape() -> None:
    skey, vkey = generate_signer("example.com/log")
    name, hash_hex, key64 = vkey.split("+", 2)
    assert name == "example.com/log"
    assert len(hash_hex) == 8
    assert hash_hex == hash_hex.lower()
    assert base64.b64decode(key64)[0] == 1
    assert len(base64.b64decode(key64)) == 33
    assert skey.startswith(f"PRIVATE+KEY+example.com/log+{hash_hex}+")
    assert NoteSigner(skey).vkey == vkey
    assert "PRIVATE" not in repr(NoteSigner(skey))


def test_sign_note_refuses_text_a_note_cannot_carry() -> None:
    with pytest.raises(CheckpointError):
        SIGNER.sign_note("no final newline")
    with pytest.raises(CheckpointError):
        SIGNER.sign_note("bell\x07\n")


# checkpoints


def test_checkpoint_body_is_the_c2sp_layout() -> None:
    checkpoint = good_checkpoint(extensions=("ext one", "ext two"))
    assert format_checkpoint(checkpoint) == f"{ORIGIN}\n1234\n{ROOT64}\next one\next two\n"
    assert format_checkpoint(good_checkpoint(size=0)) == f"{ORIGIN}\n0\n{ROOT64}\n"


@pytest.mark.parametrize("extensions", [(), ("timestamp 1700000000",)])
def test_sign_and_open_round_trip(extensions: tuple[str, ...]) -> None:
    checkpoint = good_checkpoint(extensions=extensions)
    note = sign_checkpoint(checkpoint, SIGNER)
    body = format_checkpoint(checkpoint)
    assert note.startswith(body + "\n— " + ORIGIN + " ")
    assert note.count("\n— ") == 1
    assert open_checkpoint(note, VERIFIER, ORIGIN) == checkpoint


def test_other_keys_signatures_are_ignored_but_ours_is_required() -> None:
    note = sign_checkpoint(good_checkpoint(), SIGNER)
    witness = NoteSigner(generate_signer("witness.example")[0])
    cosigned = note + witness.signature_line(format_checkpoint(good_checkpoint()))
    assert open_checkpoint(cosigned, VERIFIER, ORIGIN) == good_checkpoint()
    witness_only = witness.sign_note(format_checkpoint(good_checkpoint()))
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_checkpoint(witness_only, VERIFIER, ORIGIN)


def test_every_changed_byte_of_a_signed_checkpoint_is_refused() -> None:
    note = sign_checkpoint(good_checkpoint(extensions=("ext",)), SIGNER).encode()
    accepted = []
    for position in range(len(note)):
        for bit in (0, 5):
            changed = bytearray(note)
            changed[position] ^= 1 << bit
            text = bytes(changed).decode("utf-8", "surrogateescape")
            try:
                open_checkpoint(text, VERIFIER, ORIGIN)
            except CheckpointError:
                continue
            accepted.append((position, bit))
    assert accepted == []


def test_a_note_signed_by_another_key_is_refused() -> None:
    impostor = NoteSigner(generate_signer(ORIGIN)[0])  # same name, different key
    note = sign_checkpoint(good_checkpoint(), impostor)
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_checkpoint(note, VERIFIER, ORIGIN)


def test_the_key_must_be_named_after_the_origin() -> None:
    other_skey, other_vkey = generate_signer("other.example/log")
    with pytest.raises(CheckpointError, match="not after the log origin"):
        sign_checkpoint(good_checkpoint(), NoteSigner(other_skey))
    note = NoteSigner(other_skey).sign_note(format_checkpoint(good_checkpoint()))
    with pytest.raises(CheckpointError, match="not after the log origin"):
        open_checkpoint(note, NoteVerifier(other_vkey), ORIGIN)
    # A body for another origin, signed by our key, is refused too.
    foreign = SIGNER.sign_note(format_checkpoint(good_checkpoint(origin="other.example/log")))
    with pytest.raises(CheckpointError, match="expected"):
        open_checkpoint(foreign, VERIFIER, ORIGIN)


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n1234\n",  # no root line
        f"{ORIGIN}\n{ROOT64}\n",  # no size line
        f"{ORIGIN}\n",
        f"\n1234\n{ROOT64}\n",  # empty origin
        f"{ORIGIN}\n01234\n{ROOT64}\n",  # leading zero
        f"{ORIGIN}\n00\n{ROOT64}\n",
        f"{ORIGIN}\n-1\n{ROOT64}\n",
        f"{ORIGIN}\n+5\n{ROOT64}\n",
        f"{ORIGIN}\n 5\n{ROOT64}\n",
        f"{ORIGIN}\n5 \n{ROOT64}\n",
        f"{ORIGIN}\n1_000\n{ROOT64}\n",
        f"{ORIGIN}\n\uff15\n{ROOT64}\n",  # a fullwidth digit
        f"{ORIGIN}\n{1 << 64}\n{ROOT64}\n",  # beyond uint64
        f"{ORIGIN}\n1234\n{ROOT64.rstrip('=')}\n",  # missing padding
        f"{ORIGIN}\n1234\n{ROOT64[:-2]}B=\n",  # non-canonical final bits
        f"{ORIGIN}\n1234\n{ROOT64[:10]}*{ROOT64[11:]}\n",  # not base64
        f"{ORIGIN}\n1234\n{ROOT64.replace('+', '-').replace('/', '_')}x\n",
        f"{ORIGIN}\n1234\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte hash
        f"{ORIGIN}\n1234\n{base64.b64encode(ROOT + b'!').decode()}\n",  # 33-byte hash
        f"{ORIGIN}\n1234\n{ROOT64} \n",
        f"{ORIGIN}\n1234\n{ROOT64}\n\n",  # extra blank line
        f"{ORIGIN}\n1234\n{ROOT64}\n\next\n",  # blank line before an extension
        f"{ORIGIN}\n\n1234\n{ROOT64}\n",
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: str) -> None:
    note = SIGNER.sign_note(body)  # validly signed: only the parse can refuse it
    with pytest.raises(CheckpointError):
        open_checkpoint(note, VERIFIER, ORIGIN)


@pytest.mark.parametrize(
    "note",
    [
        "",
        "\n\n",
        sign_checkpoint(good_checkpoint(), SIGNER)[:-1],  # no final newline
        sign_checkpoint(good_checkpoint(), SIGNER) + "trailing garbage\n",
        sign_checkpoint(good_checkpoint(), SIGNER) + "\n",
        sign_checkpoint(good_checkpoint(), SIGNER).replace("\n\n", "\n"),
        sign_checkpoint(good_checkpoint(), SIGNER).replace("— ", "-- "),
        sign_checkpoint(good_checkpoint(), SIGNER).replace("— ", "—  "),
        sign_checkpoint(good_checkpoint(), SIGNER).replace("=\n", "\n"),
        "\n" + sign_checkpoint(good_checkpoint(), SIGNER),
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        open_checkpoint(note, VERIFIER, ORIGIN)


@pytest.mark.parametrize(
    "changes",
    [
        {"origin": ""},
        {"origin": "two\nlines"},
        {"size": -1},
        {"size": True},
        {"size": 1 << 64},
        {"root_hash": ROOT[:31]},
        {"root_hash": ROOT64},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": ["list"]},
    ],
)
def test_checkpoint_values_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(CheckpointError):
        good_checkpoint(**changes)


def test_errors_belong_to_the_trust_root() -> None:
    assert issubclass(CheckpointError, TrustError)
    assert issubclass(KeyFormatError, TrustError)


def test_ed25519_primitive_refuses_wrong_lengths() -> None:
    message = b"message"
    signature = SIGNER.sign(message)
    assert verify_ed25519(VERIFIER.public_key, message, signature)
    assert not verify_ed25519(VERIFIER.public_key, message + b"!", signature)
    assert not verify_ed25519(VERIFIER.public_key, message, signature[:63])
    assert not verify_ed25519(VERIFIER.public_key, message, signature + b"\x00")
    assert not verify_ed25519(VERIFIER.public_key[:31], message, signature)


def test_pasted_notes_are_split_one_by_one() -> None:
    skey, vkey = generate_signer("axb.test/log")
    signer, verifier = NoteSigner(skey), NoteVerifier(vkey)
    notes = [
        sign_checkpoint(Checkpoint("axb.test/log", n, leaf_hash(bytes([n]))), signer)
        for n in (1, 2, 3)
    ]
    for pasted in (
        "".join(notes),
        "\n\n".join(notes) + "\n\n",
        "\n" + "\n".join(notes).replace("\n", "\r\n"),
        notes[0] + notes[1] + notes[2].rstrip("\n"),
    ):
        split = split_notes(pasted)
        assert split == notes
        assert [open_checkpoint(n, verifier, "axb.test/log").size for n in split] == [1, 2, 3]
    assert split_notes("") == []
    assert split_notes("\n\n") == []
