"""Forging tokens, for tests and conformance checks only: these make tokens a verifier must refuse.

``trust.jws.sign`` can only make good messages; an attack needs exactly one defect in an
otherwise well-signed token (``alg`` none, HS256 keyed with a public key, a duplicated JSON
member, a DER or malleated signature, a part that is not canonical base64url). So every part
here is given as bytes or as JSON the caller chose, and the signature is ES256 (raw r||s, RFC
7518 section 3.4) over exactly that signing input, or any bytes the caller passes instead.

Nothing in the product imports this module except ``connectors.conformance``, which plays a
hostile broker against a provider.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trust.keys import Signer, SigningKey, VerifyingKey, b64url_decode, b64url_encode

P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

Part = Mapping[str, Any] | bytes | str
"""A JWS part: a mapping is written as compact JSON, bytes are taken as the part's exact
content, a str is taken as already base64url-encoded (to send encodings a verifier refuses)."""


def to_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; unlike orjson it also writes what a hostile token may carry (integers
    beyond 64 bits, NaN)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_part(part: Part) -> str:
    if isinstance(part, str):
        return part
    return b64url_encode(part if isinstance(part, bytes) else to_json(part))


def raw_object(*members: tuple[str, Any]) -> bytes:
    """A JSON object with exactly these members in this order, duplicates included."""
    written = (to_json(name) + b":" + to_json(value) for name, value in members)
    return b"{" + b",".join(written) + b"}"


def es256_signature(key: Signer, signing_input: bytes) -> bytes:
    """ES256 as JWS carries it: raw r||s, 32 bytes each (in process or from a token)."""
    return key.sign(signing_input)


def der_signature(key: SigningKey, signing_input: bytes) -> bytes:
    """A genuine ECDSA P-256 signature in DER, the encoding JWS does not use."""
    return key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))


def malleated(signature: bytes) -> bytes:
    """The other valid ECDSA signature of the same message: (r, n - s), the high-S twin."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    return r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")


def malleate(token: str) -> str:
    """The same token carrying its malleated signature: it verifies, and only jti replay
    protection can tell it from the original."""
    signing_input, signature = token.rsplit(".", 1)
    return f"{signing_input}.{b64url_encode(malleated(b64url_decode(signature)))}"


def forge(
    header: Part, payload: Part, key: Signer | None, *, signature: bytes | None = None
) -> str:
    """A compact JWS of exactly these parts, ES256-signed by ``key`` over them unless
    ``signature`` is given; with neither, the signature is empty (as ``alg`` none has it)."""
    signing_input = encode_part(header) + "." + encode_part(payload)
    if signature is None:
        signature = b"" if key is None else es256_signature(key, signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def hs256(header: Part, payload: Part, secret: bytes) -> str:
    """A token MACed with HS256: with a public key as ``secret`` it is the algorithm-confusion
    attack on a verifier that lets the header choose the algorithm."""
    signing_input = (encode_part(header) + "." + encode_part(payload)).encode("ascii")
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return forge(header, payload, None, signature=mac)


def public_pem(key: VerifyingKey) -> bytes:
    """The public key as PEM: the secret an algorithm-confusion attacker would try first."""
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
