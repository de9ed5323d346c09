"""Core identity credentials made without this project's code: jwcrypto signs them, and the
claims are written here by hand in the shape One Login documents for ``coreIdentityJWT``.

``ATTACKS`` names each hostile variant of a good credential and the refusal code it must get;
the unit tests run them against ``trust.credential`` and the integration tests against a live
broker, so both prove the same list.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk, jws

from broker.scheme import dev as devscheme
from connectors.reference import identity as reference_identity
from connectors.reference.population import TEST_IDENTITIES
from trust.keys import SigningKey

Claims = dict[str, Any]


def did_kid(key: SigningKey) -> str:
    """The id the reference provider's DID document publishes for ``key``."""
    return reference_identity.did_signing_key(key).kid


def one_login_claims(identity: str, *, client_id: str, now: int, vot: str = "P2") -> Claims:
    """One Login's documented claims for test identity ``identity``: a former name with
    ``validUntil``, the current one with only ``validFrom``, given names before the family
    name, one birth date."""
    person = TEST_IDENTITIES[identity]
    given = [{"value": g, "type": "GivenName"} for g in person.given_names.split()]
    return {
        "sub": "urn:fdc:gov.uk:2022:" + hashlib.sha256(identity.encode()).hexdigest()[:43],
        "iss": reference_identity.ISSUER,
        "aud": client_id,
        "nbf": now - 5,
        "iat": now - 5,
        "exp": now + 1200,
        "vot": vot,
        "vtm": reference_identity.VTM,
        "vc": {
            "type": ["VerifiableCredential", "VerifiableIdentityCredential"],
            "credentialSubject": {
                "name": [
                    {
                        "validUntil": "2019-06-01",
                        "nameParts": [*given, {"value": "Formerby", "type": "FamilyName"}],
                    },
                    {
                        "validFrom": "2019-06-01",
                        "nameParts": [*given, {"value": person.family_name, "type": "FamilyName"}],
                    },
                ],
                "birthDate": [{"value": person.date_of_birth.isoformat()}],
            },
        },
    }


def jwcrypto_sign(
    key: SigningKey, claims: Claims, *, kid: str | None = None, alg: str = "ES256"
) -> str:
    """A compact JWS made by jwcrypto (an independent JOSE implementation)."""
    signer = jwk.JWK.from_pem(key.to_pem())
    token = jws.JWS(json.dumps(claims).encode("utf-8"))
    header = {"alg": alg, "kid": kid if kid is not None else did_kid(key), "typ": "JWT"}
    token.add_signature(signer, alg=alg, protected=json.dumps(header))
    return str(token.serialize(compact=True))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(claims: Claims, kid: str) -> str:
    """``alg`` none: header and payload, an empty signature."""
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def hs256(claims: Claims, kid: str, secret: bytes) -> str:
    header = _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@dataclass(frozen=True)
class Keys:
    """What an attack may use: the identity provider's key, a council's key, a stranger's."""

    idp: SigningKey
    council: SigningKey
    stranger: SigningKey


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    make: Callable[[Keys, Claims], str]


def _with(change: Callable[[Claims], None]) -> Callable[[Keys, Claims], str]:
    def make(keys: Keys, claims: Claims) -> str:
        changed = copy.deepcopy(claims)
        change(changed)
        return jwcrypto_sign(keys.idp, changed)

    return make


def _subject(claims: Claims) -> dict[str, Any]:
    subject: dict[str, Any] = claims["vc"]["credentialSubject"]
    return subject


def _set(name: str, value: Any) -> Callable[[Claims], None]:
    return lambda claims: claims.__setitem__(name, value)


def _no_current_name(claims: Claims) -> None:
    _subject(claims)["name"][1]["validUntil"] = "2026-01-01"


def _two_current_names(claims: Claims) -> None:
    del _subject(claims)["name"][0]["validUntil"]


def _unknown_claim(claims: Claims) -> None:
    claims["https://vocab.account.gov.uk/v1/passport"] = [{"documentNumber": "1"}]


def _padded(claims: Claims) -> None:
    _subject(claims)["name"][1]["nameParts"].append({"type": "GivenName", "value": "x" * 6000})


INVALID = "credential-invalid"
ATTACKS: tuple[Attack, ...] = (
    Attack(
        "signed by a key of no identity provider",
        INVALID,
        lambda k, c: jwcrypto_sign(k.stranger, c, kid=did_kid(k.idp)),
    ),
    Attack(
        "signed by a stranger's key under its own DID kid",
        INVALID,
        lambda k, c: jwcrypto_sign(k.stranger, c, kid=did_kid(k.stranger)),
    ),
    Attack(
        "signed by a council's key",
        INVALID,
        lambda k, c: jwcrypto_sign(k.council, c, kid=k.council.kid),
    ),
    Attack("alg none", INVALID, lambda k, c: unsigned(c, did_kid(k.idp))),
    Attack(
        "HS256 keyed with the provider's public key",
        INVALID,
        lambda k, c: hs256(c, did_kid(k.idp), k.idp.verifying_key.jwk["x"].encode()),
    ),
    Attack(
        "a kid outside the DID document",
        INVALID,
        lambda k, c: jwcrypto_sign(k.idp, c, kid=reference_identity.DID + "#not-published"),
    ),
    Attack("aud of another council", INVALID, _with(_set("aud", "ccc-school-admissions-21c4"))),
    Attack("aud as a list", INVALID, _with(lambda c: c.__setitem__("aud", [c["aud"]]))),
    Attack("iss of another issuer", INVALID, _with(_set("iss", "https://idp.example/"))),
    Attack("expired", INVALID, _with(lambda c: c.update(exp=c["iat"] - 60))),
    Attack("not yet valid", INVALID, _with(lambda c: c.update(nbf=c["iat"] + 600))),
    Attack(
        "older than the purpose allows",
        INVALID,
        _with(lambda c: c.update(iat=c["iat"] - 7200, nbf=c["nbf"] - 7200)),
    ),
    Attack("vot below the minimum", "credential-vot-too-low", _with(_set("vot", "P1"))),
    Attack("an unknown vot", INVALID, _with(_set("vot", "P9"))),
    Attack("no current name", INVALID, _with(_no_current_name)),
    Attack("two current names", INVALID, _with(_two_current_names)),
    Attack("an unknown claim", INVALID, _with(_unknown_claim)),
    Attack("a credential of over 8 KiB", INVALID, _with(_padded)),
)
BLUE_BADGE_CLIENT = devscheme.CLIENT_IDS[devscheme.COUNCIL_BLUE_BADGE]
