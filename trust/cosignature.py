"""Witness cosignatures of checkpoints: C2SP ``tlog-cosignature``, the Ed25519 ``cosignature/v1``.

A witness that has checked a checkpoint is consistent with everything it saw of the log adds
one signature line to the checkpoint note::

    — <witness name> base64(key id || u64 timestamp, big-endian || Ed25519 signature)

over the message ``cosignature/v1\\ntime <timestamp>\\n`` followed by the whole checkpoint
body. The key id is ``SHA-256(name || "\\n" || 0x04 || public key)[:4]``: the note key hash with
the cosignature type byte 0x04, so a cosignature can never pass for a log signature (type 0x01)
by the same key, nor the reverse. Witness keys travel as verifier keys with type 0x04
(``<name>+<key id>+base64(0x04 || key)``) and signer keys as ``PRIVATE+KEY+...`` strings of the
same shape (the seed after 0x04).

Signing goes through :class:`RawSigner`, the one seam a key held elsewhere (a PKCS#11 token)
plugs into: it signs bytes and publishes its public key, and never hands the private key out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trust.checkpoint import is_key_name, key_hash, note_signatures, split_key, verify_ed25519
from trust.errors import CheckpointError, KeyFormatError
from trust.keys import b64_encode

__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "CosignatureVerifier",
    "Cosigner",
    "Ed25519Key",
    "RawSigner",
    "cosigned_message",
    "cosigner_vkey",
    "generate_cosigner",
    "load_cosigner",
    "verified_cosignatures",
]

ALG_COSIGNATURE_V1: Final = 0x04
"""The signature type byte of Ed25519 ``cosignature/v1`` keys."""

MAX_TIMESTAMP: Final = (1 << 63) - 1
_PRIVATE_PREFIX: Final = "PRIVATE+KEY+"
_SIG_PREFIX: Final = "— "


def cosigned_message(text: str, timestamp: int) -> bytes:
    """What a ``cosignature/v1`` signs: the header line, the time line, the checkpoint body."""
    if not text.endswith("\n"):
        raise CheckpointError("a cosigned checkpoint body ends in a newline")
    if type(timestamp) is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError(f"cosignature timestamp {timestamp!r} is out of range")
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _key_id(name: str, public_key: bytes) -> int:
    return key_hash(name, bytes([ALG_COSIGNATURE_V1]) + public_key)


def cosigner_vkey(name: str, public_key: bytes) -> str:
    """The verifier key string of a witness: ``<name>+<key id>+base64(0x04 || key)``."""
    encoded = bytes([ALG_COSIGNATURE_V1]) + public_key
    return f"{name}+{_key_id(name, public_key):08x}+{b64_encode(encoded)}"


class RawSigner(Protocol):
    """An Ed25519 key that signs but never shows its private half (a file key or a token)."""

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        ...


class Ed25519Key:
    """An Ed25519 key in this process's memory, read from a signer key file."""

    __slots__ = ("_private", "_public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return "Ed25519Key(<private>)"


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One verified cosignature: who, under which key id, and when they cosigned."""

    name: str
    key_id: int
    timestamp: int
    signature: bytes

    @property
    def line(self) -> str:
        raw = self.key_id.to_bytes(4, "big") + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{_SIG_PREFIX}{self.name} {b64_encode(raw)}\n"


class _WitnessKey:
    """A witness key's public identity: name, key id, public key, verifier key string."""

    __slots__ = ("_key_id", "_name", "_public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not is_key_name(name):
            raise KeyFormatError(f"invalid witness key name {name!r}")
        if len(public_key) != 32:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        self._name = name
        self._public_key = public_key
        self._key_id = _key_id(name, public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def vkey(self) -> str:
        return cosigner_vkey(self._name, self._public_key)


class Cosigner(_WitnessKey):
    """A witness's signing identity: its name and its key, behind :class:`RawSigner`."""

    __slots__ = ("_key",)

    def __init__(self, name: str, key: RawSigner) -> None:
        super().__init__(name, key.public_key)
        self._key = key

    def cosign(self, text: str, timestamp: int) -> Cosignature:
        """Cosign the checkpoint body ``text`` as of ``timestamp`` (POSIX seconds, not zero)."""
        if timestamp == 0:
            raise CheckpointError("a witness cosignature never omits its timestamp")
        signature = self._key.sign(cosigned_message(text, timestamp))
        return Cosignature(self._name, self._key_id, timestamp, signature)

    def __repr__(self) -> str:
        return f"Cosigner(name={self._name!r}, key_id={self._key_id:08x})"


def generate_cosigner(name: str) -> tuple[str, str]:
    """A fresh witness key named ``name``: ``(signer key, verifier key)`` strings."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    cosigner = Cosigner(name, Ed25519Key(seed))
    encoded = b64_encode(bytes([ALG_COSIGNATURE_V1]) + seed)
    return f"{_PRIVATE_PREFIX}{name}+{cosigner.key_id:08x}+{encoded}", cosigner.vkey


def load_cosigner(skey: str) -> Cosigner:
    """A :class:`Cosigner` from its ``PRIVATE+KEY+<name>+<key id>+<base64>`` signer key."""
    if not skey.startswith(_PRIVATE_PREFIX):
        raise KeyFormatError("malformed witness signer key")
    name, expected, key = split_key(skey[len(_PRIVATE_PREFIX) :], "witness signer key")
    if key[0] != ALG_COSIGNATURE_V1:
        raise KeyFormatError(f"not a cosignature/v1 key (type {key[0]:#04x})")
    cosigner = Cosigner(name, Ed25519Key(key[1:]))
    if cosigner.key_id != expected:
        raise KeyFormatError("witness signer key id does not match its name and key")
    return cosigner


class CosignatureVerifier(_WitnessKey):
    """Checks the cosignatures of one witness, from its verifier key string."""

    __slots__ = ()

    def __init__(self, vkey: str) -> None:
        name, expected, key = split_key(vkey, "witness verifier key")
        if key[0] != ALG_COSIGNATURE_V1:
            raise KeyFormatError(f"not a cosignature/v1 key (type {key[0]:#04x})")
        super().__init__(name, key[1:])
        if self._key_id != expected:
            raise KeyFormatError("witness verifier key id does not match its name and key")

    def matches(self, name: str, raw: bytes) -> bool:
        """Whether a signature line (its name, its decoded bytes) claims to be this key's."""
        return name == self._name and int.from_bytes(raw[:4], "big") == self._key_id

    def verify(self, text: str, raw: bytes) -> Cosignature:
        """The cosignature in ``raw`` (key id || timestamp || signature) over ``text``.

        Raises :class:`CheckpointError` if it does not verify: a line that names this key but
        fails is a malformed note, never a line to skip."""
        if not self.matches(self._name, raw) or len(raw) != 4 + 8 + 64:
            raise CheckpointError(f"malformed cosignature by {self._name}")
        timestamp = int.from_bytes(raw[4:12], "big")
        if timestamp > MAX_TIMESTAMP:
            raise CheckpointError(f"cosignature by {self._name} has an out-of-range timestamp")
        if not verify_ed25519(self._public_key, cosigned_message(text, timestamp), raw[12:]):
            raise CheckpointError(f"invalid cosignature by {self._name}+{self._key_id:08x}")
        return Cosignature(self._name, self._key_id, timestamp, raw[12:])

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.vkey!r})"


def verified_cosignatures(
    note: str,
    witnesses: Mapping[str, CosignatureVerifier] | Iterable[CosignatureVerifier],
    *,
    now: int,
    max_skew_s: int = 300,
) -> dict[str, Cosignature]:
    """The valid cosignatures on a signed ``note``, by the key name of each known witness.

    Lines of unknown keys (the log's own, other witnesses') are ignored. A line that claims a
    known key but does not verify, or that is dated more than ``max_skew_s`` in the future,
    refuses the whole note (``CheckpointError``): the note is malformed, not merely
    uncosigned. Only the first line of each witness counts.
    """
    verifiers = list(witnesses.values() if isinstance(witnesses, Mapping) else witnesses)
    text, signatures = note_signatures(note)
    found: dict[str, Cosignature] = {}
    for name, raw in signatures:
        for verifier in verifiers:
            if verifier.matches(name, raw) and name not in found:
                cosignature = verifier.verify(text, raw)
                if cosignature.timestamp > now + max_skew_s:
                    raise CheckpointError(f"cosignature by {name} is dated in the future")
                found[name] = cosignature
    return found
