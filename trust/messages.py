"""The claims of each message, parsed from verified JWS claims into frozen objects.

The JWS profile (:mod:`trust.jws`) has already checked signature, header and registered claims;
here each message type's own members are checked for shape. Anything unexpected is refused.
Personal data (the subject) never appears in a ``repr``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal, get_args

from trust.dates import parse_date, parse_date_time
from trust.errors import DateFormatError, InvalidMessage
from trust.jws import Verified
from trust.keys import b64_decode_or_none, b64_encode, b64url_encode
from trust.parameters import Predicate, parse_predicate

Outcome = Literal["yes", "no", "no-match", "undetermined"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
# What an answer says: an outcome, or for a check with bands the name of the one band that
# applies (in place of "yes"). A band is never named like an outcome, nor "refused".
Verdict = str
ProviderResult = Literal["match", "no-match", "unavailable"]
PROVIDER_RESULTS: tuple[ProviderResult, ...] = get_args(ProviderResult)
ASSURANCE_LEVELS = ("P0", "P1", "P2", "P3", "P4")

# Personal identifiers a query may carry; a provider is sent only those it declared.
SUBJECT_FIELDS = (
    "family_name",
    "given_names",
    "date_of_birth",
    "postcode",
    "nino",
    "vehicle_registration",
)

_REGISTERED = frozenset({"iss", "aud", "iat", "exp", "jti", "nbf"})
REGISTERED_CLAIMS = _REGISTERED
_QUERY_MEMBERS = _REGISTERED | {
    "check",
    "purpose",
    "lawful_basis",
    "consent",
    "as_of",
    "assurance",
    "subject",
    "credential",
}
# A core identity credential travels in the query as a compact JWS (trust.credential verifies
# it against the registry); its size is bounded there, its type here.
_COMPACT = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
# control, format (zero-width, bidi), surrogate, private-use and unassigned characters
_NOT_IN_NAMES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SLUG = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}")
BAND_PATTERN = "^[a-z0-9][a-z0-9.\\-]{0,63}$"  # a band's name: a slug, never an outcome word
_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})")
_NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]")
_VRN = re.compile(r"[A-Z0-9]{1,7}")
_CONSENT_MEMBERS = frozenset({"id", "given_at", "method", "notice_url", "notice_digest"})


def is_band_name(name: str) -> bool:
    return _SLUG.fullmatch(name) is not None and name not in (*OUTCOMES, "refused")


def new_jti() -> str:
    """A fresh message id: 192 random bits, base64url."""
    return secrets.token_urlsafe(24)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidMessage(message)


def _string(value: Any, name: str, pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidMessage(f"{name} is invalid")
    return value


def _count(value: Any, name: str, *, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidMessage(f"{name} must be an integer >= {minimum}")
    return value


def _digest(value: Any, name: str) -> bytes:
    """A SHA-256 digest in canonical base64 (as the log's export and proofs write hashes)."""
    raw = b64_decode_or_none(value) or b""
    _require(len(raw) == hashlib.sha256().digest_size, f"{name} must be a base64 SHA-256")
    return raw


def encode_digest(digest: bytes) -> str:
    """A record digest as the answer, the export and the proofs write it: standard base64."""
    return b64_encode(digest)


def _iso_date(value: Any, name: str) -> date:
    try:
        return parse_date(value, name)
    except DateFormatError as exc:
        raise InvalidMessage(str(exc)) from exc


def _time(value: Any, name: str) -> datetime:
    try:
        return parse_date_time(value, name)
    except DateFormatError as exc:
        raise InvalidMessage(str(exc)) from exc


def _name(value: Any, name: str) -> str:
    """A name as providers match it: white space (any Unicode space) collapsed, then checked,
    so a name of only spaces or U+00A0 is refused here rather than sent to a provider as "".
    Control characters (tabs, newlines), format characters (zero-width, bidi) and the like are
    refused outright."""
    if (
        not isinstance(value, str)
        or len(value) > 400
        or any(unicodedata.category(ch) in _NOT_IN_NAMES for ch in value)
    ):
        raise InvalidMessage(f"{name} is invalid")
    collapsed = " ".join(value.split())
    if not 1 <= len(collapsed) <= 100 or not any(ch.isalpha() for ch in collapsed):
        raise InvalidMessage(f"{name} is invalid")
    return collapsed


def normalise_subject_field(name: str, value: Any) -> str:
    """Validate one identifier and put it in the one form providers and pseudonyms see."""
    if name in ("family_name", "given_names"):
        return _name(value, name)
    if name == "date_of_birth":
        return _iso_date(value, name).isoformat()
    text = value.replace(" ", "").upper() if isinstance(value, str) else None
    if name == "postcode":
        match = _POSTCODE.fullmatch(text or "")
        if match is None:
            raise InvalidMessage("postcode is not a UK postcode")
        return f"{match.group(1)} {match.group(2)}"
    if name == "nino":
        return _string(text, name, _NINO)
    if name == "vehicle_registration":
        return _string(text, name, _VRN)
    raise InvalidMessage(f"unknown subject field {name!r}")


@dataclass(frozen=True, slots=True)
class Subject:
    """The resident's identifiers, normalised. Never logged: ``repr`` shows field names only."""

    fields: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"Subject(fields={sorted(self.fields)})"

    @property
    def family_name(self) -> str:
        return self.fields["family_name"]

    @property
    def date_of_birth(self) -> date:
        return date.fromisoformat(self.fields["date_of_birth"])

    def select(self, names: Sequence[str]) -> dict[str, str]:
        return {name: self.fields[name] for name in names if name in self.fields}


def parse_subject(
    value: Any, *, required: Sequence[str] = ("family_name", "date_of_birth")
) -> Subject:
    _require(isinstance(value, dict), "subject must be an object")
    unknown = set(value) - set(SUBJECT_FIELDS)
    _require(not unknown, f"subject has unknown fields: {sorted(unknown)}")
    missing = [name for name in required if name not in value]
    _require(not missing, f"subject lacks {missing}")
    return Subject({name: normalise_subject_field(name, value[name]) for name in value})


@dataclass(frozen=True, slots=True)
class ConsentReference:
    """Where consent is the basis: which consent, given when, how, under which notice."""

    id: str
    given_at: str
    method: str
    notice_url: str
    notice_digest: str

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "given_at": self.given_at,
            "method": self.method,
            "notice_url": self.notice_url,
            "notice_digest": self.notice_digest,
        }


def parse_consent(value: Any, *, today: date | None = None) -> ConsentReference:
    _require(isinstance(value, dict), "consent must be an object")
    _require(set(value) == _CONSENT_MEMBERS, f"consent needs exactly {sorted(_CONSENT_MEMBERS)}")
    given_at = value["given_at"]
    parsed = _time(given_at, "consent.given_at")
    _require(
        today is None or parsed.date() <= today + timedelta(days=1),
        "consent.given_at is in the future",
    )
    url = _string(value["notice_url"], "consent.notice_url")
    _require(url.startswith("https://"), "consent.notice_url must be https")
    digest = _string(value["notice_digest"], "consent.notice_digest")
    _require(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None, "digest: sha256:<hex>")
    return ConsentReference(
        id=_string(value["id"], "consent.id"),
        given_at=given_at,
        method=_string(value["method"], "consent.method", _SLUG),
        notice_url=url,
        notice_digest=digest,
    )


@dataclass(frozen=True, slots=True)
class EligibilityQuery:
    """A council's verified question: may this resident have this, for this purpose?"""

    requester: str
    jti: str
    issued_at: int
    expires_at: int
    check: str
    purpose: str
    lawful_basis: str | None
    consent: ConsentReference | None
    as_of: date
    assurance: str | None
    subject: Subject
    credential: str | None = field(default=None, repr=False)


def parse_query(verified: Verified, *, today: date) -> EligibilityQuery:
    """Shape-check a verified eligibility query. ``today`` is the default and latest ``as_of``."""
    claims = verified.claims
    unknown = set(claims) - _QUERY_MEMBERS
    _require(not unknown, f"query has unknown members: {sorted(unknown)}")
    as_of = _iso_date(claims["as_of"], "as_of") if "as_of" in claims else today
    _require(as_of <= today, "as_of may not be in the future")
    assurance = claims.get("assurance")
    _require(assurance is None or assurance in ASSURANCE_LEVELS, "assurance must be P0..P4")
    basis = claims.get("lawful_basis")
    credential = claims.get("credential")
    _require(
        credential is None
        or (isinstance(credential, str) and _COMPACT.fullmatch(credential) is not None),
        "credential must be a compact JWS",
    )
    # with a credential, the name and birth date may come from it alone
    required = () if credential is not None else ("family_name", "date_of_birth")
    subject = parse_subject(claims.get("subject"), required=required)
    _require(
        "date_of_birth" not in subject.fields or subject.date_of_birth <= today,
        "date_of_birth is in the future",
    )
    return EligibilityQuery(
        requester=verified.issuer,
        jti=verified.jti,
        issued_at=verified.issued_at,
        expires_at=verified.expires_at,
        check=_string(claims.get("check"), "check", _SLUG),
        purpose=_string(claims.get("purpose"), "purpose", _SLUG),
        lawful_basis=None if basis is None else _string(basis, "lawful_basis", _SLUG),
        consent=parse_consent(claims["consent"], today=today) if "consent" in claims else None,
        as_of=as_of,
        assurance=assurance,
        subject=subject,
        credential=credential,
    )


def query_claims(
    *,
    requester: str,
    broker: str,
    now: int,
    check: str,
    purpose: str,
    subject: Mapping[str, str],
    lawful_basis: str | None = "public-task",
    consent: ConsentReference | None = None,
    as_of: date | None = None,
    assurance: str | None = None,
    lifetime: int = 120,
    jti: str | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    """The claims a council signs for one check (used by the SDK and the CLI); ``credential``
    is the resident's core identity credential (compact JWS), if the council has one."""
    claims: dict[str, Any] = {
        "iss": requester,
        "aud": broker,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti or new_jti(),
        "check": check,
        "purpose": purpose,
        "subject": dict(subject),
    }
    if lawful_basis is not None:
        claims["lawful_basis"] = lawful_basis
    if consent is not None:
        claims["consent"] = consent.to_json()
    if as_of is not None:
        claims["as_of"] = as_of.isoformat()
    if assurance is not None:
        claims["assurance"] = assurance
    if credential is not None:
        claims["credential"] = credential
    return claims


@dataclass(frozen=True, slots=True)
class EligibilityAnswer:
    """The broker's signed answer: one outcome, bound to the query and to its consent record.

    ``log_index`` and ``record_digest`` (SHA-256 of the record's salt and canonical body,
    written in standard base64 like the export's ``digest``) are
    the council's receipt: the log's leaf at that index is built from that digest, which an
    inclusion proof against a signed checkpoint shows (:mod:`trust.receipts`)."""

    broker: str
    requester: str
    jti: str
    query_jti: str
    check: str
    check_version: int
    as_of: date
    outcome: Verdict
    log_index: int
    record_digest: bytes

    @property
    def band(self) -> str | None:
        """The band a banded check answered, or ``None`` when the outcome is one of the four."""
        return None if self.outcome in OUTCOMES else self.outcome


def answer_claims(answer: EligibilityAnswer, *, now: int, lifetime: int = 300) -> dict[str, Any]:
    return {
        "iss": answer.broker,
        "aud": answer.requester,
        "iat": now,
        "exp": now + lifetime,
        "jti": answer.jti,
        "query_jti": answer.query_jti,
        "check": answer.check,
        "check_version": answer.check_version,
        "as_of": answer.as_of.isoformat(),
        "outcome": answer.outcome,
        "log_index": answer.log_index,
        "record_digest": encode_digest(answer.record_digest),
    }


def parse_answer(verified: Verified, *, requester: str) -> EligibilityAnswer:
    claims = verified.claims
    outcome = claims.get("outcome")
    _require(
        outcome in OUTCOMES or (isinstance(outcome, str) and is_band_name(outcome)),
        "outcome is not one of yes, no, no-match, undetermined, nor a band",
    )
    log_index = _count(claims.get("log_index"), "log_index", minimum=0)
    version = _count(claims.get("check_version"), "check_version", minimum=1)
    record_digest = _digest(claims.get("record_digest"), "record_digest")
    return EligibilityAnswer(
        broker=verified.issuer,
        requester=requester,
        jti=verified.jti,
        query_jti=_string(claims.get("query_jti"), "query_jti"),
        check=_string(claims.get("check"), "check", _SLUG),
        check_version=version,
        as_of=_iso_date(claims.get("as_of"), "as_of"),
        outcome=str(outcome),
        log_index=log_index,
        record_digest=record_digest,
    )


@dataclass(frozen=True, slots=True)
class AttributeRequest:
    """The broker asks one provider for some attributes of one subject, as of a date, and
    for each predicate (a parameterised attribute, bound) whether it holds."""

    broker: str
    provider: str
    jti: str
    purpose: str
    attributes: tuple[str, ...]
    as_of: date
    subject: Subject
    predicates: tuple[Predicate, ...] = ()


def attribute_request_claims(
    request: AttributeRequest, *, now: int, lifetime: int = 60
) -> dict[str, Any]:
    claims = {
        "iss": request.broker,
        "aud": request.provider,
        "iat": now,
        "exp": now + lifetime,
        "jti": request.jti,
        "purpose": request.purpose,
        "attributes": list(request.attributes),
        "as_of": request.as_of.isoformat(),
        "subject": dict(request.subject.fields),
    }
    if request.predicates:  # absent otherwise: a yes/no request is what it always was
        claims["predicates"] = [p.to_json() for p in request.predicates]
    return claims


def _predicates(value: Any) -> tuple[Predicate, ...]:
    if value is None:
        return ()
    _require(isinstance(value, list) and 0 < len(value) <= 64, "predicates: a list of 1 to 64")
    try:
        predicates = tuple(parse_predicate(item) for item in value)
    except ValueError as exc:
        raise InvalidMessage(str(exc)) from None
    _require(len(set(predicates)) == len(predicates), "predicates repeat")
    return predicates


def parse_attribute_request(verified: Verified, *, provider: str) -> AttributeRequest:
    claims = verified.claims
    allowed = _REGISTERED | {"purpose", "attributes", "as_of", "subject", "predicates"}
    unknown = set(claims) - allowed
    _require(not unknown, f"request has unknown members: {sorted(unknown)}")
    predicates = _predicates(claims.get("predicates"))
    return replace(
        parse_request_envelope(verified, provider=provider, predicates=predicates),
        subject=parse_subject(claims.get("subject"), required=()),
    )


def parse_request_envelope(
    verified: Verified, *, provider: str, predicates: tuple[Predicate, ...] = ()
) -> AttributeRequest:
    """What a single and a batch request share (all but the subject, left empty here); a
    batch carries no predicates (calls with predicates are never batched)."""
    claims = verified.claims
    attributes = parse_attribute_names(claims.get("attributes"), predicates=bool(predicates))
    return AttributeRequest(
        broker=verified.issuer,
        provider=provider,
        jti=verified.jti,
        purpose=_string(claims.get("purpose"), "purpose", _SLUG),
        attributes=attributes,
        as_of=_iso_date(claims.get("as_of"), "as_of"),
        subject=Subject({}),
        predicates=predicates,
    )


def parse_attribute_names(names: Any, *, predicates: bool = False) -> tuple[str, ...]:
    """The attributes a request asks: up to 64 distinct names, at least one unless the
    request asks ``predicates``."""
    if not (
        isinstance(names, list)
        and (len(names) > 0 or predicates)
        and len(names) <= 64
        and all(isinstance(n, str) and _SLUG.fullmatch(n) for n in names)
        and len(set(names)) == len(names)
    ):
        raise InvalidMessage("attributes must be a non-empty list of distinct names")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class AttributeAnswer:
    """A provider's signed answer to one request: found or not, one boolean per attribute and
    one per predicate (in the request's order)."""

    provider: str
    jti: str
    request_jti: str
    result: ProviderResult
    attributes: Mapping[str, bool]
    predicates: tuple[bool, ...] = ()


def attribute_response_claims(
    answer: AttributeAnswer, *, broker: str, now: int, lifetime: int = 60
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": answer.provider,
        "aud": broker,
        "iat": now,
        "exp": now + lifetime,
        "jti": answer.jti,
        "request": answer.request_jti,
        **provider_result_claims(answer),
    }
    return claims


def provider_result_claims(answer: AttributeAnswer) -> dict[str, Any]:
    """``result``, and the attributes on a match only: as one answer and each batch item
    carry them."""
    if answer.result != "match":
        return {"result": answer.result}
    claims: dict[str, Any] = {"result": answer.result, "attributes": dict(answer.attributes)}
    if answer.predicates:
        claims["predicates"] = list(answer.predicates)
    return claims


def parse_attribute_response(verified: Verified, *, request: AttributeRequest) -> AttributeAnswer:
    """Shape-check a provider's answer and bind it to ``request``: the same jti, exactly the
    attributes asked (nothing beyond), booleans only: one per predicate asked, never an
    amount or a band."""
    claims = verified.claims
    unknown = set(claims) - (_REGISTERED | {"request", "result", "attributes", "predicates"})
    _require(not unknown, f"answer has unknown members: {sorted(unknown)}")
    _require(claims.get("request") == request.jti, "answer is not bound to this request")
    result, attributes, predicates = parse_provider_result(
        claims, request.attributes, len(request.predicates)
    )
    return AttributeAnswer(
        provider=verified.issuer,
        jti=verified.jti,
        request_jti=request.jti,
        result=result,
        attributes=attributes,
        predicates=predicates,
    )


def parse_provider_result(
    claims: Mapping[str, Any], asked: Sequence[str], predicates_asked: int = 0
) -> tuple[ProviderResult, dict[str, bool], tuple[bool, ...]]:
    """``result`` and, on a match only, exactly the ``asked`` attributes as booleans and one
    boolean per predicate asked."""
    result = claims.get("result")
    _require(result in PROVIDER_RESULTS, "result is not match, no-match or unavailable")
    if result != "match":
        _require(
            "attributes" not in claims and "predicates" not in claims,
            "only a match carries attributes",
        )
        return result, {}, ()  # type: ignore[return-value]
    values = claims.get("attributes")
    if not isinstance(values, dict):
        raise InvalidMessage("a match must carry attributes")
    _require(set(values) == set(asked), "attributes differ from those asked")
    _require(all(type(v) is bool for v in values.values()), "attribute values must be bool")
    held = claims.get("predicates", [])
    _require(
        isinstance(held, list) and len(held) == predicates_asked,
        "predicates differ from those asked",
    )
    _require(all(type(v) is bool for v in held), "predicate values must be bool")
    return "match", values, tuple(held)


@dataclass(frozen=True, slots=True)
class AuditRequest:
    """An auditor's signed request, bound to one HTTP method, path+query and body."""

    auditor: str
    jti: str
    expires_at: int


def body_digest(body: bytes) -> str:
    return b64url_encode(hashlib.sha256(body).digest())


def audit_request_claims(
    *, auditor: str, broker: str, now: int, method: str, target: str, body: bytes = b""
) -> dict[str, Any]:
    """Claims an auditor signs for one request to the audit API (``target`` = path?query)."""
    return {
        "iss": auditor,
        "aud": broker,
        "iat": now,
        "exp": now + 60,
        "jti": new_jti(),
        "htm": method,
        "htu": target,
        "body_sha256": body_digest(body),
    }


def parse_audit_request(
    verified: Verified, *, method: str, target: str, body: bytes
) -> AuditRequest:
    claims = verified.claims
    unknown = set(claims) - (_REGISTERED | {"htm", "htu", "body_sha256"})
    _require(not unknown, f"audit request has unknown members: {sorted(unknown)}")
    _require(claims.get("htm") == method, "audit request signed for another method")
    _require(claims.get("htu") == target, "audit request signed for another path or query")
    _require(claims.get("body_sha256") == body_digest(body), "audit request body altered")
    return AuditRequest(verified.issuer, verified.jti, verified.expires_at)


@dataclass(frozen=True, slots=True)
class ResidentAccess:
    """A council portal asks, for the resident signed in to it, who checked their data; the
    resident's core identity credential (issued to that council) says who they are."""

    requester: str
    jti: str
    credential: str = field(repr=False)


def resident_access_claims(
    *, requester: str, broker: str, now: int, credential: str
) -> dict[str, Any]:
    return {
        "iss": requester,
        "aud": broker,
        "iat": now,
        "exp": now + 60,
        "jti": new_jti(),
        "credential": credential,
    }


def parse_resident_access(verified: Verified) -> ResidentAccess:
    claims = verified.claims
    unknown = set(claims) - (_REGISTERED | {"credential"})
    _require(not unknown, f"resident access request has unknown members: {sorted(unknown)}")
    credential = claims.get("credential")
    _require(
        isinstance(credential, str) and _COMPACT.fullmatch(credential) is not None,
        "credential must be a compact JWS",
    )
    return ResidentAccess(verified.issuer, verified.jti, str(credential))


@dataclass(frozen=True, slots=True)
class ConsentWithdrawal:
    """A council's signed statement that the resident withdrew consent ``consent_id``."""

    requester: str
    jti: str
    expires_at: int
    consent_id: str
    withdrawn_at: str


def withdrawal_claims(
    *, requester: str, broker: str, now: int, consent_id: str, withdrawn_at: str
) -> dict[str, Any]:
    return {
        "iss": requester,
        "aud": broker,
        "iat": now,
        "exp": now + 120,
        "jti": new_jti(),
        "consent_id": consent_id,
        "withdrawn_at": withdrawn_at,
    }


def parse_withdrawal(verified: Verified) -> ConsentWithdrawal:
    claims = verified.claims
    unknown = set(claims) - (_REGISTERED | {"consent_id", "withdrawn_at"})
    _require(not unknown, f"withdrawal has unknown members: {sorted(unknown)}")
    withdrawn_at = claims.get("withdrawn_at")
    _time(withdrawn_at, "withdrawn_at")
    return ConsentWithdrawal(
        requester=verified.issuer,
        jti=verified.jti,
        expires_at=verified.expires_at,
        consent_id=_string(claims.get("consent_id"), "consent_id"),
        withdrawn_at=str(withdrawn_at),
    )
