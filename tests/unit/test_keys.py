"""JWK / JWKS loading (``trust.keys``): only public EC P-256 signing keys get through."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trust.errors import KeyFormatError
from trust.keys import (
    SigningKey,
    VerifyingKey,
    b64_decode,
    b64_encode,
    jwks_document,
    load_jwks,
    thumbprint,
)

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_int(value: int, length: int) -> str:
    return b64(value.to_bytes(length, "big"))


def public_jwk(key: SigningKey = KEY, **changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(key.verifying_key.jwk)
    jwk.update(changes)
    return jwk


def without(mapping: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != name}


def refused_jwk(jwk: Any, **kwargs: Any) -> None:
    with pytest.raises(KeyFormatError):
        VerifyingKey.from_jwk(jwk, **kwargs)


def refused_jwks(document: Any, **kwargs: Any) -> None:
    with pytest.raises(KeyFormatError):
        load_jwks(document, **kwargs)


# --- positive controls -------------------------------------------------------------------------


def test_accepts_its_own_public_jwk() -> None:
    loaded = VerifyingKey.from_jwk(public_jwk())
    assert loaded.kid == KEY.kid
    assert loaded == KEY.verifying_key


def test_accepts_jwk_with_sig_use_verify_ops_and_es256_alg() -> None:
    jwk = public_jwk(use="sig", key_ops=["verify"], alg="ES256")
    assert VerifyingKey.from_jwk(jwk).kid == KEY.kid


def test_accepts_jwk_without_kid_and_assigns_the_thumbprint() -> None:
    assert VerifyingKey.from_jwk(without(public_jwk(), "kid")).kid == KEY.kid


def test_jwks_document_round_trips() -> None:
    keys = load_jwks(jwks_document([KEY.verifying_key, OTHER.verifying_key]))
    assert [key.kid for key in keys] == [KEY.kid, OTHER.kid]


# --- key type, curve and private material ------------------------------------------------------


def test_refuses_private_member_d() -> None:
    d = KEY.private_key.private_numbers().private_value
    refused_jwk(public_jwk(d=b64_int(d, 32)))


@pytest.mark.parametrize("member", ["p", "q", "dp", "dq", "qi", "oth", "k"])
def test_refuses_other_private_members(member: str) -> None:
    refused_jwk({**public_jwk(), member: "AQAB"})


def test_refuses_rsa_key() -> None:
    numbers = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    jwk = {"kty": "RSA", "n": b64_int(numbers.n, 256), "e": b64_int(numbers.e, 3)}
    refused_jwk(jwk)
    refused_jwk({**jwk, "alg": "RS256", "use": "sig"}, require_thumbprint_kid=False)


def test_refuses_rsa_kty_with_ec_members() -> None:
    refused_jwk(public_jwk(kty="RSA"))


def test_refuses_oct_key() -> None:
    refused_jwk({"kty": "oct", "k": b64(bytes(32)), "alg": "HS256"})
    refused_jwk({"kty": "oct"})


def test_refuses_okp_key() -> None:
    refused_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64(bytes(32))})


def test_refuses_p384_key() -> None:
    numbers = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-384", "x": b64_int(numbers.x, 48), "y": b64_int(numbers.y, 48)}
    refused_jwk(jwk)
    refused_jwk({**jwk, "crv": "P-256"})  # relabelled: the 48-byte coordinates still refuse


def test_refuses_p256_coordinates_labelled_another_curve() -> None:
    refused_jwk(public_jwk(crv="P-384"))
    refused_jwk(public_jwk(crv="secp256k1"))
    refused_jwk(without(public_jwk(), "crv"))


def test_refuses_point_not_on_curve() -> None:
    y = KEY.verifying_key.public_key.public_numbers().y
    refused_jwk(public_jwk(y=b64_int((y + 1) % P256_P, 32)), require_thumbprint_kid=False)


def test_refuses_coordinate_not_below_field_prime() -> None:
    # x + p encodes the same field element; it must not be reduced silently.
    numbers = KEY.verifying_key.public_key.public_numbers()
    if numbers.x + P256_P < 2**256:
        refused_jwk(public_jwk(x=b64_int(numbers.x + P256_P, 32)), require_thumbprint_kid=False)
    refused_jwk(public_jwk(x=b64_int(P256_P, 32)), require_thumbprint_kid=False)


def test_refuses_all_zero_point() -> None:
    refused_jwk(public_jwk(x=b64(bytes(32)), y=b64(bytes(32))), require_thumbprint_kid=False)


@pytest.mark.parametrize("jwk", [None, [], "EC", 1, ["kty", "EC"]])
def test_refuses_jwk_not_an_object(jwk: Any) -> None:
    refused_jwk(jwk)


def test_refuses_unknown_members() -> None:
    refused_jwk(public_jwk(x5c=["MIIB"]))
    refused_jwk(public_jwk(ext=True))


# --- kid ---------------------------------------------------------------------------------------


def test_refuses_kid_that_is_not_the_thumbprint_by_default() -> None:
    refused_jwk(public_jwk(kid="member-key-1"))
    refused_jwk(public_jwk(kid=OTHER.kid))


def test_keeps_declared_kid_when_thumbprint_not_required() -> None:
    loaded = VerifyingKey.from_jwk(public_jwk(kid="member-key-1"), require_thumbprint_kid=False)
    assert loaded.kid == "member-key-1"
    assert loaded.jwk["kid"] == "member-key-1"


@pytest.mark.parametrize("kid", ["", 1, ["a"], {"k": "v"}, True])
def test_refuses_kid_empty_or_not_a_string(kid: Any) -> None:
    refused_jwk(public_jwk(kid=kid), require_thumbprint_kid=False)


def test_thumbprint_matches_independent_rfc7638_computation() -> None:
    jwk = KEY.verifying_key.jwk
    # RFC 7638 section 3: the required members in lexicographic order, no whitespace.
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = b64(hashlib.sha256(canonical.encode("utf-8")).digest())
    assert thumbprint(jwk) == expected
    assert KEY.kid == expected
    # Optional members do not enter the thumbprint.
    assert thumbprint({**jwk, "use": "sig", "alg": "ES256", "kid": "x"}) == expected


def test_thumbprint_matches_jwcrypto() -> None:
    jwk_module = pytest.importorskip("jwcrypto.jwk")
    other = jwk_module.JWK(**without(dict(KEY.verifying_key.jwk), "kid"))
    assert other.thumbprint() == KEY.kid


# --- use, key_ops, alg -------------------------------------------------------------------------


def test_refuses_use_enc() -> None:
    refused_jwk(public_jwk(use="enc"))


@pytest.mark.parametrize("ops", [["sign"], ["verify", "sign"], ["encrypt"], [], "verify"])
def test_refuses_key_ops_other_than_verify(ops: Any) -> None:
    refused_jwk(public_jwk(key_ops=ops))


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS256", "HS256", "none", "es256"])
def test_refuses_alg_other_than_es256(alg: str) -> None:
    refused_jwk(public_jwk(alg=alg))


# --- coordinate encoding -----------------------------------------------------------------------


def test_refuses_non_canonical_base64url_coordinate() -> None:
    x = public_jwk()["x"]
    assert len(x) == 43  # 258 bits for 256: two unused trailing bits
    last = B64URL_ALPHABET.index(x[-1])
    aliased = x[:-1] + B64URL_ALPHABET[last ^ 1]
    padded = base64.urlsafe_b64decode(aliased + "=")
    assert padded == base64.urlsafe_b64decode(x + "=")  # a lenient decoder sees the same x
    refused_jwk(public_jwk(x=aliased))


def test_refuses_padded_coordinate() -> None:
    refused_jwk(public_jwk(x=public_jwk()["x"] + "="))


def test_refuses_standard_base64_coordinate() -> None:
    raw = bytes([0xFB, 0xFF]) + bytes(30)  # encodes with '-' and '_' in base64url
    assert "+" in base64.b64encode(raw).decode() or "/" in base64.b64encode(raw).decode()
    std = base64.b64encode(raw).rstrip(b"=").decode()
    refused_jwk(public_jwk(x=std), require_thumbprint_kid=False)


def test_refuses_31_byte_coordinate() -> None:
    # Scalar 379 gives an x whose first byte is 0x00, so the 31-byte form is the *same* x:
    # only the fixed-width rule can refuse it.
    key = SigningKey.from_private_key(ec.derive_private_key(379, ec.SECP256R1()))
    jwk = dict(key.verifying_key.jwk)
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    assert raw[0] == 0
    refused_jwk({**jwk, "x": b64(raw[1:])})
    refused_jwk({**jwk, "x": b64(raw[1:])}, require_thumbprint_kid=False)
    refused_jwk(public_jwk(x=public_jwk()["x"][1:]), require_thumbprint_kid=False)


def test_refuses_33_byte_coordinate_with_leading_zero() -> None:
    raw = KEY.verifying_key.public_key.public_numbers().y.to_bytes(32, "big")
    refused_jwk(public_jwk(y=b64(b"\x00" + raw)))


def test_refuses_coordinate_not_a_string() -> None:
    x = KEY.verifying_key.public_key.public_numbers().x
    refused_jwk(public_jwk(x=x))
    refused_jwk(without(public_jwk(), "y"))


@pytest.mark.parametrize(("scalar", "coordinate"), [(379, "x"), (43, "y")])
def test_accepts_coordinate_with_leading_zero_byte(scalar: int, coordinate: str) -> None:
    # Fixed-width coordinates: a key whose coordinate starts with 0x00 loads and round trips.
    # The scalars are the smallest private keys whose x (resp. y) is below 2**248.
    key = SigningKey.from_private_key(ec.derive_private_key(scalar, ec.SECP256R1()))
    jwk = dict(key.verifying_key.jwk)
    assert base64.urlsafe_b64decode(jwk[coordinate] + "=")[0] == 0
    assert VerifyingKey.from_jwk(jwk).kid == key.kid


# --- JWKS --------------------------------------------------------------------------------------


def test_refuses_duplicate_kid_in_jwks() -> None:
    refused_jwks({"keys": [public_jwk(), public_jwk()]})


def test_refuses_duplicate_declared_kid_for_different_keys() -> None:
    document = {"keys": [public_jwk(kid="k1"), public_jwk(OTHER, kid="k1")]}
    refused_jwks(document, require_thumbprint_kid=False)


def test_refuses_jwks_with_one_bad_key() -> None:
    refused_jwks({"keys": [public_jwk(), public_jwk(OTHER, use="enc")]})


def test_refuses_jwks_holding_a_private_key() -> None:
    d = OTHER.private_key.private_numbers().private_value
    refused_jwks({"keys": [public_jwk(), public_jwk(OTHER, d=b64_int(d, 32))]})


@pytest.mark.parametrize(
    "document",
    [
        {"keys": []},
        {},
        {"keys": public_jwk()},
        {"keys": [public_jwk()], "extra": 1},
        [public_jwk()],
        public_jwk(),
        None,
    ],
    ids=["empty", "no-keys", "keys-not-list", "extra-member", "bare-list", "bare-jwk", "null"],
)
def test_refuses_malformed_jwks(document: Any) -> None:
    refused_jwks(document)


# --- PEM ---------------------------------------------------------------------------------------


def test_signing_key_pem_round_trip() -> None:
    pem = KEY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    restored = SigningKey.from_pem(pem)
    assert restored.kid == KEY.kid
    assert restored.verifying_key == KEY.verifying_key
    signature = restored.private_key.sign(b"message", ec.ECDSA(hashes.SHA256()))
    KEY.verifying_key.public_key.verify(signature, b"message", ec.ECDSA(hashes.SHA256()))


def test_verifying_key_from_public_pem() -> None:
    pem = KEY.verifying_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert VerifyingKey.from_pem(pem) == KEY.verifying_key


def test_refuses_pem_of_other_key_types() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    pem = p384.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(pem)
    with pytest.raises(KeyFormatError):
        VerifyingKey.from_pem(
            p384.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def test_refuses_encrypted_or_garbage_pem() -> None:
    encrypted = KEY.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(encrypted)
    with pytest.raises(KeyFormatError):
        SigningKey.from_pem(b"not a pem")
    with pytest.raises(KeyFormatError):
        VerifyingKey.from_pem(KEY.to_pem())  # a private PEM is not a public one


def test_jwk_of_signing_key_is_public_only() -> None:
    assert set(KEY.verifying_key.jwk) == {"kty", "crv", "x", "y", "kid"}
    (published,) = json.loads(json.dumps(jwks_document([KEY.verifying_key])))["keys"]
    assert set(published) == {"kty", "crv", "x", "y", "kid", "use", "alg"}


@pytest.mark.parametrize("raw", [b"", b"\x00", b"ab", b"abc", bytes(range(32)), bytes(33)])
def test_standard_base64_round_trips(raw: bytes) -> None:
    assert b64_decode(b64_encode(raw)) == raw


@pytest.mark.parametrize(
    "text",
    [
        "AQ",  # padding missing
        "AQ=",  # padding short
        "AR==",  # spare bits set: decodes to the same byte as "AQ=="
        "AQI=x",
        "A-_=",  # base64url alphabet
        "AQ==\n",
        " AQ==",
        "AQ\u00e9=",
        "====",
    ],
)
def test_standard_base64_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        b64_decode(text)
