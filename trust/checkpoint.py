"""Signed checkpoints of the consent log: C2SP ``tlog-checkpoint`` in a C2SP ``signed-note``.

A checkpoint commits to the log's size and root hash::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>
    [extension lines]

and travels as a signed note: the body, a blank line, then one line per signature,
``— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>``. The key is named
after the log's origin, so an auditor who pins the log's verifier key (``<name>+<hash>+<key>``)
needs nothing else.

Key strings, key hashes, note layout and the acceptance rules of :func:`open_note` follow
``golang.org/x/mod/sumdb/note`` (the reference implementation), with two deliberate
tightenings: base64 must be canonical, and a name may not contain any character Python
considers whitespace (a superset of Go's ``unicode.IsSpace``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trust.errors import CheckpointError, KeyFormatError
from trust.keys import Ed25519Signer, b64_decode_or_none, b64_encode
from trust.merkle import HASH_SIZE

__all__ = [
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "format_checkpoint",
    "generate_signer",
    "is_key_name",
    "key_hash",
    "note_signatures",
    "open_checkpoint",
    "open_note",
    "parse_checkpoint",
    "sign_checkpoint",
    "split_key",
    "verifier_key",
    "verify_ed25519",
]

ALG_ED25519: Final = 0x01
"""The signed-note signature type byte of Ed25519."""

MAX_SIGNATURES: Final = 100
"""More signature lines than this and a note is refused unread, as Go's ``note.Open`` does."""

_SIG_PREFIX: Final = "— "  # em dash U+2014, then a space
_PRIVATE_PREFIX: Final = "PRIVATE+KEY+"
_HEX8: Final = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]*")
_MAX_TREE_SIZE: Final = (1 << 64) - 1


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 (RFC 8032) verification: the one primitive behind every checkpoint signature."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def is_key_name(name: str) -> bool:
    return (
        name != ""
        and "+" not in name
        and not any(ch.isspace() for ch in name)
        and _is_note_text(name)
    )


def _is_note_text(text: str) -> bool:
    """UTF-8 encodable with no ASCII control character other than newline (Go's Open rule)."""
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_hash(name: str, key: bytes) -> int:
    """The 32-bit key id: the first four bytes of SHA-256(name || "\\n" || alg || public key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def verifier_key(name: str, public_key: bytes) -> str:
    """The verifier key string ``<name>+<hash>+<base64(0x01 || key)>`` of an Ed25519 key."""
    if not is_key_name(name):
        raise KeyFormatError(f"invalid note key name {name!r}")
    if len(public_key) != 32:
        raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    encoded = bytes([ALG_ED25519]) + public_key
    return f"{name}+{key_hash(name, encoded):08x}+{b64_encode(encoded)}"


def generate_signer(name: str) -> tuple[str, str]:
    """A fresh Ed25519 note key named ``name``: ``(signer key, verifier key)`` strings."""
    if not is_key_name(name):
        raise KeyFormatError(f"invalid note key name {name!r}")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    vkey = verifier_key(name, public)
    hash_hex = vkey.split("+")[1]
    skey = f"{_PRIVATE_PREFIX}{name}+{hash_hex}+{b64_encode(bytes([ALG_ED25519]) + seed)}"
    return skey, vkey


def split_key(text: str, what: str) -> tuple[str, int, bytes]:
    """``<name>+<8 hex>+<base64>`` into (name, key hash, decoded key bytes)."""
    name, sep1, rest = text.partition("+")
    hash_hex, sep2, key64 = rest.partition("+")
    if not (sep1 and sep2) or not is_key_name(name):
        raise KeyFormatError(f"malformed {what}")
    if not _HEX8.fullmatch(hash_hex):
        raise KeyFormatError(f"malformed {what}: the key hash is not 8 hex digits")
    key = b64_decode_or_none(key64)
    if not key:
        raise KeyFormatError(f"malformed {what}: the key is not canonical base64")
    return name, int(hash_hex, 16), key


class NoteVerifier:
    """Verifies note signatures of one Ed25519 key, from its verifier key string."""

    __slots__ = ("_key_hash", "_name", "_public_key")

    def __init__(self, vkey: str) -> None:
        name, expected_hash, key = split_key(vkey, "note verifier key")
        if key_hash(name, key) != expected_hash:
            raise KeyFormatError("note verifier key hash does not match its name and key")
        if key[0] != ALG_ED25519:
            raise KeyFormatError(f"unknown note signature algorithm {key[0]:#04x}")
        if len(key) != 33:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(key) - 1}")
        self._name = name
        self._key_hash = expected_hash
        self._public_key = key[1:]

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._key_hash

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def vkey(self) -> str:
        return verifier_key(self._name, self._public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify_ed25519(self._public_key, message, signature)

    def __repr__(self) -> str:
        return f"NoteVerifier({self.vkey!r})"


class _InProcessEd25519:
    """An Ed25519 private key held in this process (from a ``PRIVATE+KEY+...`` string)."""

    __slots__ = ("_private_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        self._private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)


class NoteSigner:
    """Signs notes with one Ed25519 key named ``name``: from its ``PRIVATE+KEY+...`` signer
    key string, or (:meth:`from_signer`) a key whose private half lives in a token."""

    __slots__ = ("_key_hash", "_name", "_public_key", "_signer")

    def __init__(self, skey: str) -> None:
        if not skey.startswith(_PRIVATE_PREFIX):
            raise KeyFormatError("malformed note signer key")
        name, expected_hash, key = split_key(skey[len(_PRIVATE_PREFIX) :], "note signer key")
        if key[0] != ALG_ED25519:
            raise KeyFormatError(f"unknown note signature algorithm {key[0]:#04x}")
        if len(key) != 33:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(key) - 1}")
        signer = _InProcessEd25519(key[1:])
        if key_hash(name, bytes([ALG_ED25519]) + signer.public_key) != expected_hash:
            raise KeyFormatError("note signer key hash does not match its name and key")
        self._set(name, signer)

    def _set(self, name: str, signer: Ed25519Signer) -> None:
        self._name = name
        self._signer = signer
        self._public_key = signer.public_key
        self._key_hash = key_hash(name, bytes([ALG_ED25519]) + self._public_key)

    @classmethod
    def from_signer(cls, name: str, signer: Ed25519Signer) -> NoteSigner:
        """A note key named ``name`` that signs through ``signer`` (a token's Ed25519 key)."""
        if not is_key_name(name):
            raise KeyFormatError(f"invalid note key name {name!r}")
        if len(signer.public_key) != 32:
            raise KeyFormatError("an Ed25519 public key is 32 bytes")
        note_signer = cls.__new__(cls)
        note_signer._set(name, signer)
        return note_signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._key_hash

    @property
    def vkey(self) -> str:
        """The matching verifier key string, safe to publish."""
        return verifier_key(self._name, self._public_key)

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``message``."""
        signature = self._signer.sign(message)
        if len(signature) != 64:  # a token that breaks the contract must not emit a bad note
            raise CheckpointError("the Ed25519 signer returned a malformed signature")
        return signature

    def signature_line(self, text: str) -> str:
        """``— <name> <base64(key hash || signature)>\n`` over the note text.

        On its own, this is how a second key (a witness) adds its line to a signed note.
        """
        if not text.endswith("\n") or not _is_note_text(text):
            raise CheckpointError(
                "note text must end in a newline and hold no control characters but newlines"
            )
        raw = self._key_hash.to_bytes(4, "big") + self.sign(text.encode("utf-8"))
        return f"{_SIG_PREFIX}{self._name} {b64_encode(raw)}\n"

    def sign_note(self, text: str) -> str:
        """The signed note: ``text``, a blank line, this key's signature line."""
        line = self.signature_line(text)
        return f"{text}\n{line}"

    def __repr__(self) -> str:
        return f"NoteSigner(name={self._name!r}, key_hash={self._key_hash:08x})"


def note_signatures(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Split a signed note into its text (ending in a newline) and its signature lines, each as
    ``(key name, key hash || signature)``, checking only the note's syntax (Go's rules)."""
    if not isinstance(note, str) or not _is_note_text(note):
        raise CheckpointError("malformed note: not UTF-8 text, or holds control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise CheckpointError("malformed note: the signature block must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError("malformed note: a signature line must start with an em dash")
        name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        raw = b64_decode_or_none(encoded)
        if not is_key_name(name) or raw is None or len(raw) < 5:
            raise CheckpointError("malformed note: bad signature line")
        signatures.append((name, raw))
    return text, signatures


def open_note(note: str, verifier: NoteVerifier) -> str:
    """Check a signed note and return its text (ending in a newline).

    Follows Go's ``note.Open`` with a single known key: the note must parse; a signature line
    by that key (name and key hash) must verify, or the note is refused; lines by other keys
    are skipped unread; at least one signature by that key is required.
    """
    text, signatures = note_signatures(note)
    verified = False
    for name, raw in signatures:
        if name != verifier.name or int.from_bytes(raw[:4], "big") != verifier.key_hash:
            continue  # another key's signature (a witness, say): not ours to judge
        if verified:
            continue  # Go's Open also checks only the first signature of each key
        if not verifier.verify(text.encode("utf-8"), raw[4:]):
            raise CheckpointError(
                f"invalid signature for key {verifier.name}+{verifier.key_hash:08x}"
            )
        verified = True
    if not verified:
        raise CheckpointError(
            f"note has no signature by key {verifier.name}+{verifier.key_hash:08x}"
        )
    return text


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint: the log's origin, its size and the root hash of that many leaves."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise CheckpointError("checkpoint origin must be a non-empty string")
        if "\n" in self.origin or not _is_note_text(self.origin):
            raise CheckpointError("checkpoint origin must be one line of text")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise CheckpointError("checkpoint size must be an integer")
        if not 0 <= self.size <= _MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} is out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("checkpoint extensions must be a tuple of lines")
        for line in self.extensions:
            if not isinstance(line, str) or not line or "\n" in line or not _is_note_text(line):
                raise CheckpointError("each checkpoint extension must be one non-empty line")


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint body: the note text that is signed."""
    lines = [
        checkpoint.origin,
        str(checkpoint.size),
        b64_encode(checkpoint.root_hash),
        *checkpoint.extensions,
    ]
    return "".join(f"{line}\n" for line in lines)


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed checkpoint note. The signing key must be named after the log's origin."""
    if signer.name != checkpoint.origin:
        raise CheckpointError(
            f"checkpoint key is named {signer.name!r}, not after the log origin "
            f"{checkpoint.origin!r}"
        )
    return signer.sign_note(format_checkpoint(checkpoint))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body strictly; the signature is :func:`open_checkpoint`'s job."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed checkpoint: the body must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("malformed checkpoint: fewer than three lines")
    origin, size_text, root_text, *extensions = lines
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointError("malformed checkpoint: the size is not a plain decimal")
    size = int(size_text)
    if size > _MAX_TREE_SIZE:
        raise CheckpointError("malformed checkpoint: the size is out of range")
    root_hash = b64_decode_or_none(root_text)
    if root_hash is None or len(root_hash) != HASH_SIZE:
        raise CheckpointError(f"malformed checkpoint: the root hash is not {HASH_SIZE} bytes")
    return Checkpoint(origin, size, root_hash, tuple(extensions))


def open_checkpoint(note: str, verifier: NoteVerifier, origin: str) -> Checkpoint:
    """Verify a signed checkpoint of the log ``origin`` and return what it commits to.

    The verifier key must be named after ``origin``, the note must carry a valid signature by
    it, and the body must be a well-formed checkpoint for that origin. Anything else raises
    :class:`~trust.errors.CheckpointError`.
    """
    if verifier.name != origin:
        raise CheckpointError(
            f"the verifier key is named {verifier.name!r}, not after the log origin {origin!r}"
        )
    checkpoint = parse_checkpoint(open_note(note, verifier))
    if checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint is for origin {checkpoint.origin!r}, expected {origin!r}"
        )
    return checkpoint


def split_notes(text: str) -> list[str]:
    """Signed notes pasted one after another (blank lines between them allowed) as separate
    notes. A note is its text, one blank line, then signature lines starting ``— ``."""
    notes: list[str] = []
    lines: list[str] = []
    signed = False  # past the blank line that ends the note's text
    for line in text.replace("\r\n", "\n").split("\n"):
        if signed and not line.startswith("— "):
            notes.append("\n".join(lines) + "\n")
            lines, signed = [], False
        if not line and not lines:
            continue  # blank lines between notes
        if not line and not signed:
            signed = True
        lines.append(line)
    if lines:
        notes.append("\n".join(lines).rstrip("\n") + "\n")
    return notes
