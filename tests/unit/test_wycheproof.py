"""Project Wycheproof vectors against the ES256 primitive, the JWK/JWKS loader and the JWS layer.

The vectors are vendored in ``tests/vectors/wycheproof`` (Apache 2.0; source and licence in
its README). A missing file is a failure, never a skip: a green run must mean the vectors were
actually checked.

Our profile is stricter than the vectors: we accept ES256 with P-256 keys only, so ``valid``
cases of other algorithms must be refused, while ``invalid`` cases must always be refused.
``ed25519_test.json`` is not driven here; it belongs to checkpoint signatures.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from trust.errors import KeyFormatError, VerificationError
from trust.jws import verify_compact, verify_signature
from trust.keys import VerifyingKey, load_jwks

ECDSA_FILE = "ecdsa_secp256r1_sha256_p1363_test.json"
JWS_FILE = "json_web_signature_test.json"
JWK_FILE = "json_web_key_test.json"

# json_web_signature_test.json: labelled inconsistently upstream (see the vectors' README).
# They are still run; their outcome is simply not asserted.
MISLABELLED = {JWS_FILE: frozenset({367, 370, 372, 373})}

# The ES256 / P-256 "valid" JWS vectors we must accept (json_web_signature_test.json).
EXPECTED_ES256_VALID = {(JWS_FILE, 18), (JWS_FILE, 378)}


def vectors_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"


@cache
def load_vectors(name: str) -> Mapping[str, Any] | None:
    path = vectors_dir() / name
    if not path.is_file():
        return None
    document: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _missing(name: str, first: str | None = None) -> list[Any]:
    """One failing case in place of the vectors, so a missing file fails and never skips."""
    return [pytest.param(first, None, id=f"{name}-MISSING")]


def ecdsa_cases() -> list[Any]:
    document = load_vectors(ECDSA_FILE)
    if document is None:
        return _missing(ECDSA_FILE)
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}")
        for group in document["testGroups"]
        for test in group["tests"]
    ]


def jose_cases() -> list[Any]:
    params: list[Any] = []
    for name in (JWS_FILE, JWK_FILE):
        document = load_vectors(name)
        if document is None:
            params.extend(_missing(name, name))
            continue
        stem = name.removesuffix("_test.json")
        params.extend(
            pytest.param(name, (group, test), id=f"{stem}-tc{test['tcId']}")
            for group in document["testGroups"]
            for test in group["tests"]
        )
    return params


def _require(name: str) -> Mapping[str, Any]:
    document = load_vectors(name)
    if document is None:
        pytest.fail(f"Wycheproof vectors missing: {vectors_dir() / name}")
    return document


# --- the vectors are there and complete ------------------------------------------------------


@pytest.mark.parametrize("name", [ECDSA_FILE, JWS_FILE, JWK_FILE])
def test_vector_file_is_present_and_complete(name: str) -> None:
    document = _require(name)
    count = sum(len(group["tests"]) for group in document["testGroups"])
    assert count == document["numberOfTests"]
    assert count > 0


# --- raw r||s ECDSA P-256 / SHA-256 ------------------------------------------------------------


def _hex_to_b64url(value: str) -> str:
    """A Wycheproof big-endian hex coordinate (maybe with a sign byte) as a 32-byte JWK member."""
    raw = int(value, 16).to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _ecdsa_key(group: Mapping[str, Any]) -> VerifyingKey:
    jwk = group.get("publicKeyJwk")
    if jwk is None:
        # A few groups (davidben's r/s edge cases) carry no JWK; build the same JWK from the
        # uncompressed point so the key still goes through the JWK loader.
        point = group["publicKey"]
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _hex_to_b64url(point["wx"]),
            "y": _hex_to_b64url(point["wy"]),
        }
    return VerifyingKey.from_jwk(jwk, require_thumbprint_kid=False)


@pytest.mark.parametrize(("group", "test"), ecdsa_cases())
def test_ecdsa_p256_p1363(group: Mapping[str, Any] | None, test: Mapping[str, Any] | None) -> None:
    if group is None or test is None:
        pytest.fail(f"Wycheproof vectors missing: {vectors_dir() / ECDSA_FILE}")
    key = _ecdsa_key(group)
    message = binascii.unhexlify(test["msg"])
    signature = binascii.unhexlify(test["sig"])
    try:
        verify_signature(message, signature, key)
        accepted = True
    except VerificationError:
        accepted = False

    result = test["result"]
    if result == "invalid":
        assert not accepted, f"accepted an invalid signature: {test['comment']} {test['flags']}"
    elif result == "valid":
        # High-S signatures are "valid" to Wycheproof and to us: malleability is handled by
        # jti replay protection, not by the signature check.
        assert accepted, f"refused a valid signature: {test['comment']} {test['flags']}"
    else:
        assert result == "acceptable"  # either outcome is fine


# --- JWS and JWK/JWKS --------------------------------------------------------------------------


def _load_public(public: Any) -> tuple[VerifyingKey, ...]:
    """The group's ``public`` member as keys: a JWKS, a single JWK or nothing. Refusal = ()."""
    if public is None:
        return ()
    try:
        if isinstance(public, Mapping) and "keys" in public:
            return load_jwks(public, require_thumbprint_kid=False)
        return (VerifyingKey.from_jwk(public, require_thumbprint_kid=False),)
    except KeyFormatError:
        return ()


def _accepts(public: Any, token: str) -> bool:
    for key in _load_public(public):
        try:
            verify_compact(token, key, typ=None)
        except VerificationError:
            continue
        return True
    return False


def _lenient_header(token: str) -> Mapping[str, Any]:
    """The header as a permissive decoder would read it; only used to classify a vector."""
    try:
        part = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return header if isinstance(header, dict) else {}


def _has_p256_key(public: Any) -> bool:
    """Whether the vector's own key material is an EC P-256 key (independent of our loader)."""
    if not isinstance(public, Mapping):
        return False
    candidates = public.get("keys", [public]) if "keys" in public else [public]
    return any(
        isinstance(jwk, Mapping) and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256"
        for jwk in candidates
    )


def _is_es256_p256(group: Mapping[str, Any], test: Mapping[str, Any]) -> bool:
    return _lenient_header(test["jws"]).get("alg") == "ES256" and _has_p256_key(group.get("public"))


@pytest.mark.parametrize(("name", "case"), jose_cases())
def test_jose_vector(name: str, case: tuple[Mapping[str, Any], Mapping[str, Any]] | None) -> None:
    if case is None:
        pytest.fail(f"Wycheproof vectors missing: {vectors_dir() / name}")
    group, test = case
    accepted = _accepts(group.get("public"), test["jws"])

    if test["tcId"] in MISLABELLED.get(name, frozenset()):
        return  # run, not asserted: the upstream label is known to be wrong
    result = test["result"]
    if result == "invalid":
        assert not accepted, f"accepted an invalid JWS: {test['comment']} {test['flags']}"
    elif result == "valid" and _is_es256_p256(group, test):
        assert accepted, f"refused a valid ES256 JWS: {test['comment']}"
    elif result == "valid":
        header = _lenient_header(test["jws"])
        assert not accepted, f"accepted {header.get('alg')!r}: we accept ES256 with P-256 only"
    else:
        assert result == "acceptable"


def test_es256_valid_vectors_are_accepted() -> None:
    """Not vacuous: some vectors really are accepted, exactly the ES256 / P-256 valid ones."""
    accepted_es256: set[tuple[str, int]] = set()
    accepted_any: set[tuple[str, int]] = set()
    for name in (JWS_FILE, JWK_FILE):
        for group in _require(name)["testGroups"]:
            for test in group["tests"]:
                if not _accepts(group.get("public"), test["jws"]):
                    continue
                accepted_any.add((name, test["tcId"]))
                if test["result"] == "valid" and _is_es256_p256(group, test):
                    accepted_es256.add((name, test["tcId"]))
    assert len(accepted_es256) > 0
    assert accepted_es256 == EXPECTED_ES256_VALID
    assert accepted_any == EXPECTED_ES256_VALID
