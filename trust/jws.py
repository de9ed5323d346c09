"""The JWS profile of every ax-broker message, and the only module that touches PyJWT.

One profile for all: compact serialisation of at most 16 KiB (the registry: 1 MiB), a protected
header of exactly ``alg`` (ES256), ``kid`` and ``typ`` (exact, one per message type, RFC 8725
section 3.11), JSON objects with no duplicate members, and claims with a string ``iss`` that
owns the key, an exact string ``aud``, integer ``iat``/``exp``, a bounded lifetime, a small
leeway and a ``jti`` of at least 128 bits. PyJWT on its own accepts duplicate keys, ``aud``
lists, any ``typ``, float ``exp`` and huge tokens; so parsing and every claim check live here,
and PyJWT is used only for the ES256 primitive. Swapping in a faster implementation means
changing this module alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from jwt.algorithms import ECAlgorithm

from trust.errors import KeyUnavailable, VerificationError
from trust.keys import Signer, VerifyingKey, b64url_decode, b64url_encode

JWT_MEDIA_TYPE = "application/jwt"  # RFC 7519 §10.3.1: every message travels as one
MAX_TOKEN_BYTES = 16 * 1024
MAX_LEEWAY_SECONDS = 30
ALGORITHM = "ES256"
HEADER_MEMBERS = frozenset({"alg", "kid", "typ"})
JTI_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{22,128}")  # 22 base64url characters: 128 bits
_ES256 = ECAlgorithm(ECAlgorithm.SHA256)


@dataclass(frozen=True, slots=True)
class Profile:
    """What one message type requires: its ``typ``, the longest lifetime it may claim and its
    largest compact size (16 KiB for every message; the registry, a document a scheme of
    hundreds of members outgrows, may be larger)."""

    typ: str
    max_lifetime: int
    max_bytes: int = MAX_TOKEN_BYTES


ELIGIBILITY_QUERY = Profile("eligibility-query+jwt", 300)
ELIGIBILITY_RESPONSE = Profile("eligibility-response+jwt", 300)
ATTRIBUTE_REQUEST = Profile("attribute-request+jwt", 300)
ATTRIBUTE_RESPONSE = Profile("attribute-response+jwt", 300)
AUDIT_REQUEST = Profile("audit-request+jwt", 300)
CONSENT_WITHDRAWAL = Profile("consent-withdrawal+jwt", 300)
RESIDENT_ACCESS = Profile("resident-access+jwt", 300)  # a council portal: who checked me?
# The longest lifetime any message a member sends to the broker may claim.
MAX_LIFETIME_SECONDS = max(
    p.max_lifetime for p in (ELIGIBILITY_QUERY, AUDIT_REQUEST, CONSENT_WITHDRAWAL)
)
MAX_REGISTRY_BYTES = 64 * MAX_TOKEN_BYTES
TRUST_REGISTRY = Profile("trust-registry+jwt", 400 * 24 * 3600, MAX_REGISTRY_BYTES)
# One signature over up to 1,000 items (trust.batch); each item is a few hundred bytes.
MAX_BATCH_TOKEN_BYTES = 1024 * 1024
ATTRIBUTE_BATCH_REQUEST = Profile("attribute-batch-request+jwt", 300, MAX_BATCH_TOKEN_BYTES)
ATTRIBUTE_BATCH_RESPONSE = Profile("attribute-batch-response+jwt", 300, MAX_BATCH_TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """A verifying key with the member that owns it and the window in which it is valid."""

    owner: str
    key: VerifyingKey
    not_before: int | None = None
    not_after: int | None = None

    def valid_at(self, now: int) -> bool:
        if self.not_before is not None and now < self.not_before:
            return False
        return self.not_after is None or now <= self.not_after


KeyLookup = Callable[[str], TrustedKey | None]


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature, header and registered claims all passed the profile."""

    issuer: str
    kid: str
    jti: str
    issued_at: int
    expires_at: int
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Compact:
    header: Mapping[str, Any]
    payload: bytes
    signing_input: bytes
    signature: bytes


class _DuplicateMember(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _DuplicateMember(name)
        result[name] = value
    return result


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON: valid UTF-8 (no lone surrogates), finite numbers, no duplicate members.

    orjson validates encoding and numbers fast; the standard parser's hook finds duplicates,
    which orjson silently collapses. Raises ``ValueError`` on anything else than an object.
    """
    try:
        orjson.loads(raw)
        value = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_float=_finite,
            parse_constant=_reject_constant,
        )
    except (orjson.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("malformed JSON") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def decode_compact(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> Compact:
    """Split and strictly decode a compact JWS; no signature or claim is checked yet."""
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    if len(raw) > max_bytes:
        raise VerificationError(f"token larger than {max_bytes // 1024} KiB")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise VerificationError("not a compact JWS of three parts")
    try:
        header_bytes = b64url_decode(parts[0])
        payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise VerificationError("a part is not canonical base64url") from exc
    try:
        header = parse_json_object(header_bytes)
    except ValueError as exc:
        raise VerificationError("header is not a strict JSON object") from exc
    return Compact(header, payload, parts[0] + b"." + parts[1], signature)


def check_header(header: Mapping[str, Any], typ: str | None) -> str:
    """Enforce the header allow-list; returns the ``kid``."""
    extra = set(header) - HEADER_MEMBERS
    if extra:
        # never echo the names: they are the caller's text and the reason is logged
        raise VerificationError(f"{len(extra)} header member(s) not in the allow-list")
    if header.get("alg") != ALGORITHM:
        raise VerificationError("alg is not ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise VerificationError("kid missing")
    if typ is not None and header.get("typ") != typ:
        raise VerificationError("typ is not the one this message requires")
    return kid


def verify_signature(signing_input: bytes, signature: bytes, key: VerifyingKey) -> None:
    if len(signature) != 64 or not _ES256.verify(signing_input, key.public_key, signature):
        raise VerificationError("bad signature")


def verify_compact(token: str | bytes, key: VerifyingKey, typ: str | None = None) -> bytes:
    """Signature-level check against one key: strict form, header allow-list, ES256.

    Returns the payload bytes. Used for vectors and as the first half of :func:`verify`.
    """
    compact = decode_compact(token)
    kid = check_header(compact.header, typ)
    if kid != key.kid:
        raise VerificationError("kid does not name this key")
    verify_signature(compact.signing_input, compact.signature, key)
    return compact.payload


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:
        raise VerificationError(f"{name} must be an integer")
    return value


def verify(
    token: str | bytes,
    profile: Profile,
    *,
    keys: KeyLookup,
    audience: str,
    now: int,
    leeway: int = MAX_LEEWAY_SECONDS,
) -> Verified:
    """Verify a message of ``profile`` addressed to ``audience``, or raise VerificationError.

    The key is looked up by ``kid`` and must belong to the ``iss`` the claims name and be
    valid now: one member can never sign as another.
    """
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise ValueError("leeway must be between 0 and 30 seconds")
    compact = decode_compact(token, max_bytes=profile.max_bytes)
    kid = check_header(compact.header, profile.typ)
    trusted = keys(kid)
    if trusted is None:
        raise VerificationError("unknown kid")
    verify_signature(compact.signing_input, compact.signature, trusted.key)
    try:
        claims = parse_json_object(compact.payload)
    except ValueError as exc:
        raise VerificationError("payload is not a strict JSON object") from exc

    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer != trusted.owner:
        raise VerificationError("iss does not own the signing key")
    if not trusted.valid_at(now):
        raise VerificationError("signing key outside its validity window")
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud != audience:
        raise VerificationError("aud is not exactly this recipient")
    issued_at = _int_claim(claims, "iat")
    expires_at = _int_claim(claims, "exp")
    if expires_at <= issued_at or expires_at - issued_at > profile.max_lifetime:
        raise VerificationError("lifetime out of bounds")
    if issued_at > now + leeway:
        raise VerificationError("iat in the future")
    if now >= expires_at + leeway:
        raise VerificationError("expired")
    if "nbf" in claims and _int_claim(claims, "nbf") > now + leeway:
        raise VerificationError("not yet valid")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not JTI_PATTERN.fullmatch(jti):
        raise VerificationError("jti missing or shorter than 128 bits")
    return Verified(issuer, kid, jti, issued_at, expires_at, claims)


def verify_as_issued(token: str | bytes, profile: Profile, *, keys: KeyLookup) -> Verified:
    """Verify a message as it stood when issued, for evidence: an answer a council shows an
    auditor has long expired. Every check of :func:`verify` runs, with ``now`` its own ``iat``
    and the audience its own ``aud``: the signature, the key's owner and validity window at
    that time, the profile and the lifetime."""
    compact = decode_compact(token, max_bytes=profile.max_bytes)
    try:
        claims = parse_json_object(compact.payload)
    except ValueError as exc:
        raise VerificationError("payload is not a strict JSON object") from exc
    audience, issued_at = claims.get("aud"), claims.get("iat")
    if not isinstance(audience, str) or type(issued_at) is not int:
        raise VerificationError("aud or iat missing")
    return verify(token, profile, keys=keys, audience=audience, now=issued_at)


@lru_cache(maxsize=256)
def _encoded_header(kid: str, typ: str) -> bytes:
    header = orjson.dumps({"alg": ALGORITHM, "kid": kid, "typ": typ})
    return b64url_encode(header).encode("ascii")


def sign(claims: Mapping[str, Any], key: Signer, profile: Profile) -> str:
    """Sign ``claims`` as a message of ``profile``. The caller supplies iss/aud/iat/exp/jti.

    ``key`` may live in a token: it raises :class:`~trust.errors.KeyUnavailable` if gone."""
    payload = b64url_encode(orjson.dumps(claims)).encode("ascii")
    signing_input = _encoded_header(key.kid, profile.typ) + b"." + payload
    signature = key.sign(signing_input)
    if len(signature) != 64:  # a signer that breaks the contract must not emit a bad token
        raise KeyUnavailable("the signer returned a signature that is not raw r||s")
    return (signing_input + b"." + b64url_encode(signature).encode("ascii")).decode("ascii")
