"""Hostile tokens against the JWS profile (``trust.jws.verify``).

Every token here is forged with ``trust.testing``: header and payload JSON bytes chosen by the
test, base64url-encoded and signed over exactly that signing input (raw ES256), so each attack
is well signed and carries exactly one defect. The positive controls use the same forging helpers,
which is what makes each refusal attributable to the defect under test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trust import testing
from trust.errors import VerificationError
from trust.jws import (
    ELIGIBILITY_QUERY,
    MAX_TOKEN_BYTES,
    TrustedKey,
    Verified,
    sign,
    verify,
)
from trust.keys import SigningKey
from trust.testing import (
    der_signature,
    encode_part,
    es256_signature,
    hs256,
    malleated,
    public_pem,
    raw_object,
    to_json,
)

NOW = 1_750_000_000
AUDIENCE = "axb-broker"
TYP = ELIGIBILITY_QUERY.typ
JTI = "Zk3vQm8pLr2sTn5wXy7aBc"  # 22 characters of the allowed alphabet: 132 bits
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

ALICE = SigningKey.generate()
BOB = SigningKey.generate()
MALLORY = SigningKey.generate()  # a key nobody registered


# --- forging helpers ---------------------------------------------------------------------------


def lenient_b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def header_for(key: SigningKey = ALICE, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {"alg": "ES256", "kid": key.kid, "typ": TYP}
    header.update(changes)
    return header


def claims_for(issuer: str = "alice", **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "iat": NOW - 10,
        "exp": NOW + 50,
        "jti": JTI,
    }
    claims.update(changes)
    return claims


def without(mapping: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != name}


def forge(
    header: Mapping[str, Any] | bytes | str | None = None,
    payload: Mapping[str, Any] | bytes | str | None = None,
    key: SigningKey | None = ALICE,
    signature: bytes | None = None,
) -> str:
    """``trust.testing.forge`` with Alice's header, claims and key unless others are given (a
    dict is JSON, bytes are the part's content, a str is the part already base64url-encoded)."""
    return testing.forge(
        header_for() if header is None else header,
        claims_for() if payload is None else payload,
        key,
        signature=signature,
    )


def registry(**overrides: TrustedKey) -> dict[str, TrustedKey]:
    keys = {
        ALICE.kid: TrustedKey("alice", ALICE.verifying_key),
        BOB.kid: TrustedKey("bob", BOB.verifying_key),
    }
    keys.update(overrides)
    return keys


def check(
    token: str | bytes,
    *,
    keys: Mapping[str, TrustedKey] | None = None,
    now: int = NOW,
    leeway: int = 30,
) -> Verified:
    lookup = registry() if keys is None else keys
    return verify(
        token, ELIGIBILITY_QUERY, keys=lookup.get, audience=AUDIENCE, now=now, leeway=leeway
    )


def refused(token: str | bytes, **kwargs: Any) -> None:
    with pytest.raises(VerificationError):
        check(token, **kwargs)


def with_last_char_bits_flipped(part: str) -> str:
    """The same bytes under a lenient decoder: only the unused trailing bits change."""
    last = B64URL_ALPHABET.index(part[-1])
    return part[:-1] + B64URL_ALPHABET[last ^ 1]


def replace_part(token: str, index: int, new: str) -> str:
    parts = token.split(".")
    parts[index] = new
    return ".".join(parts)


# --- positive controls -------------------------------------------------------------------------


def test_accepts_a_well_formed_forged_token() -> None:
    verified = check(forge())
    assert verified.issuer == "alice"
    assert verified.kid == ALICE.kid
    assert verified.jti == JTI
    assert (verified.issued_at, verified.expires_at) == (NOW - 10, NOW + 50)
    assert verified.claims["aud"] == AUDIENCE


def test_accepts_a_token_made_by_sign() -> None:
    token = sign(claims_for(), ALICE, ELIGIBILITY_QUERY)
    assert check(token).issuer == "alice"
    assert check(token.encode("ascii")).issuer == "alice"


def test_accepts_another_members_token_with_its_own_key() -> None:
    assert check(forge(header_for(BOB), claims_for("bob"), BOB)).issuer == "bob"


def test_accepts_extra_private_claims() -> None:
    assert check(forge(payload=claims_for(purpose="blue-badge", n=[1, 2.5, None])))


# --- algorithm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", None, ""])
def test_refuses_alg_none(alg: str | None) -> None:
    refused(forge(header_for(alg=alg), key=None))


def test_refuses_alg_none_even_with_a_valid_signature_attached() -> None:
    refused(forge(header_for(alg="none")))


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(public_pem(ALICE.verifying_key), id="pem"),
        pytest.param(public_pem(ALICE.verifying_key).strip(), id="pem-stripped"),
        pytest.param(to_json(dict(ALICE.verifying_key.jwk)), id="jwk-json"),
        pytest.param(
            json.dumps(dict(ALICE.verifying_key.jwk), sort_keys=True).encode(), id="jwk-sorted"
        ),
    ],
)
def test_refuses_hs256_keyed_with_the_public_key(secret: bytes) -> None:
    refused(hs256(header_for(alg="HS256"), claims_for(), secret))


@pytest.mark.parametrize("alg", ["ES384", "ES512", "RS256", "PS256", "es256", "ES256 ", "EdDSA"])
def test_refuses_any_alg_but_es256(alg: str) -> None:
    # Signed with a genuine ES256 signature: only the header's alg is wrong.
    refused(forge(header_for(alg=alg)))


def test_refuses_alg_as_a_list() -> None:
    refused(forge(header_for(alg=["ES256"])))


# --- kid and key ownership ---------------------------------------------------------------------


def test_refuses_unknown_kid() -> None:
    refused(forge(header_for(MALLORY), key=MALLORY))


def test_refuses_another_members_kid_and_key_for_my_iss() -> None:
    # Bob signs, with his own key and kid, a token that claims to come from Alice.
    refused(forge(header_for(BOB), claims_for("alice"), BOB))


def test_refuses_a_kid_that_names_a_key_other_than_the_signer() -> None:
    # Bob signs with his key but names Alice's kid, claiming to be Alice.
    refused(forge(header_for(ALICE), claims_for("alice"), BOB))


def test_refuses_kid_missing() -> None:
    refused(forge(without(header_for(), "kid")))


def test_refuses_kid_missing_even_if_the_lookup_answers_anything() -> None:
    # The header check itself refuses; it does not rely on the lookup failing on "None" or "".
    def answer_anything(kid: str) -> TrustedKey:
        return TrustedKey("alice", ALICE.verifying_key)

    token = forge(without(header_for(), "kid"))
    with pytest.raises(VerificationError):
        verify(token, ELIGIBILITY_QUERY, keys=answer_anything, audience=AUDIENCE, now=NOW)
    token = forge(header_for(kid=""))
    with pytest.raises(VerificationError):
        verify(token, ELIGIBILITY_QUERY, keys=answer_anything, audience=AUDIENCE, now=NOW)


@pytest.mark.parametrize("kid", ["", None, 7, ["x"]])
def test_refuses_kid_empty_or_not_a_string(kid: Any) -> None:
    refused(forge(header_for(kid=kid)))


def test_refuses_key_before_its_not_before() -> None:
    keys = registry(**{ALICE.kid: TrustedKey("alice", ALICE.verifying_key, not_before=NOW + 1)})
    refused(forge(), keys=keys)


def test_refuses_key_after_its_not_after() -> None:
    keys = registry(**{ALICE.kid: TrustedKey("alice", ALICE.verifying_key, not_after=NOW - 1)})
    refused(forge(), keys=keys)


def test_accepts_key_on_the_edges_of_its_window() -> None:
    key = TrustedKey("alice", ALICE.verifying_key, not_before=NOW, not_after=NOW)
    assert check(forge(), keys=registry(**{ALICE.kid: key}))


# --- typ -------------------------------------------------------------------------------------


def test_refuses_typ_missing() -> None:
    refused(forge(without(header_for(), "typ")))


def test_refuses_typ_of_another_message_type() -> None:
    refused(forge(header_for(typ="eligibility-response+jwt")))


def test_refuses_typ_in_different_case() -> None:
    refused(forge(header_for(typ="Eligibility-Query+JWT")))


def test_refuses_generic_jwt_typ() -> None:
    refused(forge(header_for(typ="JWT")))


def test_refuses_typ_without_the_jwt_suffix() -> None:
    refused(forge(header_for(typ="eligibility-query")))


def test_refuses_typ_with_application_prefix() -> None:
    refused(forge(header_for(typ="application/eligibility-query+jwt")))


# --- header allow-list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        pytest.param("jku", "https://attacker.example/jwks.json", id="jku"),
        pytest.param("jwk", dict(MALLORY.verifying_key.jwk), id="jwk"),
        pytest.param("x5u", "https://attacker.example/cert.pem", id="x5u"),
        pytest.param("x5c", ["MIIBszCCAVmgAwIBAgIUQ=="], id="x5c"),
        pytest.param("x5t", "dGhpcyBpcyBub3QgYSB0aHVtYnByaW50", id="x5t"),
        pytest.param("x5t#S256", "dGhpcyBpcyBub3QgYSB0aHVtYnByaW50", id="x5t#S256"),
        pytest.param("crit", ["exp"], id="crit"),
        pytest.param("b64", False, id="b64"),
        pytest.param("zip", "DEF", id="zip"),
        pytest.param("cty", "JWT", id="cty"),
        pytest.param("enc", "A256GCM", id="enc"),
        pytest.param("nonce", "abc", id="nonce"),
    ],
)
def test_refuses_extra_header_member(member: str, value: Any) -> None:
    refused(forge(header_for(**{member: value})))


def test_refuses_embedded_jwk_that_matches_the_signer() -> None:
    # Even when the embedded key is the attacker's own and the kid is unknown.
    refused(forge(header_for(MALLORY, jwk=dict(MALLORY.verifying_key.jwk)), key=MALLORY))


def test_refuses_duplicate_alg_in_header_none_first() -> None:
    # A first-wins parser sees "none", a last-wins parser sees "ES256".
    refused(forge(raw_object(("alg", "none"), ("alg", "ES256"), ("kid", ALICE.kid), ("typ", TYP))))


def test_refuses_duplicate_alg_in_header_none_last() -> None:
    refused(forge(raw_object(("alg", "ES256"), ("kid", ALICE.kid), ("typ", TYP), ("alg", "none"))))


def test_refuses_duplicate_alg_in_header_same_value() -> None:
    refused(forge(raw_object(("alg", "ES256"), ("alg", "ES256"), ("kid", ALICE.kid), ("typ", TYP))))


def test_refuses_duplicate_kid_in_header() -> None:
    refused(forge(raw_object(("alg", "ES256"), ("kid", BOB.kid), ("kid", ALICE.kid), ("typ", TYP))))


def test_refuses_duplicate_typ_in_header() -> None:
    header = raw_object(("alg", "ES256"), ("kid", ALICE.kid), ("typ", "JWT"), ("typ", TYP))
    refused(forge(header))


def test_accepts_raw_object_header_control() -> None:
    assert check(forge(raw_object(("alg", "ES256"), ("kid", ALICE.kid), ("typ", TYP))))


def test_refuses_header_not_an_object() -> None:
    refused(forge(to_json(["ES256", ALICE.kid, TYP])))


def test_refuses_header_not_json() -> None:
    refused(forge(b"alg=ES256"))


# --- aud ---------------------------------------------------------------------------------------


def test_refuses_aud_as_list_containing_the_audience() -> None:
    refused(forge(payload=claims_for(aud=[AUDIENCE])))


def test_refuses_aud_of_another_recipient() -> None:
    refused(forge(payload=claims_for(aud="axb-connector")))


def test_refuses_aud_with_different_case_or_padding() -> None:
    refused(forge(payload=claims_for(aud="AXB-broker")))
    refused(forge(payload=claims_for(aud=AUDIENCE + " ")))


def test_refuses_aud_missing() -> None:
    refused(forge(payload=without(claims_for(), "aud")))


# --- time --------------------------------------------------------------------------------------


def test_refuses_expired_beyond_leeway() -> None:
    refused(forge(payload=claims_for(iat=NOW - 100, exp=NOW - 31)))


def test_refuses_expired_exactly_at_leeway() -> None:
    refused(forge(payload=claims_for(iat=NOW - 100, exp=NOW - 30)))


def test_accepts_expired_within_leeway() -> None:
    assert check(forge(payload=claims_for(iat=NOW - 100, exp=NOW - 29)))


def test_refuses_at_exp_with_zero_leeway() -> None:
    token = forge(payload=claims_for(iat=NOW - 100, exp=NOW))
    refused(token, leeway=0)
    assert check(token, leeway=1)


def test_refuses_iat_in_the_future_beyond_leeway() -> None:
    refused(forge(payload=claims_for(iat=NOW + 31, exp=NOW + 91)))


def test_accepts_iat_in_the_future_within_leeway() -> None:
    assert check(forge(payload=claims_for(iat=NOW + 30, exp=NOW + 90)))


def test_refuses_lifetime_over_profile_maximum() -> None:
    refused(forge(payload=claims_for(iat=NOW, exp=NOW + ELIGIBILITY_QUERY.max_lifetime + 1)))


def test_accepts_lifetime_of_exactly_the_profile_maximum() -> None:
    assert check(forge(payload=claims_for(iat=NOW, exp=NOW + ELIGIBILITY_QUERY.max_lifetime)))


def test_refuses_exp_equal_to_iat() -> None:
    refused(forge(payload=claims_for(iat=NOW, exp=NOW)))


def test_refuses_exp_before_iat() -> None:
    refused(forge(payload=claims_for(iat=NOW + 10, exp=NOW - 10)))


def test_refuses_float_exp() -> None:
    refused(forge(payload=claims_for(exp=float(NOW + 50))))


def test_refuses_exp_in_exponent_notation() -> None:
    payload = to_json(without(claims_for(), "exp"))[:-1] + b',"exp":1.75000005e9}'
    refused(forge(payload))


def test_refuses_string_iat() -> None:
    refused(forge(payload=claims_for(iat=str(NOW - 10))))


def test_refuses_bool_exp() -> None:
    refused(forge(payload=claims_for(exp=True)))


def test_refuses_missing_exp() -> None:
    refused(forge(payload=without(claims_for(), "exp")))


def test_refuses_missing_iat() -> None:
    refused(forge(payload=without(claims_for(), "iat")))


def test_refuses_nbf_in_the_future() -> None:
    refused(forge(payload=claims_for(nbf=NOW + 31)))


def test_refuses_leeway_over_30_seconds() -> None:
    with pytest.raises(ValueError, match="leeway"):
        check(forge(), leeway=31)


def test_refuses_negative_leeway() -> None:
    with pytest.raises(ValueError, match="leeway"):
        check(forge(), leeway=-1)


# --- jti and iss -------------------------------------------------------------------------------


def test_refuses_missing_jti() -> None:
    refused(forge(payload=without(claims_for(), "jti")))


def test_refuses_short_jti() -> None:
    refused(forge(payload=claims_for(jti=JTI[:21])))


def test_refuses_overlong_jti() -> None:
    assert check(forge(payload=claims_for(jti="a" * 128)))
    refused(forge(payload=claims_for(jti="a" * 129)))


@pytest.mark.parametrize(
    "jti",
    [
        JTI + "/",
        JTI + " ",
        JTI + "\n",
        JTI + "=",
        JTI[:-1] + "é",
        JTI + "\x00",
    ],
    ids=["slash", "space", "newline", "equals", "non-ascii", "nul"],
)
def test_refuses_jti_with_bad_characters(jti: str) -> None:
    refused(forge(payload=claims_for(jti=jti)))


def test_refuses_jti_not_a_string() -> None:
    refused(forge(payload=claims_for(jti=12345678901234567890123)))


def test_refuses_iss_missing() -> None:
    refused(forge(payload=without(claims_for(), "iss")))


@pytest.mark.parametrize("iss", [["alice"], {"name": "alice"}, 1, None, True])
def test_refuses_iss_not_a_string(iss: Any) -> None:
    refused(forge(payload=claims_for(iss=iss)))


# --- payload JSON ------------------------------------------------------------------------------


def _replace_member(claims: Mapping[str, Any], name: str, raw_value: bytes) -> bytes:
    """Claims JSON with ``name``'s value written raw (to express what json.dumps will not)."""
    body = to_json(without(claims, name))
    return body[:-1] + b',"' + name.encode() + b'":' + raw_value + b"}"


def test_refuses_duplicate_aud_in_payload() -> None:
    claims = to_json(claims_for(aud="axb-connector"))
    refused(forge(claims[:-1] + b',"aud":"' + AUDIENCE.encode() + b'"}'))
    claims = to_json(claims_for())
    refused(forge(claims[:-1] + b',"aud":"axb-connector"}'))


def test_refuses_duplicate_iss_in_payload() -> None:
    claims = to_json(claims_for())
    refused(forge(claims[:-1] + b',"iss":"alice"}'))


def test_refuses_duplicate_member_spelled_with_an_escape() -> None:
    claims = to_json(claims_for())
    refused(forge(claims[:-1] + b',"\\u0061ud":"' + AUDIENCE.encode() + b'"}'))


def test_refuses_nested_jwt_as_payload() -> None:
    inner = forge()
    refused(forge(header_for(), inner.encode("ascii")))


def test_refuses_nested_jwt_as_a_json_string_payload() -> None:
    refused(forge(header_for(cty="JWT"), to_json(forge())))
    refused(forge(header_for(), to_json(forge())))


def test_refuses_payload_json_array() -> None:
    refused(forge(payload=to_json([claims_for()])))


def test_refuses_payload_not_json() -> None:
    refused(forge(payload=b"iss=alice&aud=axb-broker"))


def test_refuses_empty_payload() -> None:
    refused(forge(payload=b""))


def test_refuses_invalid_utf8_in_payload() -> None:
    refused(forge(payload=_replace_member(claims_for(), "note", b'"caf\xe9"')))


def test_refuses_utf8_encoded_surrogate_in_payload() -> None:
    refused(forge(payload=_replace_member(claims_for(), "note", b'"\xed\xa0\x80"')))


def test_refuses_lone_surrogate_escape_in_a_string() -> None:
    refused(forge(payload=_replace_member(claims_for(), "note", b'"\\ud800"')))


def test_refuses_lone_surrogate_escape_in_jti() -> None:
    refused(forge(payload=_replace_member(claims_for(), "jti", b'"' + JTI.encode() + b'\\ud800"')))


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_refuses_non_finite_numbers(number: bytes) -> None:
    refused(forge(payload=_replace_member(claims_for(), "score", number)))


@pytest.mark.parametrize("number", [b"NaN", b"1e400"])
def test_refuses_non_finite_exp(number: bytes) -> None:
    refused(forge(payload=_replace_member(claims_for(), "exp", number)))


def test_refuses_byte_order_mark_before_payload() -> None:
    refused(forge(payload=b"\xef\xbb\xbf" + to_json(claims_for())))


def test_refuses_trailing_garbage_after_payload() -> None:
    refused(forge(payload=to_json(claims_for()) + b"x"))


# --- size and shape ----------------------------------------------------------------------------


def _padded_token(filler: int) -> str:
    return forge(payload=claims_for(pad="a" * filler))


def test_refuses_oversize_token_even_if_validly_signed() -> None:
    token = _padded_token(MAX_TOKEN_BYTES)
    assert len(token) > MAX_TOKEN_BYTES
    refused(token)


def test_size_limit_is_16_kib() -> None:
    # Find the largest token not over the cap (the signature is always 86 characters).
    overhead = len(_padded_token(0))
    filler = (MAX_TOKEN_BYTES - overhead) * 3 // 4
    while len(_padded_token(filler + 1)) <= MAX_TOKEN_BYTES:
        filler += 1
    largest, too_large = _padded_token(filler), _padded_token(filler + 1)
    assert len(largest) <= MAX_TOKEN_BYTES < len(too_large)
    assert check(largest)
    refused(too_large)


def test_refuses_two_part_token() -> None:
    token = forge()
    refused(token.rsplit(".", 1)[0])


def test_refuses_four_part_token() -> None:
    token = forge()
    refused(token + ".")
    refused(token + "." + token.split(".")[2])


def test_refuses_one_part_and_empty_token() -> None:
    refused(forge().split(".")[0])
    refused("")
    refused("..")


def test_refuses_json_serialization() -> None:
    header, payload, signature = forge().split(".")
    refused(json.dumps({"protected": header, "payload": payload, "signature": signature}))


def test_refuses_non_ascii_token() -> None:
    refused(forge() + "é")
    refused(replace_part(forge(), 2, "é" + forge().split(".")[2][1:]))


def test_refuses_whitespace_in_token() -> None:
    token = forge()
    refused(" " + token)
    refused(token + "\n")
    header, payload, signature = token.split(".")
    refused(f"{header}.{payload[:10]}\n{payload[10:]}.{signature}")


def test_refuses_padding_in_signature() -> None:
    token = forge()
    signature = token.split(".")[2]
    assert len(signature) % 4 == 2
    refused(replace_part(token, 2, signature + "=="))


def test_refuses_padding_in_payload_even_if_signed() -> None:
    filler = 0
    while len(encode_part(claims_for(pad="a" * filler))) % 4 == 0:
        filler += 1
    payload_part = encode_part(claims_for(pad="a" * filler))
    padded = payload_part + "=" * (-len(payload_part) % 4)
    refused(forge(payload=padded))


def test_refuses_padding_in_header_even_if_signed() -> None:
    spaces = 0  # insignificant whitespace changes the length until padding is needed
    while len(encode_part(b" " * spaces + to_json(header_for()))) % 4 == 0:
        spaces += 1
    header_part = encode_part(b" " * spaces + to_json(header_for()))
    assert check(forge(header_part))
    refused(forge(header_part + "=" * (-len(header_part) % 4)))


def test_refuses_standard_base64_alphabet() -> None:
    # ECDSA signing is randomised: re-sign until the signature uses '-' or '_'.
    token = next(t for t in (forge() for _ in range(100)) if {"-", "_"} & set(t.split(".")[2]))
    signature = token.split(".")[2]
    refused(replace_part(token, 2, signature.replace("-", "+").replace("_", "/")))


def test_refuses_non_canonical_base64url_signature() -> None:
    token = forge()
    signature = token.split(".")[2]
    aliased = with_last_char_bits_flipped(signature)
    assert lenient_b64decode(aliased) == lenient_b64decode(signature)
    refused(replace_part(token, 2, aliased))


def test_refuses_non_canonical_base64url_payload_even_if_signed() -> None:
    filler = 0
    while len(encode_part(claims_for(pad="a" * filler))) % 4 == 0:
        filler += 1
    payload_part = encode_part(claims_for(pad="a" * filler))
    aliased = with_last_char_bits_flipped(payload_part)
    assert lenient_b64decode(aliased) == lenient_b64decode(payload_part)
    assert check(forge(payload=payload_part))
    refused(forge(payload=aliased))


# --- signature ---------------------------------------------------------------------------------


def _signing_input() -> bytes:
    return (encode_part(header_for()) + "." + encode_part(claims_for())).encode("ascii")


def test_refuses_signature_of_63_bytes() -> None:
    refused(forge(signature=es256_signature(ALICE, _signing_input())[:63]))


def test_refuses_signature_of_65_bytes() -> None:
    good = es256_signature(ALICE, _signing_input())
    refused(forge(signature=good + b"\x00"))
    refused(forge(signature=b"\x00" + good))


def test_refuses_empty_signature() -> None:
    refused(forge(signature=b""))


def test_refuses_der_encoded_signature() -> None:
    refused(forge(signature=der_signature(ALICE, _signing_input())))


def test_refuses_signature_with_r_zero() -> None:
    good = es256_signature(ALICE, _signing_input())
    refused(forge(signature=bytes(32) + good[32:]))


def test_refuses_signature_with_s_zero() -> None:
    good = es256_signature(ALICE, _signing_input())
    refused(forge(signature=good[:32] + bytes(32)))


def test_refuses_all_zero_signature() -> None:
    refused(forge(signature=bytes(64)))


def test_refuses_signature_over_another_message() -> None:
    other = es256_signature(ALICE, b"something else")
    refused(forge(signature=other))


def test_refuses_signature_with_a_flipped_bit() -> None:
    good = bytearray(es256_signature(ALICE, _signing_input()))
    good[40] ^= 0x01
    refused(forge(signature=bytes(good)))


def test_accepts_malleated_signature_r_n_minus_s() -> None:
    """ECDSA is malleable: (r, n - s) verifies as well as (r, s), and we accept it.

    This is the honest statement of behaviour: the signature check does not enforce low-S.
    A malleated copy of a message carries the same ``jti``, so it is stopped by jti replay
    protection, not here.
    """
    signing_input = _signing_input()
    good = es256_signature(ALICE, signing_input)
    twin = malleated(good)
    assert twin != good
    # Sanity: the raw primitive agrees that both verify.
    r, s = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:], "big")
    ALICE.verifying_key.public_key.verify(
        encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256())
    )
    original, copy = check(forge(signature=good)), check(forge(signature=twin))
    assert original.jti == copy.jti == JTI
