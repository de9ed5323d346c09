"""Provider conformance: play the broker against one provider endpoint and check every rule.

``run_conformance`` signs real attribute requests with the broker's key (and, for the hostile
ones, with other keys, other algorithms and broken claims), sends them to the provider and
judges each exchange: a valid request gets a signed answer bound to it, in time, with exactly
the attributes asked; every malformed, misaddressed, replayed or foreign request is refused
with a 4xx problem document and no JWT. Each check is a small function with a stable id, so a
report can be compared run to run and a test can name exactly the checks a provider breaks.

``target_from_scheme`` builds the target from a scheme folder (as ``devscheme.generate`` or
``axb demo --keep`` write it) and, for the reference providers, picks sample people from the
synthetic population. Nothing here logs or prints a subject's identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from connectors.base import read_limited
from connectors.config import load_anchors, load_signing_key, read_toml
from connectors.errors import ConfigError
from connectors.reference.population import NO_MATCH_IDENTITY, TEST_IDENTITIES
from trust import jws
from trust.errors import InvalidMessage, RegistryError, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import SigningKey, b64url_encode
from trust.messages import (
    PROVIDER_RESULTS,
    SUBJECT_FIELDS,
    AttributeRequest,
    attribute_request_claims,
    new_jti,
    parse_subject,
)
from trust.registry import Registry, provider_fields, verify_registry
from trust.rules import attributes_of

API_PATH: Final = "/v1/attributes"
PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
ANSWER_MEMBERS: Final = frozenset(
    {"iss", "aud", "iat", "exp", "jti", "nbf", "request", "result", "attributes"}
)
ANSWER_HEADER: Final = frozenset({"alg", "kid", "typ"})
MAX_LIFETIME: Final = jws.ATTRIBUTE_RESPONSE.max_lifetime
CLOCK_SKEW: Final = jws.MAX_LEEWAY_SECONDS
_READ_LIMIT: Final = 64 * 1024
_JTI: Final = re.compile(r"[A-Za-z0-9_.:\-]{22,128}")  # 22 base64url characters = 128 bits
# Values for subject fields the sample people lack (used only to probe undeclared fields).
_FILLERS: Final[Mapping[str, str]] = {
    "family_name": "Conformance",
    "given_names": "Sample",
    "date_of_birth": "1970-01-01",
    "postcode": "CV34 9ZZ",
    "nino": "ZX999999D",
    "vehicle_registration": "AB12CDE",
}

Group = Literal["ACCEPTS", "ANSWER", "REFUSES", "HYGIENE"]
GROUPS: Final[tuple[Group, ...]] = ("ACCEPTS", "ANSWER", "REFUSES", "HYGIENE")


# --- target and report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConformanceTarget:
    """Everything the checker needs to play the broker against one provider.

    ``known`` is a subject the provider knows (its answer must be ``match``) and
    ``attributes`` what to ask about them; ``unknown`` is a subject nobody matches. Both hold
    only fields the provider declared for those attributes. ``timeout_ms`` is the latency the
    registry declares for the provider.
    """

    provider_id: str
    endpoint: str
    registry: Registry = field(repr=False)
    broker_id: str
    broker_key: SigningKey = field(repr=False)
    other_member_id: str
    other_member_key: SigningKey = field(repr=False)
    known: Mapping[str, str] = field(repr=False)
    attributes: tuple[str, ...]
    unknown: Mapping[str, str] = field(repr=False)
    timeout_ms: int
    purpose: str = "provider-conformance"
    as_of: date | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    id: str
    group: Group
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ConformanceReport:
    provider_id: str
    endpoint: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.passed)

    @property
    def failed_ids(self) -> frozenset[str]:
        return frozenset(result.id for result in self.failures)

    def render(self) -> str:
        """A text table: group, check id, PASS/FAIL, one-line detail; then a summary line."""
        id_width = max([len("CHECK"), *(len(r.id) for r in self.results)])
        group_width = max(len(g) for g in GROUPS)
        lines = [
            f"Provider conformance: {self.provider_id} at {self.endpoint}",
            "",
            f"{'GROUP':<{group_width}}  {'CHECK':<{id_width}}  RESULT  DETAIL",
            f"{'-' * group_width}  {'-' * id_width}  ------  {'-' * 40}",
        ]
        for result in self.results:
            verdict = "PASS" if result.passed else "FAIL"
            lines.append(
                f"{result.group:<{group_width}}  {result.id:<{id_width}}  {verdict:<6}  "
                f"{result.detail}"
            )
        failed = len(self.failures)
        total = len(self.results)
        lines.append("")
        if failed:
            names = ", ".join(r.id for r in self.failures[:8])
            if failed > 8:
                names += f" and {failed - 8} more"
            lines.append(
                f"{total} checks: {total - failed} passed, {failed} failed "
                f"({names}): NOT CONFORMANT"
            )
        else:
            lines.append(f"{total} checks: {total} passed, 0 failed: CONFORMANT")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


# --- talking to the provider ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP exchange with the provider, as seen by the checker."""

    label: str
    status: int
    content_type: str
    body: bytes
    elapsed_ms: float
    received_at: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The provider's reply to one valid request, decoded but not trusted."""

    label: str
    exchange: Exchange
    request_jti: str
    attributes: tuple[str, ...]
    compact: jws.Compact | None = None
    claims: Mapping[str, Any] | None = None
    problem: str | None = None


def _one_line(text: str, limit: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _es256(signing_input: bytes, key: SigningKey) -> bytes:
    der = key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def compact_token(
    header: Mapping[str, Any], payload: bytes, sign: Callable[[bytes], bytes]
) -> bytes:
    """A compact JWS of any header and payload bytes (the hostile requests need both)."""
    signing_input = (
        b64url_encode(orjson.dumps(dict(header))) + "." + b64url_encode(payload)
    ).encode("ascii")
    return signing_input + b"." + b64url_encode(sign(signing_input)).encode("ascii")


def _is_jws(body: bytes) -> bool:
    try:
        jws.decode_compact(body.strip())
    except VerificationError:
        return False
    return True


async def _read_all(content: aiohttp.StreamReader, limit: int = _READ_LIMIT) -> bytes:
    return await read_limited(content, limit)


class _Session:
    """One conformance run: the HTTP session, the requests it builds and what came back."""

    def __init__(self, target: ConformanceTarget, http: aiohttp.ClientSession) -> None:
        self.target = target
        self.http = http
        self.errors: list[Exchange] = []  # every 4xx/5xx seen, for the hygiene checks
        self.stranger = SigningKey.generate()  # a key no registry knows
        self._answers: dict[str, Answer] = {}
        self.known = parse_subject(dict(target.known), required=())
        self.unknown = parse_subject(dict(target.unknown), required=())

    # requests

    def claims(self, who: Literal["known", "unknown"] = "known") -> dict[str, Any]:
        """Fresh claims of a valid request, exactly as the broker's connector builds them."""
        target = self.target
        request = AttributeRequest(
            broker=target.broker_id,
            provider=target.provider_id,
            jti=new_jti(),
            purpose=target.purpose,
            attributes=target.attributes,
            as_of=target.as_of or datetime.now(UTC).date(),
            subject=self.known if who == "known" else self.unknown,
        )
        return attribute_request_claims(request, now=int(time.time()))

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        key: SigningKey | None = None,
        typ: str = jws.ATTRIBUTE_REQUEST.typ,
        extra_header: Mapping[str, Any] | None = None,
        payload: bytes | None = None,
    ) -> bytes:
        """ES256 over any header and payload (the broker's key unless ``key`` is given)."""
        signer = key or self.target.broker_key
        header = {"alg": "ES256", "kid": signer.kid, "typ": typ, **(extra_header or {})}
        body = orjson.dumps(dict(claims)) if payload is None else payload
        return compact_token(header, body, lambda data: _es256(data, signer))

    def valid(self, who: Literal["known", "unknown"] = "known") -> tuple[bytes, dict[str, Any]]:
        claims = self.claims(who)
        token = jws.sign(claims, self.target.broker_key, jws.ATTRIBUTE_REQUEST)
        return token.encode("ascii"), claims

    # HTTP

    async def post(
        self, label: str, body: bytes, *, content_type: str = JWT_MEDIA_TYPE
    ) -> Exchange:
        started = time.perf_counter()
        async with self.http.post(
            self.target.endpoint,
            data=body,
            headers={"Content-Type": content_type, "Accept": JWT_MEDIA_TYPE},
            allow_redirects=False,
        ) as response:
            payload = await _read_all(response.content)
            exchange = Exchange(
                label=label,
                status=response.status,
                content_type=response.content_type,
                body=payload,
                elapsed_ms=(time.perf_counter() - started) * 1000,
                received_at=int(time.time()),
            )
        if exchange.status >= 400:
            self.errors.append(exchange)
        return exchange

    async def answer(self, label: Literal["known", "unknown", "second"]) -> Answer:
        """The reply to one valid request (sent once per run and remembered)."""
        if label not in self._answers:
            token, claims = self.valid("unknown" if label == "unknown" else "known")
            exchange = await self.post(f"{label} request", token)
            self._answers[label] = _decode_answer(label, exchange, claims)
        return self._answers[label]

    async def answers(self) -> list[Answer]:
        return [await self.answer(label) for label in ("known", "unknown", "second")]


def _decode_answer(label: str, exchange: Exchange, request: Mapping[str, Any]) -> Answer:
    def failed(problem: str) -> Answer:
        asked = tuple(request["attributes"])
        return Answer(label, exchange, request["jti"], asked, problem=problem)

    if exchange.status != 200:
        return failed(f"HTTP {exchange.status} {exchange.content_type}, no answer")
    if exchange.content_type != JWT_MEDIA_TYPE:
        return failed(f"answer is {exchange.content_type}, not {JWT_MEDIA_TYPE}")
    try:
        compact = jws.decode_compact(exchange.body)  # exactly what the connector sees
    except VerificationError as exc:
        return failed(f"answer is not a strict compact JWS: {exc.reason}")
    try:
        claims = jws.parse_json_object(compact.payload)
    except ValueError as exc:
        return failed(f"answer payload is not a strict JSON object: {exc}")
    return Answer(
        label, exchange, request["jti"], tuple(request["attributes"]), compact, claims, None
    )


# --- the checks ----------------------------------------------------------------------------

Verdict = tuple[bool, str]
CheckFunction = Callable[[_Session], Awaitable[Verdict]]


@dataclass(frozen=True, slots=True)
class CheckSpec:
    id: str
    group: Group
    summary: str
    run: CheckFunction = field(repr=False)


CHECKS: list[CheckSpec] = []


def _check(check_id: str, group: Group, summary: str) -> Callable[[CheckFunction], CheckFunction]:
    def register(function: CheckFunction) -> CheckFunction:
        if any(spec.id == check_id for spec in CHECKS):
            raise ValueError(f"check id {check_id} registered twice")
        CHECKS.append(CheckSpec(check_id, group, summary, function))
        return function

    return register


# ACCEPTS


@_check("accepts-valid-request", "ACCEPTS", "a valid signed request gets 200 application/jwt")
async def accepts_valid_request(s: _Session) -> Verdict:
    answer = await s.answer("known")
    exchange = answer.exchange
    ok = exchange.status == 200 and exchange.content_type == JWT_MEDIA_TYPE
    detail = f"HTTP {exchange.status} {exchange.content_type} in {exchange.elapsed_ms:.0f} ms"
    return ok, detail if ok else f"{detail}; expected 200 {JWT_MEDIA_TYPE}"


# ANSWER


def _each(answers: Sequence[Answer], test: Callable[[Answer], str | None], passed: str) -> Verdict:
    """Apply ``test`` to every answer; the first problem found fails the check."""
    for answer in answers:
        if answer.claims is None or answer.compact is None:
            return False, f"{answer.label}: {answer.problem}"
        problem = test(answer)
        if problem is not None:
            return False, f"{answer.label}: {problem}"
    return True, passed


@_check("answer-signature", "ANSWER", "signed with a key the registry gives this provider")
async def answer_signature(s: _Session) -> Verdict:
    registry, provider = s.target.registry, s.target.provider_id

    def test(answer: Answer) -> str | None:
        assert answer.compact is not None
        kid = answer.compact.header.get("kid")
        trusted = registry.key(kid) if isinstance(kid, str) else None
        if trusted is None:
            return f"kid {str(kid)[:16]!r} is not in the registry"
        if trusted.owner != provider:
            return f"kid belongs to {trusted.owner}, not {provider}"
        if not trusted.valid_at(answer.exchange.received_at):
            return "the key is outside its validity window"
        try:
            jws.verify_signature(
                answer.compact.signing_input, answer.compact.signature, trusted.key
            )
        except VerificationError:
            return "ES256 signature does not verify with the registered key"
        return None

    return _each(await s.answers(), test, f"ES256 verifies with a key registered to {provider}")


@_check("answer-header", "ANSWER", "header is exactly alg ES256, kid, typ attribute-response+jwt")
async def answer_header(s: _Session) -> Verdict:
    typ = jws.ATTRIBUTE_RESPONSE.typ

    def test(answer: Answer) -> str | None:
        assert answer.compact is not None
        header = answer.compact.header
        if set(header) != ANSWER_HEADER:
            return f"header members {sorted(header)}, expected {sorted(ANSWER_HEADER)}"
        if header.get("alg") != "ES256":
            return f"alg {header.get('alg')!r}, expected 'ES256'"
        if header.get("typ") != typ:
            return f"typ {header.get('typ')!r}, expected {typ!r}"
        return None

    return _each(await s.answers(), test, f"alg ES256, kid, typ {typ}")


@_check("answer-iss", "ANSWER", "iss is the provider's member id")
async def answer_iss(s: _Session) -> Verdict:
    provider = s.target.provider_id

    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        iss = answer.claims.get("iss")
        return None if iss == provider else f"iss {iss!r}, expected {provider!r}"

    return _each(await s.answers(), test, f"iss = {provider}")


@_check("answer-aud", "ANSWER", "aud is exactly the broker's member id")
async def answer_aud(s: _Session) -> Verdict:
    broker = s.target.broker_id

    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        aud = answer.claims.get("aud")
        return None if aud == broker else f"aud {aud!r}, expected the string {broker!r}"

    return _each(await s.answers(), test, f"aud = {broker}")


@_check("answer-bound", "ANSWER", "request claim is the jti of the request answered")
async def answer_bound(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        bound = answer.claims.get("request")
        if bound == answer.request_jti:
            return None
        return f"request {str(bound)[:24]!r} is not the request's jti"

    return _each(await s.answers(), test, "each answer names the jti of its own request")


@_check("answer-lifetime", "ANSWER", "integer iat and exp, 0 < exp - iat <= 300")
async def answer_lifetime(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        iat, exp = answer.claims.get("iat"), answer.claims.get("exp")
        if type(iat) is not int or type(exp) is not int:
            return f"iat/exp must be integers, got {type(iat).__name__}/{type(exp).__name__}"
        if not 0 < exp - iat <= MAX_LIFETIME:
            return f"lifetime {exp - iat} s, expected 1..{MAX_LIFETIME}"
        return None

    return _each(await s.answers(), test, f"integer iat/exp, lifetime <= {MAX_LIFETIME} s")


@_check("answer-iat-now", "ANSWER", "iat within 30 s of the time the answer arrived")
async def answer_iat_now(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        iat = answer.claims.get("iat")
        if type(iat) is not int:
            return "iat is not an integer"
        skew = iat - answer.exchange.received_at
        return None if abs(skew) <= CLOCK_SKEW else f"iat is {skew:+d} s from now"

    return _each(await s.answers(), test, f"iat within {CLOCK_SKEW} s of now")


@_check("answer-jti", "ANSWER", "jti of at least 128 bits (22+ base64url characters)")
async def answer_jti(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        jti = answer.claims.get("jti")
        if not isinstance(jti, str) or _JTI.fullmatch(jti) is None:
            shown = len(jti) if isinstance(jti, str) else type(jti).__name__
            return f"jti missing or too short ({shown})"
        return None

    return _each(await s.answers(), test, "jti >= 128 bits")


@_check("answer-result", "ANSWER", "result is match, no-match or unavailable")
async def answer_result(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        result = answer.claims.get("result")
        return None if result in PROVIDER_RESULTS else f"result {str(result)[:20]!r}"

    return _each(await s.answers(), test, "result in " + "|".join(PROVIDER_RESULTS))


@_check("answer-attributes", "ANSWER", "known person: match with exactly the attributes asked")
async def answer_attributes(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        if answer.claims.get("result") != "match":
            return f"result {answer.claims.get('result')!r} for a person the provider knows"
        values = answer.claims.get("attributes")
        if not isinstance(values, dict):
            return "a match carries no attributes object"
        extra = sorted(set(values) - set(answer.attributes))
        missing = sorted(set(answer.attributes) - set(values))
        if extra or missing:
            return f"attributes beyond those asked {extra}, missing {missing}"
        wrong = sorted(name for name, value in values.items() if type(value) is not bool)
        return f"attributes not boolean: {wrong}" if wrong else None

    asked = len(s.target.attributes)
    known = [await s.answer("known"), await s.answer("second")]
    return _each(known, test, f"match with exactly the {asked} attributes asked, booleans")


@_check("answer-claims", "ANSWER", "no claims beyond the allowed set; attributes only on a match")
async def answer_claims(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        extra = sorted(set(answer.claims) - ANSWER_MEMBERS)
        if extra:
            return f"claims beyond the allowed set: {extra}"
        if answer.claims.get("result") != "match" and "attributes" in answer.claims:
            return "attributes on an answer that is not a match"
        return None

    return _each(await s.answers(), test, "claims within " + ", ".join(sorted(ANSWER_MEMBERS)))


@_check("answer-unknown-no-match", "ANSWER", "a person nobody knows gets no-match, never 'no'")
async def answer_unknown_no_match(s: _Session) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        result = answer.claims.get("result")
        if result != "no-match":
            said = "match (answering 'no' for someone not found)" if result == "match" else result
            return f"result {said}, expected no-match"
        return "no-match still carries attributes" if "attributes" in answer.claims else None

    return _each([await s.answer("unknown")], test, "unknown person: no-match, no attributes")


@_check("answer-latency", "ANSWER", "answers arrive within the declared timeout_ms")
async def answer_latency(s: _Session) -> Verdict:
    answers = await s.answers()
    slowest = max(answers, key=lambda a: a.exchange.elapsed_ms)
    budget = s.target.timeout_ms
    took = slowest.exchange.elapsed_ms
    detail = f"slowest {took:.0f} ms ({slowest.label}), declared {budget} ms"
    return took <= budget, detail


@_check("answer-distinct-jti", "ANSWER", "two requests get answers with distinct jtis")
async def answer_distinct_jti(s: _Session) -> Verdict:
    answers = await s.answers()
    jtis = [a.claims.get("jti") if a.claims is not None else None for a in answers]
    if None in jtis:
        missing = next(a for a, j in zip(answers, jtis, strict=True) if j is None)
        return False, f"{missing.label}: {missing.problem or 'no jti'}"
    if len(set(map(str, jtis))) != len(jtis):
        return False, "two answers share one jti"
    return True, f"{len(jtis)} answers, {len(jtis)} distinct jtis"


# REFUSES


def _refused(exchange: Exchange, expect: int | None = None) -> Verdict:
    seen = f"HTTP {exchange.status} {exchange.content_type}"
    if not 400 <= exchange.status < 500:
        return False, f"{seen}; expected {expect or '4xx'}"
    if expect is not None and exchange.status != expect:
        return False, f"{seen}; expected {expect}"
    if exchange.content_type == JWT_MEDIA_TYPE or _is_jws(exchange.body):
        return False, f"{seen} but a JWT came back with the refusal"
    return True, f"refused: {seen}"


def _refusal(
    check_id: str, summary: str, *, expect: int | None = None, content_type: str = JWT_MEDIA_TYPE
) -> Callable[[Callable[[_Session], bytes]], CheckFunction]:
    """Register a check that sends the body built by the decorated function and wants a 4xx."""

    def register(build: Callable[[_Session], bytes]) -> CheckFunction:
        async def run(s: _Session) -> Verdict:
            exchange = await s.post(check_id, build(s), content_type=content_type)
            return _refused(exchange, expect)

        run.__name__ = build.__name__
        return _check(check_id, "REFUSES", summary)(run)

    return register


@_refusal("refuses-alg-none", "an unsigned request (alg none)")
def refuses_alg_none(s: _Session) -> bytes:
    header = {"alg": "none", "kid": s.target.broker_key.kid, "typ": jws.ATTRIBUTE_REQUEST.typ}
    return compact_token(header, orjson.dumps(s.claims()), lambda _: b"")


@_refusal("refuses-hs256", "HS256 with the broker's public key as the HMAC secret")
def refuses_hs256(s: _Session) -> bytes:
    secret = s.target.broker_key.verifying_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": s.target.broker_key.kid, "typ": jws.ATTRIBUTE_REQUEST.typ}
    return compact_token(
        header,
        orjson.dumps(s.claims()),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )


@_refusal("refuses-wrong-aud", "a request addressed to another member")
def refuses_wrong_aud(s: _Session) -> bytes:
    claims = s.claims()
    claims["aud"] = _other_audience(s.target)
    return s.sign(claims)


def _other_audience(target: ConformanceTarget) -> str:
    """Another provider's id if the registry has one (a forwarded request), else a stranger."""
    others = sorted(
        member.id
        for member in target.registry.members.values()
        if member.provider is not None and member.id != target.provider_id
    )
    return others[0] if others else "urn:ax-broker:conformance:not-this-provider"


@_refusal("refuses-expired", "a request whose exp passed more than 30 s ago")
def refuses_expired(s: _Session) -> bytes:
    claims = s.claims()
    now = int(time.time())
    claims["iat"], claims["exp"] = now - 200, now - 100
    return s.sign(claims)


@_refusal("refuses-future-iat", "a request issued more than 30 s in the future")
def refuses_future_iat(s: _Session) -> bytes:
    claims = s.claims()
    now = int(time.time())
    claims["iat"], claims["exp"] = now + 120, now + 180
    return s.sign(claims)


@_refusal("refuses-long-lifetime", "a request with a lifetime over 300 s")
def refuses_long_lifetime(s: _Session) -> bytes:
    claims = s.claims()
    claims["exp"] = claims["iat"] + jws.ATTRIBUTE_REQUEST.max_lifetime + 1
    return s.sign(claims)


@_check("refuses-replay", "REFUSES", "the same valid request sent twice: the second is refused")
async def refuses_replay(s: _Session) -> Verdict:
    token, _ = s.valid()
    first = await s.post("refuses-replay (first)", token)
    if first.status != 200:
        return False, f"the first send was not accepted (HTTP {first.status}); cannot judge"
    second = await s.post("refuses-replay", token)
    return _refused(second)


@_refusal("refuses-wrong-typ", "a request whose typ is not attribute-request+jwt")
def refuses_wrong_typ(s: _Session) -> bytes:
    return s.sign(s.claims(), typ="JWT")


@_refusal("refuses-other-member", "a request signed by another member (iss = that member)")
def refuses_other_member(s: _Session) -> bytes:
    claims = s.claims()
    claims["iss"] = s.target.other_member_id
    return s.sign(claims, key=s.target.other_member_key)


@_refusal("refuses-unknown-kid", "a request signed with a key no registry lists")
def refuses_unknown_kid(s: _Session) -> bytes:
    return s.sign(s.claims(), key=s.stranger)


@_refusal("refuses-duplicate-keys", "a payload with a duplicated JSON member")
def refuses_duplicate_keys(s: _Session) -> bytes:
    claims = s.claims()
    payload = orjson.dumps(claims)
    duplicated = b'{"jti":' + orjson.dumps(new_jti()) + b"," + payload[1:]
    return s.sign(claims, payload=duplicated)


@_refusal("refuses-extra-header", "a header member beyond alg, kid, typ (jku)")
def refuses_extra_header(s: _Session) -> bytes:
    return s.sign(s.claims(), extra_header={"jku": "https://attacker.invalid/jwks.json"})


@_refusal("refuses-unoffered-attribute", "an attribute the provider does not offer")
def refuses_unoffered_attribute(s: _Session) -> bytes:
    claims = s.claims()
    claims["attributes"] = [_unoffered_attribute(s.target)]
    return s.sign(claims)


def _offered(target: ConformanceTarget) -> Mapping[str, Any]:
    member = target.registry.members.get(target.provider_id)
    return member.provider.attributes if member is not None and member.provider else {}


def _unoffered_attribute(target: ConformanceTarget) -> str:
    """An attribute another provider offers (a realistic mistake), else an invented one."""
    offered = _offered(target)
    for member in sorted(target.registry.members.values(), key=lambda m: m.id):
        if member.provider is not None and member.id != target.provider_id:
            for name in sorted(member.provider.attributes):
                if name not in offered:
                    return name
    return "conformance-not-offered"


@_check(
    "refuses-undeclared-field",
    "REFUSES",
    "a subject field the provider did not declare for the attributes asked",
)
async def refuses_undeclared_field(s: _Session) -> Verdict:
    offered = _offered(s.target)
    asked = [name for name in s.target.attributes if name in offered]
    declared = {f for name in asked for f in provider_fields(offered[name])}
    spare = [name for name in SUBJECT_FIELDS if name not in declared]
    if not spare:
        return True, "not applicable: every subject field is declared"
    claims = s.claims()
    claims["subject"] = {**claims["subject"], spare[0]: _FILLERS[spare[0]]}
    exchange = await s.post("refuses-undeclared-field", s.sign(claims))
    verdict, detail = _refused(exchange)
    return verdict, f"{detail} (sent {spare[0]})"


@_refusal(
    "refuses-content-type",
    "a request that is not application/jwt gets 415",
    expect=415,
    content_type="text/plain",
)
def refuses_content_type(s: _Session) -> bytes:
    return s.valid()[0]


@_refusal("refuses-oversized", "a request over 16 KiB gets 413", expect=413)
def refuses_oversized(s: _Session) -> bytes:
    claims = s.claims()
    claims["padding"] = "x" * (jws.MAX_TOKEN_BYTES * 3 // 4)  # base64url: just over 16 KiB
    return s.sign(claims)


# HYGIENE


@_check("hygiene-problem-json", "HYGIENE", "every error is an application/problem+json object")
async def hygiene_problem_json(s: _Session) -> Verdict:
    await s.post("hygiene-problem-json", b"not-a-jwt")  # at least one error to look at
    for exchange in s.errors:
        where = f"{exchange.label}: HTTP {exchange.status}"
        if exchange.content_type != PROBLEM_MEDIA_TYPE:
            return False, f"{where} is {exchange.content_type or 'untyped'}, not problem+json"
        try:
            body = json.loads(exchange.body)
        except ValueError:
            return False, f"{where}: problem body is not JSON"
        if not isinstance(body, dict):
            return False, f"{where}: problem body is not a JSON object"
        if "status" in body and body["status"] != exchange.status:
            return False, f"{where}: problem status {body['status']!r} differs"
    return True, f"{len(s.errors)} error responses, all {PROBLEM_MEDIA_TYPE}"


def health_url(endpoint: str) -> str:
    """``/healthz`` beside the API: ``https://h/p/v1/attributes`` -> ``https://h/p/healthz``."""
    if endpoint.endswith(API_PATH):
        return endpoint[: -len(API_PATH)] + "/healthz"
    return urljoin(endpoint, "/healthz")


@_check("hygiene-healthz", "HYGIENE", "GET /healthz answers 200")
async def hygiene_healthz(s: _Session) -> Verdict:
    url = health_url(s.target.endpoint)
    async with s.http.get(url, allow_redirects=False) as response:
        await _read_all(response.content)
        return response.status == 200, f"GET {urlsplit(url).path}: HTTP {response.status}"


CHECK_IDS: Final[tuple[str, ...]] = tuple(spec.id for spec in CHECKS)


async def run_conformance(target: ConformanceTarget) -> ConformanceReport:
    """Run every check against ``target`` in order; a check that raises counts as a FAIL."""
    budget = aiohttp.ClientTimeout(total=target.timeout_ms / 1000 + 10)
    results: list[CheckResult] = []
    async with aiohttp.ClientSession(timeout=budget) as http:
        session = _Session(target, http)
        for spec in CHECKS:
            try:
                passed, detail = await spec.run(session)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                passed, detail = False, f"could not talk to the provider: {type(exc).__name__}"
            results.append(CheckResult(spec.id, spec.group, passed, _one_line(detail)))
    return ConformanceReport(target.provider_id, target.endpoint, tuple(results))


# --- building a target from a scheme folder ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Samples:
    """Who to ask about: a person the provider knows (and what to ask), and nobody."""

    known: Mapping[str, str] = field(repr=False)
    attributes: tuple[str, ...]
    unknown: Mapping[str, str] = field(repr=False)


def _declared(registry: Registry, provider_id: str, attributes: Sequence[str]) -> set[str]:
    offered = registry.members[provider_id].provider
    assert offered is not None
    return {f for name in attributes for f in provider_fields(offered.attributes[name])}


def reference_samples(registry: Registry, provider_id: str) -> Samples:
    """Samples for a reference provider: every attribute it offers, asked about the test
    identity that fills the most declared fields; the documented no-match identity."""
    member = registry.members.get(provider_id)
    if member is None or member.provider is None:
        raise ConfigError(f"{provider_id} is not an attribute provider in the registry")
    attributes = tuple(sorted(member.provider.attributes))[:64]
    declared = _declared(registry, provider_id, attributes)
    required = {f for n in attributes for f in member.provider.attributes[n].required_fields}
    best: dict[str, str] | None = None
    for person in TEST_IDENTITIES.values():
        fields = {k: v for k, v in person.matching_fields().as_subject().items() if k in declared}
        if required <= set(fields) and (best is None or len(fields) > len(best)):
            best = fields
    if best is None:
        raise ConfigError(f"no test identity has the fields {provider_id} requires")
    unknown = {k: v for k, v in NO_MATCH_IDENTITY.as_subject().items() if k in declared}
    if not required <= set(unknown):
        raise ConfigError(f"the no-match identity lacks fields {provider_id} requires")
    return Samples(best, attributes, unknown)


def load_samples(path: Path, registry: Registry, provider_id: str) -> Samples:
    """Samples from a JSON file: ``{"known": {...}, "unknown": {...}, "attributes": [...]}``
    (``attributes`` defaults to every attribute the registry says the provider offers)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read subjects {path}: {exc}") from exc
    if not isinstance(document, dict) or not {"known", "unknown"} <= set(document):
        raise ConfigError('the subjects file needs "known" and "unknown" objects')
    member = registry.members.get(provider_id)
    offered = member.provider.attributes if member is not None and member.provider else {}
    attributes = document.get("attributes", sorted(offered))
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise ConfigError('"attributes" must be a list of attribute names')
    known, unknown = document["known"], document["unknown"]
    if not isinstance(known, dict) or not isinstance(unknown, dict):
        raise ConfigError('"known" and "unknown" must be objects of subject fields')
    return Samples(known, tuple(attributes), unknown)


def _default_member(registry: Registry, role: str, *, exclude: Sequence[str]) -> str:
    candidates = sorted(
        member.id
        for member in registry.members.values()
        if role in member.roles and member.active and member.id not in exclude
    )
    if not candidates:
        raise ConfigError(f"the registry has no active {role} to use")
    return candidates[0]


def _member_key(scheme_dir: Path, registry: Registry, member_id: str) -> SigningKey:
    key = load_signing_key(scheme_dir / "keys" / f"{member_id}.pem")
    trusted = registry.key(key.kid)
    if trusted is None or trusted.owner != member_id:
        raise ConfigError(f"keys/{member_id}.pem is not a key the registry gives {member_id}")
    return key


def load_scheme_registry(scheme_dir: Path, *, now: int | None = None) -> Registry:
    """Verify ``scheme_dir/registry.jwt`` against the anchors pinned in ``scheme_dir/anchors``
    (scheme and operator named by ``broker.toml``, as every participant's config names them)."""
    table = read_toml(scheme_dir / "broker.toml")
    anchor_files = sorted((scheme_dir / "anchors").glob("*.jwk.json"))
    if not anchor_files:
        raise ConfigError(f"no anchors in {scheme_dir / 'anchors'}")
    anchors = load_anchors(
        scheme_dir,
        {
            "anchors": [str(path) for path in anchor_files],
            "scheme": table.get("scheme"),
            "operator": table.get("operator"),
        },
    )
    try:
        document = (scheme_dir / "registry.jwt").read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read registry: {exc}") from exc
    try:
        return verify_registry(document, anchors, now=int(time.time()) if now is None else now)
    except RegistryError as exc:
        raise ConfigError(f"registry does not verify: {exc}") from exc


def target_from_scheme(
    scheme_dir: Path,
    *,
    endpoint: str,
    provider_id: str,
    as_broker: str | None = None,
    other_member: str | None = None,
    subjects: Path | None = None,
    now: int | None = None,
) -> ConformanceTarget:
    """A target from a scheme folder: verified registry, the broker's and another member's
    keys from ``keys/<member>.pem``, and sample subjects (reference ones unless ``subjects``).

    ``endpoint`` is the provider's attribute URL; a bare origin gets ``/v1/attributes``.
    """
    registry = load_scheme_registry(scheme_dir, now=now)
    member = registry.members.get(provider_id)
    if member is None or member.provider is None:
        raise ConfigError(f"{provider_id} is not an attribute provider in the registry")
    broker_id = as_broker or _default_member(registry, "broker", exclude=[provider_id])
    if broker_id not in registry.members or "broker" not in registry.members[broker_id].roles:
        raise ConfigError(f"{broker_id} is not a broker in the registry")
    other_id = other_member or _default_member(
        registry, "relying-party", exclude=[provider_id, broker_id]
    )
    if other_id in (provider_id, broker_id) or other_id not in registry.members:
        raise ConfigError(f"{other_id} must be another member of the registry")
    samples = (
        reference_samples(registry, provider_id)
        if subjects is None
        else load_samples(subjects, registry, provider_id)
    )
    _validate_samples(registry, provider_id, samples)
    if urlsplit(endpoint).path in ("", "/"):
        endpoint = endpoint.rstrip("/") + API_PATH
    return ConformanceTarget(
        provider_id=provider_id,
        endpoint=endpoint,
        registry=registry,
        broker_id=broker_id,
        broker_key=_member_key(scheme_dir, registry, broker_id),
        other_member_id=other_id,
        other_member_key=_member_key(scheme_dir, registry, other_id),
        known=samples.known,
        attributes=samples.attributes,
        unknown=samples.unknown,
        timeout_ms=member.provider.timeout_ms,
        purpose=_purpose_for(registry, provider_id),
    )


def _validate_samples(registry: Registry, provider_id: str, samples: Samples) -> None:
    member = registry.members[provider_id]
    assert member.provider is not None
    unknown_names = [a for a in samples.attributes if a not in member.provider.attributes]
    if not samples.attributes or unknown_names:
        raise ConfigError(f"attributes must be offered by {provider_id}: {unknown_names}")
    declared = _declared(registry, provider_id, samples.attributes)
    for label, subject in (("known", samples.known), ("unknown", samples.unknown)):
        try:
            parse_subject(dict(subject), required=())
        except InvalidMessage as exc:
            raise ConfigError(f"{label} subject: {exc}") from exc
        extra = sorted(set(subject) - declared)
        if extra:
            raise ConfigError(f"{label} subject has fields {provider_id} did not declare: {extra}")


def _purpose_for(registry: Registry, provider_id: str) -> str:
    """A registered purpose whose checks use this provider (what a broker would send)."""
    for purpose in sorted(registry.purposes.values(), key=lambda p: p.id):
        for check_name in sorted(purpose.checks):
            check = registry.checks.get(check_name)
            if check is None:
                continue
            for version in check.versions:
                if any(ref.provider == provider_id for ref in attributes_of(version.rule)):
                    return purpose.id
    return "provider-conformance"
