"""ES256 keys: P-256 signing and verifying keys, JWK/JWKS, RFC 7638 thumbprints.

Keys are parsed once into these objects and passed around; nothing re-parses a JWK per message.
Whatever signs does so through :class:`Signer` (ES256) or :class:`Ed25519Signer` (checkpoints):
a :class:`SigningKey` in process, or a key in a PKCS#11 token (``connectors.pkcs11``) whose
private half never leaves it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trust.errors import KeyFormatError

KeyId = str

_COORD_BYTES = 32
_PUBLIC_JWK_MEMBERS = frozenset({"kty", "crv", "x", "y", "kid", "use", "key_ops", "alg"})
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(rb"[A-Za-z0-9_-]*")


def b64_encode(data: bytes) -> str:
    """Standard padded base64 (how the log writes hashes, salts and digests)."""
    return base64.b64encode(data).decode("ascii")


def b64_decode(text: str) -> bytes:
    """Strict standard base64: padded, no foreign characters, canonical trailing bits.

    The last character before padding carries unused bits; accepting them set would let a
    changed byte of an export or an answer still decode to the same value."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError("not base64") from exc
    if b64_encode(decoded) != text:
        raise ValueError("non-canonical base64")
    return decoded


def b64_decode_or_none(value: object) -> bytes | None:
    """:func:`b64_decode` for values from a document: ``None`` for anything but canonical
    standard base64 (including values that are not strings)."""
    if not isinstance(value, str):
        return None
    try:
        return b64_decode(value)
    except ValueError:
        return None


def b64url_decode(text: str | bytes) -> bytes:
    """Strict base64url: no padding, no foreign characters, canonical trailing bits.

    Non-canonical encodings would let two different strings carry one value, which is a
    malleability we refuse everywhere (signatures, keys, payloads).
    """
    raw = text.encode("ascii") if isinstance(text, str) else text
    if _B64URL.fullmatch(raw) is None or len(raw) % 4 == 1:
        raise ValueError("not base64url")
    decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    if b64url_encode(decoded).encode("ascii") != raw:
        raise ValueError("non-canonical base64url")
    return decoded


def _coordinate(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise KeyFormatError(f"JWK member {name!r} must be a base64url string")
    try:
        raw = b64url_decode(value)
    except ValueError as exc:
        raise KeyFormatError(f"JWK member {name!r} is not canonical base64url") from exc
    if len(raw) != _COORD_BYTES:
        raise KeyFormatError(f"JWK member {name!r} must be {_COORD_BYTES} bytes for P-256")
    return int.from_bytes(raw, "big")


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(_COORD_BYTES, "big")),
        "y": b64url_encode(numbers.y.to_bytes(_COORD_BYTES, "big")),
    }


def thumbprint(jwk: Mapping[str, Any]) -> KeyId:
    """RFC 7638 SHA-256 thumbprint of an EC public JWK, base64url: our ``kid``."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A P-256 public key with its ``kid``; what every signature check is made with."""

    kid: KeyId
    public_key: ec.EllipticCurvePublicKey = field(repr=False, compare=False)
    jwk: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_public_key(cls, public_key: ec.EllipticCurvePublicKey) -> VerifyingKey:
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise KeyFormatError("only P-256 keys are accepted")
        jwk = _public_jwk(public_key)
        kid = thumbprint(jwk)
        return cls(kid=kid, public_key=public_key, jwk={**jwk, "kid": kid})

    @classmethod
    def from_jwk(cls, jwk: Any, *, require_thumbprint_kid: bool = True) -> VerifyingKey:
        """Parse a public EC P-256 signing JWK, refusing anything else.

        Refused: private members, other key types and curves, ``use`` other than ``sig``,
        ``key_ops`` without ``verify`` or with private operations, ``alg`` other than ES256,
        unknown members, points not on the curve, and (by default) a ``kid`` that is not the
        key's RFC 7638 thumbprint.
        """
        if not isinstance(jwk, Mapping):
            raise KeyFormatError("a JWK must be a JSON object")
        present = set(jwk)
        if present & _PRIVATE_JWK_MEMBERS:
            raise KeyFormatError("JWK carries private key material")
        unknown = present - _PUBLIC_JWK_MEMBERS
        if unknown:
            raise KeyFormatError(f"JWK has unexpected members: {sorted(unknown)}")
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise KeyFormatError("only EC P-256 keys are accepted")
        if "use" in jwk and jwk["use"] != "sig":
            raise KeyFormatError("JWK 'use' must be 'sig'")
        if "key_ops" in jwk:
            ops = jwk["key_ops"]
            if not isinstance(ops, list) or ops != ["verify"]:
                raise KeyFormatError("JWK 'key_ops' must be exactly ['verify']")
        if "alg" in jwk and jwk["alg"] != "ES256":
            raise KeyFormatError("JWK 'alg' must be 'ES256'")
        x, y = _coordinate(jwk, "x"), _coordinate(jwk, "y")
        try:
            public_key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError("JWK point is not on P-256") from exc
        key = cls.from_public_key(public_key)
        if "kid" in jwk:
            declared = jwk["kid"]
            if not isinstance(declared, str) or not declared:
                raise KeyFormatError("JWK 'kid' must be a non-empty string")
            if declared != key.kid:
                if require_thumbprint_kid:
                    raise KeyFormatError("JWK 'kid' is not its RFC 7638 thumbprint")
                return cls(kid=declared, public_key=public_key, jwk={**key.jwk, "kid": declared})
        return key

    @classmethod
    def from_pem(cls, pem: bytes) -> VerifyingKey:
        try:
            loaded = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError("not a PEM public key") from exc
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            raise KeyFormatError("only EC P-256 keys are accepted")
        return cls.from_public_key(loaded)


class Signer(Protocol):
    """An ES256 signing key, wherever its private half lives.

    ``sign`` returns the raw 64-byte ``r || s`` (as JWS carries it) of ECDSA P-256 over the
    SHA-256 digest of ``data``; a key that cannot be reached now raises
    :class:`~trust.errors.KeyUnavailable`, never signs with anything else."""

    @property
    def kid(self) -> KeyId: ...

    @property
    def verifying_key(self) -> VerifyingKey: ...

    def sign(self, data: bytes) -> bytes: ...


class Ed25519Signer(Protocol):
    """An Ed25519 key (RFC 8032), wherever its private half lives: the log's checkpoint key.

    ``sign`` returns the 64-byte signature of ``message``; ``public_key`` is the 32-byte key."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A P-256 private key with its ``kid`` (the thumbprint of its public half)."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    verifying_key: VerifyingKey

    @property
    def kid(self) -> KeyId:
        return self.verifying_key.kid

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_private_key(cls, private_key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise KeyFormatError("only P-256 keys are accepted")
        return cls(private_key, VerifyingKey.from_public_key(private_key.public_key()))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFormatError("not an unencrypted PEM private key") from exc
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise KeyFormatError("only EC P-256 keys are accepted")
        return cls.from_private_key(loaded)

    def sign(self, data: bytes) -> bytes:
        """ES256 over ``data``: raw ``r || s``, 32 bytes each (the :class:`Signer` contract)."""
        r, s = decode_dss_signature(self.private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_COORD_BYTES, "big") + s.to_bytes(_COORD_BYTES, "big")

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_jwks(document: Any, *, require_thumbprint_kid: bool = True) -> tuple[VerifyingKey, ...]:
    """Parse a JWK Set; one bad or duplicated key refuses the whole set (fail closed)."""
    if not isinstance(document, Mapping) or set(document) != {"keys"}:
        raise KeyFormatError("a JWKS must be an object with exactly one member, 'keys'")
    raw_keys = document["keys"]
    if not isinstance(raw_keys, list) or not raw_keys:
        raise KeyFormatError("a JWKS must hold at least one key")
    keys = tuple(
        VerifyingKey.from_jwk(jwk, require_thumbprint_kid=require_thumbprint_kid)
        for jwk in raw_keys
    )
    ensure_unique_kids(keys)
    return keys


def ensure_unique_kids(keys: Iterable[VerifyingKey]) -> None:
    seen: set[KeyId] = set()
    for key in keys:
        if key.kid in seen:
            raise KeyFormatError(f"duplicate kid {key.kid!r}")
        seen.add(key.kid)


def jwks_document(keys: Iterable[VerifyingKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [{**key.jwk, "use": "sig", "alg": "ES256"} for key in keys]}
