"""Core identity credentials: verified identity from an identity provider, in One Login's shape.

GOV.UK One Login gives a relying party the resident's proven identity as a signed JWT (its
``coreIdentityJWT``): ES256, a ``kid`` that is a key of the identity provider's DID document,
``iss`` the provider, ``sub`` a pairwise id for that relying party, ``aud`` the relying party's
client id, ``nbf``/``iat``/``exp``, ``vot`` (the level of confidence reached, ``P1``/``P2``),
``vtm`` (the trust mark) and ``vc`` holding ``credentialSubject.name[]`` and ``birthDate[]``.

A council may carry that credential in its query. :func:`verify_credential` checks it with the
same discipline as every message of the scheme, against the identity providers and client ids
of the signed registry, and returns a :class:`CoreIdentity`: the resident's current name (the
one without ``validUntil``), the first (most likely) birth date, the ``vot``, ``vtm`` and
``sub``. Every failure raises :class:`CredentialRefused` with a stable code and a ``reason``
for the operator's log that never holds a value from the credential.

``vot`` ordering is explicit (:data:`VOT_ORDER`); a ``vot`` not in it fails closed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from trust import jws
from trust.errors import DateFormatError, InvalidMessage, PolicyRefusal, VerificationError
from trust.keys import Signer, b64url_encode
from trust.messages import Subject, normalise_subject_field

if TYPE_CHECKING:
    from trust.registry import Registry

# Levels of confidence (GPG 45 profiles as One Login returns them), lowest first. A credential
# proves at least the level its ``vot`` names; anything not listed here is refused.
VOT_ORDER: tuple[str, ...] = ("P1", "P2", "P3", "P4")
MAX_CREDENTIAL_BYTES = 8 * 1024
MAX_NAMES = 16
MAX_NAME_PARTS = 16
MAX_BIRTH_DATES = 8
CREDENTIAL_TYPES = ("VerifiableCredential", "VerifiableIdentityCredential")
# Claims of the credential; anything else is content we do not understand, and refused.
_CLAIMS = frozenset({"iss", "sub", "aud", "nbf", "iat", "exp", "vot", "vtm", "vc", "jti"})
_REQUIRED = frozenset({"iss", "sub", "aud", "nbf", "iat", "exp", "vot", "vtm", "vc"})
_NAME_MEMBERS = frozenset({"nameParts", "validFrom", "validUntil"})
_PART_TYPES = frozenset({"GivenName", "FamilyName"})
_SUB = re.compile(r"[\x21-\x7e]{1,255}")

# Refusal codes (the broker maps each to a problem type in one place).
CREDENTIAL_REQUIRED = "credential-required"
CREDENTIAL_INVALID = "credential-invalid"
CREDENTIAL_VOT_TOO_LOW = "credential-vot-too-low"
SUBJECT_CONTRADICTS_CREDENTIAL = "subject-contradicts-credential"
CREDENTIAL_REFUSALS = (
    CREDENTIAL_REQUIRED,
    CREDENTIAL_INVALID,
    CREDENTIAL_VOT_TOO_LOW,
    SUBJECT_CONTRADICTS_CREDENTIAL,
)


class CredentialRefused(PolicyRefusal):
    """A credential that cannot be used. ``detail`` (sent to the council) says only what kind
    of refusal; ``reason`` (for the log) says which check failed, never with a value."""

    def __init__(self, code: str, detail: str, reason: str | None = None) -> None:
        super().__init__(code, detail)
        self.reason = reason or detail


def invalid(reason: str) -> CredentialRefused:
    return CredentialRefused(
        CREDENTIAL_INVALID, "the identity credential could not be verified", reason
    )


def vot_rank(vot: str) -> int:
    """The position of ``vot`` in :data:`VOT_ORDER`; an unknown level raises ValueError."""
    return VOT_ORDER.index(vot)


def vot_at_least(vot: str, minimum: str) -> bool:
    """``vot`` proves ``minimum`` or more; unknown levels (either side) prove nothing."""
    if vot not in VOT_ORDER or minimum not in VOT_ORDER:
        return False
    return vot_rank(vot) >= vot_rank(minimum)


def credential_digest(token: str) -> str:
    """SHA-256 of the compact credential, base64url: what the consent record keeps of it."""
    return b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


@dataclass(frozen=True, slots=True)
class CoreIdentity:
    """A verified core identity credential. Personal data never appears in a ``repr``."""

    provider: str  # the identity provider's member id in the registry
    issuer: str
    subject_id: str = field(repr=False)  # ``sub``: pairwise for the relying party
    vot: str
    vtm: str
    issued_at: int
    family_name: str = field(repr=False)
    given_names: str | None = field(repr=False)
    birth_dates: tuple[str, ...] = field(repr=False)
    digest: str

    @property
    def date_of_birth(self) -> str:
        """The first birth date: the provider lists the most likely first."""
        return self.birth_dates[0]


def _date(value: Any) -> date:
    try:
        return date.fromisoformat(normalise_subject_field("date_of_birth", value))
    except (InvalidMessage, DateFormatError, ValueError) as exc:
        raise invalid("a date in the credential is not YYYY-MM-DD") from exc


def _current_name(names: Any) -> tuple[str, str | None]:
    if not isinstance(names, list) or not 0 < len(names) <= MAX_NAMES:
        raise invalid("credentialSubject.name is not a non-empty list")
    current = []
    for entry in names:
        if not isinstance(entry, dict) or not set(entry) <= _NAME_MEMBERS:
            raise invalid("a name entry has members other than nameParts, validFrom, validUntil")
        parts = entry.get("nameParts")
        if not isinstance(parts, list) or not 0 < len(parts) <= MAX_NAME_PARTS:
            raise invalid("a name has no nameParts list")
        for part in parts:
            if (
                not isinstance(part, dict)
                or set(part) != {"type", "value"}
                or part["type"] not in _PART_TYPES
                or not isinstance(part["value"], str)
            ):
                raise invalid("a name part is not {type: GivenName|FamilyName, value}")
        for bound in ("validFrom", "validUntil"):
            if bound in entry:
                _date(entry[bound])
        if "validUntil" not in entry:
            current.append(parts)
    if len(current) != 1:
        raise invalid(f"{len(current)} current names (exactly one has no validUntil)")
    parts = current[0]
    given = [p["value"] for p in parts if p["type"] == "GivenName"]
    family = [p["value"] for p in parts if p["type"] == "FamilyName"]
    if not family:
        raise invalid("the current name has no FamilyName part")
    try:
        family_name = normalise_subject_field("family_name", " ".join(family))
        given_names = normalise_subject_field("given_names", " ".join(given)) if given else None
    except InvalidMessage as exc:
        raise invalid("a name part is not a name") from exc
    return family_name, given_names


def _birth_dates(value: Any, today: date) -> tuple[str, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_BIRTH_DATES:
        raise invalid("credentialSubject.birthDate is not a non-empty list")
    dates = []
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"value"}:
            raise invalid("a birthDate entry is not {value}")
        born = _date(entry["value"])
        if born > today:
            raise invalid("a birth date is in the future")
        dates.append(born.isoformat())
    return tuple(dates)


def _int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:
        raise invalid(f"{name} is not an integer")
    return value


def verify_credential(
    token: Any,
    *,
    registry: Registry,
    relying_party: str,
    now: int,
    max_age_s: int,
    leeway: int = jws.MAX_LEEWAY_SECONDS,
) -> CoreIdentity:
    """Verify a core identity credential presented by ``relying_party``, or raise
    :class:`CredentialRefused` (code ``credential-invalid``).

    Checked, in order: a string of at most 8 KiB; compact JWS, header ``alg`` ES256, ``kid``
    and at most ``typ: JWT`` (no ``crit``, ``jku``, ``x5u``, ...); the ``kid`` is an
    identity provider's key in the registry (never a member's message key), that provider is
    active and the key inside its validity window; the signature; ``iss`` exactly that
    provider's issuer; ``aud`` exactly ``relying_party``'s client id at that provider (a
    credential issued to another council is refused); ``nbf``/``exp`` with ``leeway``; ``iat``
    no older than ``max_age_s``; no claim outside One Login's set; ``vot`` known; the ``vc``
    of exactly its two types with a current name and birth dates.
    """
    if not isinstance(token, str) or not token.isascii():
        raise invalid("the credential is not a compact JWS string")
    if len(token) > MAX_CREDENTIAL_BYTES:
        raise invalid("the credential is larger than 8 KiB")
    try:
        compact = jws.decode_compact(token)
        typ = compact.header.get("typ", "JWT")
        kid = jws.check_header(compact.header, None)
    except VerificationError as exc:
        raise invalid(f"credential form: {exc.reason}") from exc
    if typ != "JWT":
        raise invalid("credential typ is not JWT")
    trusted = registry.credential_key(kid)
    if trusted is None:
        raise invalid("credential kid is not a key of any identity provider")
    provider = registry.members.get(trusted.owner)
    if provider is None or provider.identity_provider is None:
        raise invalid("credential kid is not a key of any identity provider")
    if not provider.active:
        raise invalid("the identity provider is suspended")
    if not trusted.valid_at(now):
        raise invalid("the identity provider's key is outside its validity window")
    try:
        jws.verify_signature(compact.signing_input, compact.signature, trusted.key)
        claims = jws.parse_json_object(compact.payload)
    except VerificationError as exc:
        raise invalid(f"credential {exc.reason}") from exc
    except ValueError as exc:
        raise invalid("credential payload is not a strict JSON object") from exc

    unknown = set(claims) - _CLAIMS
    if unknown:
        raise invalid(f"{len(unknown)} claim(s) outside the core identity credential's set")
    missing = _REQUIRED - set(claims)
    if missing:
        raise invalid(f"credential lacks {sorted(missing)}")
    if claims["iss"] != provider.identity_provider.issuer:
        raise invalid("iss is not the identity provider's issuer")
    member = registry.members.get(relying_party)
    client_id = None if member is None else member.client_ids.get(provider.id)
    if client_id is None:
        raise invalid("the relying party has no client id at this identity provider")
    if not isinstance(claims["aud"], str) or claims["aud"] != client_id:
        raise invalid("aud is not this relying party's client id")
    not_before, issued_at, expires_at = (
        _int(claims, "nbf"),
        _int(claims, "iat"),
        _int(claims, "exp"),
    )
    if not_before > now + leeway or issued_at > now + leeway:
        raise invalid("credential not yet valid")
    if now >= expires_at + leeway:
        raise invalid("credential expired")
    if now - issued_at > max_age_s:
        raise invalid("credential older than this purpose allows")
    sub = claims["sub"]
    if not isinstance(sub, str) or _SUB.fullmatch(sub) is None:
        raise invalid("sub is not a string of printable ASCII")
    vot = claims["vot"]
    if vot not in VOT_ORDER:
        raise invalid("vot is not a level this scheme knows")
    vtm = claims["vtm"]
    if not isinstance(vtm, str) or not vtm.startswith("https://") or len(vtm) > 512:
        raise invalid("vtm is not an https URL")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise invalid("jti is not a string")
    vc = claims["vc"]
    if not isinstance(vc, dict) or set(vc) != {"type", "credentialSubject"}:
        raise invalid("vc is not exactly {type, credentialSubject}")
    types = vc["type"]
    if not isinstance(types, list) or sorted(types) != sorted(CREDENTIAL_TYPES):
        raise invalid("vc.type is not VerifiableCredential, VerifiableIdentityCredential")
    subject = vc["credentialSubject"]
    if not isinstance(subject, dict) or set(subject) != {"name", "birthDate"}:
        raise invalid("vc.credentialSubject is not exactly {name, birthDate}")
    family_name, given_names = _current_name(subject["name"])
    today = date.fromtimestamp(now) if now >= 0 else date.min
    return CoreIdentity(
        provider=provider.id,
        issuer=provider.identity_provider.issuer,
        subject_id=sub,
        vot=vot,
        vtm=vtm,
        issued_at=issued_at,
        family_name=family_name,
        given_names=given_names,
        birth_dates=_birth_dates(subject["birthDate"], today),
        digest=credential_digest(token),
    )


def _same_name(council: str, credential: str) -> bool:
    return council.casefold() == credential.casefold()


def derived_fields(identity: CoreIdentity) -> dict[str, str]:
    """The matching fields a credential supplies: current name and first birth date."""
    derived = {"family_name": identity.family_name, "date_of_birth": identity.date_of_birth}
    if identity.given_names is not None:
        derived["given_names"] = identity.given_names
    return derived


def subject_from_credential(subject: Subject, identity: CoreIdentity) -> Subject:
    """The query's subject with the credential's name and first birth date: fields the
    credential lacks (NINO, postcode, registration) stay the council's. A council field that
    contradicts the credential refuses the query (``subject-contradicts-credential``)."""
    fields = dict(subject.fields)
    for name, value in derived_fields(identity).items():
        given = fields.get(name)
        same = given is None or (
            _same_name(given, value) if name != "date_of_birth" else given == value
        )
        if not same:
            raise CredentialRefused(
                SUBJECT_CONTRADICTS_CREDENTIAL,
                "the query's subject fields contradict the identity credential",
                f"council {name} differs from the credential's",
            )
        fields[name] = value
    return Subject(fields)


# How an identity provider signs a credential: ES256, ``typ`` JWT (One Login's header).
CORE_IDENTITY = jws.Profile("JWT", 24 * 3600)


def credential_claims(
    *,
    issuer: str,
    audience: str,
    subject_id: str,
    now: int,
    given_names: str | None,
    family_name: str,
    birth_dates: tuple[str, ...],
    vot: str = "P2",
    vtm: str,
    lifetime: int = 20 * 60,
    former_family_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Claims of a core identity credential in One Login's documented shape (for the
    reference identity provider and tests): former names carry ``validUntil``."""

    def name(family: str, valid_until: str | None) -> dict[str, Any]:
        parts = [{"type": "GivenName", "value": g} for g in (given_names or "").split()]
        entry: dict[str, Any] = {"nameParts": [*parts, {"type": "FamilyName", "value": family}]}
        if valid_until is not None:
            entry["validUntil"] = valid_until
        return entry

    return {
        "iss": issuer,
        "sub": subject_id,
        "aud": audience,
        "nbf": now,
        "iat": now,
        "exp": now + lifetime,
        "vot": vot,
        "vtm": vtm,
        "vc": {
            "type": list(CREDENTIAL_TYPES),
            "credentialSubject": {
                "name": [
                    *(name(f, "2020-01-01") for f in former_family_names),
                    name(family_name, None),
                ],
                "birthDate": [{"value": d} for d in birth_dates],
            },
        },
    }


def sign_credential(claims: Mapping[str, Any], key: Signer) -> str:
    """Sign a credential with an identity provider's key (its ``kid`` the DID URL)."""
    return jws.sign(claims, key, CORE_IDENTITY)
