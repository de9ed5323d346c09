"""The registered checks, each a small function with a stable id, and the run over them.

A valid request must get a signed answer bound to it, in time, with exactly the attributes
asked; every malformed, misaddressed, replayed or foreign request must be refused with a 4xx
problem document and no JWT. The hostile requests are forged with ``trust.testing``. A
provider that declares ``max_batch`` is also sent batches: one valid (each item's answer
must be bound to its item, none left out, none extra) and some malformed. A report
can be compared run to run, and a test can name exactly the checks a provider breaks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from connectors.base import read_limited
from connectors.conformance.report import CheckResult, ConformanceReport, Group, one_line
from connectors.conformance.session import READ_LIMIT, Answer, ConformanceSession, Exchange
from connectors.conformance.target import API_PATH, ConformanceTarget
from trust import jws, testing
from trust.batch import batch_request_claims
from trust.errors import VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.messages import PROVIDER_RESULTS, SUBJECT_FIELDS, new_jti
from trust.registry import provider_fields

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
ANSWER_MEMBERS: Final = frozenset(
    {"iss", "aud", "iat", "exp", "jti", "nbf", "request", "result", "attributes", "predicates"}
)
MAX_LIFETIME: Final = jws.ATTRIBUTE_RESPONSE.max_lifetime
CLOCK_SKEW: Final = jws.MAX_LEEWAY_SECONDS
# Values for subject fields the sample people lack (used only to probe undeclared fields).
_FILLERS: Final[Mapping[str, str]] = {
    "family_name": "Conformance",
    "given_names": "Sample",
    "date_of_birth": "1970-01-01",
    "postcode": "CV34 9ZZ",
    "nino": "ZX999999D",
    "vehicle_registration": "AB12CDE",
}

Verdict = tuple[bool, str]
CheckFunction = Callable[[ConformanceSession], Awaitable[Verdict]]


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
async def accepts_valid_request(s: ConformanceSession) -> Verdict:
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
async def answer_signature(s: ConformanceSession) -> Verdict:
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
async def answer_header(s: ConformanceSession) -> Verdict:
    typ = jws.ATTRIBUTE_RESPONSE.typ

    def test(answer: Answer) -> str | None:
        assert answer.compact is not None
        header = answer.compact.header
        if set(header) != jws.HEADER_MEMBERS:
            return f"header members {sorted(header)}, expected {sorted(jws.HEADER_MEMBERS)}"
        if header.get("alg") != jws.ALGORITHM:
            return f"alg {header.get('alg')!r}, expected {jws.ALGORITHM!r}"
        if header.get("typ") != typ:
            return f"typ {header.get('typ')!r}, expected {typ!r}"
        return None

    return _each(await s.answers(), test, f"alg ES256, kid, typ {typ}")


@_check("answer-iss", "ANSWER", "iss is the provider's member id")
async def answer_iss(s: ConformanceSession) -> Verdict:
    provider = s.target.provider_id

    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        iss = answer.claims.get("iss")
        return None if iss == provider else f"iss {iss!r}, expected {provider!r}"

    return _each(await s.answers(), test, f"iss = {provider}")


@_check("answer-aud", "ANSWER", "aud is exactly the broker's member id")
async def answer_aud(s: ConformanceSession) -> Verdict:
    broker = s.target.broker_id

    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        aud = answer.claims.get("aud")
        return None if aud == broker else f"aud {aud!r}, expected the string {broker!r}"

    return _each(await s.answers(), test, f"aud = {broker}")


@_check("answer-bound", "ANSWER", "request claim is the jti of the request answered")
async def answer_bound(s: ConformanceSession) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        bound = answer.claims.get("request")
        if bound == answer.request_jti:
            return None
        return f"request {str(bound)[:24]!r} is not the request's jti"

    return _each(await s.answers(), test, "each answer names the jti of its own request")


@_check("answer-lifetime", "ANSWER", "integer iat and exp, 0 < exp - iat <= 300")
async def answer_lifetime(s: ConformanceSession) -> Verdict:
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
async def answer_iat_now(s: ConformanceSession) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        iat = answer.claims.get("iat")
        if type(iat) is not int:
            return "iat is not an integer"
        skew = iat - answer.exchange.received_at
        return None if abs(skew) <= CLOCK_SKEW else f"iat is {skew:+d} s from now"

    return _each(await s.answers(), test, f"iat within {CLOCK_SKEW} s of now")


@_check("answer-jti", "ANSWER", "jti of at least 128 bits (22+ base64url characters)")
async def answer_jti(s: ConformanceSession) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        jti = answer.claims.get("jti")
        if not isinstance(jti, str) or jws.JTI_PATTERN.fullmatch(jti) is None:
            shown = len(jti) if isinstance(jti, str) else type(jti).__name__
            return f"jti missing or too short ({shown})"
        return None

    return _each(await s.answers(), test, "jti >= 128 bits")


@_check("answer-result", "ANSWER", "result is match, no-match or unavailable")
async def answer_result(s: ConformanceSession) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        result = answer.claims.get("result")
        return None if result in PROVIDER_RESULTS else f"result {str(result)[:20]!r}"

    return _each(await s.answers(), test, "result in " + "|".join(PROVIDER_RESULTS))


@_check("answer-attributes", "ANSWER", "known person: match with exactly the attributes asked")
async def answer_attributes(s: ConformanceSession) -> Verdict:
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


@_check(
    "answer-predicates",
    "ANSWER",
    "known person: one boolean per predicate asked, in order, and never an amount",
)
async def answer_predicates(s: ConformanceSession) -> Verdict:
    asked = len(s.target.predicates)

    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        values = answer.claims.get("predicates")
        if not asked:
            return "predicates on an answer to a request without any" if values else None
        if not isinstance(values, list) or len(values) != asked:
            return f"predicates {values!r}: expected a list of {asked} booleans"
        wrong = [i for i, value in enumerate(values) if type(value) is not bool]
        return f"predicates not boolean at {wrong}" if wrong else None

    if not asked:
        known = [await s.answer("known")]
        return _each(known, test, "not applicable: no parameterised attributes offered")
    known = [await s.answer("known"), await s.answer("second")]
    return _each(known, test, f"{asked} predicates answered with booleans")


def _broken_predicates(s: ConformanceSession, kind: str) -> list[dict[str, Any]] | None:
    """The sample predicates with the first one broken: a value above its schema's maximum
    (``kind`` "bounds") or a parameter the provider never declared ("undeclared")."""
    if not s.target.predicates:
        return None
    first, *rest = s.target.predicates
    spec = _offered(s.target)[first.attribute].parameters
    bound = dict(first.parameters)
    if kind == "bounds":
        integers = [n for n, p in sorted(spec.items()) if p.type == "integer"]
        if not integers:
            return None
        maximum = spec[integers[0]].maximum
        bound[integers[0]] = (maximum or 0) + 1
    else:
        bound["conformance_undeclared"] = 1
    return [{"attribute": first.attribute, "parameters": bound}, *(p.to_json() for p in rest)]


async def _refuses_broken_predicate(s: ConformanceSession, kind: str, check_id: str) -> Verdict:
    broken = _broken_predicates(s, kind)
    if broken is None:
        return True, "not applicable: no parameterised attribute to break"
    claims = s.claims()
    claims["predicates"] = broken
    return _refused(await s.post(check_id, s.sign(claims)))


@_check("refuses-parameter-out-of-bounds", "REFUSES", "a predicate outside its parameter schema")
async def refuses_parameter_out_of_bounds(s: ConformanceSession) -> Verdict:
    return await _refuses_broken_predicate(s, "bounds", "refuses-parameter-out-of-bounds")


@_check("refuses-undeclared-parameter", "REFUSES", "a predicate with an undeclared parameter")
async def refuses_undeclared_parameter(s: ConformanceSession) -> Verdict:
    return await _refuses_broken_predicate(s, "undeclared", "refuses-undeclared-parameter")


@_check("answer-claims", "ANSWER", "no claims beyond the allowed set; attributes only on a match")
async def answer_claims(s: ConformanceSession) -> Verdict:
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
async def answer_unknown_no_match(s: ConformanceSession) -> Verdict:
    def test(answer: Answer) -> str | None:
        assert answer.claims is not None
        result = answer.claims.get("result")
        if result != "no-match":
            said = "match (answering 'no' for someone not found)" if result == "match" else result
            return f"result {said}, expected no-match"
        return "no-match still carries attributes" if "attributes" in answer.claims else None

    return _each([await s.answer("unknown")], test, "unknown person: no-match, no attributes")


@_check("answer-latency", "ANSWER", "answers arrive within the declared timeout_ms")
async def answer_latency(s: ConformanceSession) -> Verdict:
    answers = await s.answers()
    slowest = max(answers, key=lambda a: a.exchange.elapsed_ms)
    budget = s.target.timeout_ms
    took = slowest.exchange.elapsed_ms
    detail = f"slowest {took:.0f} ms ({slowest.label}), declared {budget} ms"
    return took <= budget, detail


@_check("answer-distinct-jti", "ANSWER", "two requests get answers with distinct jtis")
async def answer_distinct_jti(s: ConformanceSession) -> Verdict:
    answers = await s.answers()
    jtis = [a.claims.get("jti") if a.claims is not None else None for a in answers]
    if None in jtis:
        missing = next(a for a, j in zip(answers, jtis, strict=True) if j is None)
        return False, f"{missing.label}: {missing.problem or 'no jti'}"
    if len(set(map(str, jtis))) != len(jtis):
        return False, "two answers share one jti"
    return True, f"{len(jtis)} answers, {len(jtis)} distinct jtis"


# BATCHES (in the groups above: what a provider that declares max_batch must also do)


def _no_batches(s: ConformanceSession) -> Verdict | None:
    if s.target.max_batch == 1 or s.target.batch_endpoint is None:
        return True, "not applicable: the registry declares no batches (max_batch 1)"
    return None


@_check("accepts-batch", "ACCEPTS", "a valid signed batch gets 200 application/jwt")
async def accepts_batch(s: ConformanceSession) -> Verdict:
    if (not_applicable := _no_batches(s)) is not None:
        return not_applicable
    exchange = (await s.batch_answer()).exchange
    ok = exchange.status == 200 and exchange.content_type == JWT_MEDIA_TYPE
    detail = f"HTTP {exchange.status} {exchange.content_type} in {exchange.elapsed_ms:.0f} ms"
    return ok, detail if ok else f"{detail}; expected 200 {JWT_MEDIA_TYPE}"


@_check(
    "answer-batch-bound",
    "ANSWER",
    "a batch answer verifies as the broker verifies it: this provider's key, typ "
    "attribute-batch-response+jwt, bound to the batch, each item to an id asked, once",
)
async def answer_batch_bound(s: ConformanceSession) -> Verdict:
    if (not_applicable := _no_batches(s)) is not None:
        return not_applicable
    reply = await s.batch_answer()
    if reply.answer is None:
        return False, f"the broker would discard the whole batch: {reply.problem}"
    return True, f"{len(reply.answer.answers)} items, each bound to its own item id"


@_check(
    "answer-batch-items",
    "ANSWER",
    "every batch item answered: known people match, nobody is no-match",
)
async def answer_batch_items(s: ConformanceSession) -> Verdict:
    if (not_applicable := _no_batches(s)) is not None:
        return not_applicable
    reply = await s.batch_answer()
    if reply.answer is None:
        return False, f"no usable batch answer: {reply.problem}"
    if reply.answer.missing:
        return False, (
            f"{len(reply.answer.missing)} of {len(reply.request.items)} items left out "
            "(answer 'unavailable' for an item whose lookup failed; never drop it)"
        )
    expected = ("match", "no-match", "match")
    got = tuple(reply.answer.answers[item.id].result for item in reply.request.items)
    if got != expected:
        return False, f"results {list(got)}, expected {list(expected)} (known, unknown, known)"
    return True, "known, unknown, known: match, no-match, match"


async def _batch_refused(s: ConformanceSession, label: str, body: bytes) -> Verdict:
    if (not_applicable := _no_batches(s)) is not None:
        return not_applicable
    return _refused(await s.post_batch(label, body))


@_check("refuses-batch-too-large", "REFUSES", "a batch of more items than the declared max_batch")
async def refuses_batch_too_large(s: ConformanceSession) -> Verdict:
    claims = batch_request_claims(s.batch(["known"]), now=int(time.time()))
    item = claims["items"][0]
    claims["items"] = [{**item, "id": new_jti()} for _ in range(s.target.max_batch + 1)]
    return await _batch_refused(s, "refuses-batch-too-large", s.sign_batch(claims))


@_check("refuses-batch-duplicate-items", "REFUSES", "a batch in which two items share an id")
async def refuses_batch_duplicate_items(s: ConformanceSession) -> Verdict:
    claims = batch_request_claims(s.batch(["known", "unknown"]), now=int(time.time()))
    claims["items"][1]["id"] = claims["items"][0]["id"]
    return await _batch_refused(s, "refuses-batch-duplicate-items", s.sign_batch(claims))


@_check("refuses-batch-wrong-typ", "REFUSES", "a batch whose typ is not attribute-batch-request")
async def refuses_batch_wrong_typ(s: ConformanceSession) -> Verdict:
    claims = batch_request_claims(s.batch(["known"]), now=int(time.time()))
    single = jws.sign(claims, s.target.broker_key, jws.ATTRIBUTE_REQUEST).encode("ascii")
    return await _batch_refused(s, "refuses-batch-wrong-typ", single)


# REFUSES


def _refused(exchange: Exchange, expect: int | None = None) -> Verdict:
    seen = f"HTTP {exchange.status} {exchange.content_type}"
    if not 400 <= exchange.status < 500:
        return False, f"{seen}; expected {expect or '4xx'}"
    if expect is not None and exchange.status != expect:
        return False, f"{seen}; expected {expect}"
    jwt_back = False, f"{seen} but a JWT came back with the refusal"
    if exchange.content_type == JWT_MEDIA_TYPE:
        return jwt_back
    try:
        jws.decode_compact(exchange.body.strip())
    except VerificationError:
        return True, f"refused: {seen}"
    return jwt_back


def _refusal(
    check_id: str, summary: str, *, expect: int | None = None, content_type: str = JWT_MEDIA_TYPE
) -> Callable[[Callable[[ConformanceSession], bytes]], CheckFunction]:
    """Register a check that sends the body built by the decorated function and wants a 4xx."""

    def register(build: Callable[[ConformanceSession], bytes]) -> CheckFunction:
        async def run(s: ConformanceSession) -> Verdict:
            exchange = await s.post(check_id, build(s), content_type=content_type)
            return _refused(exchange, expect)

        run.__name__ = build.__name__
        return _check(check_id, "REFUSES", summary)(run)

    return register


@_refusal("refuses-alg-none", "an unsigned request (alg none)")
def refuses_alg_none(s: ConformanceSession) -> bytes:
    return testing.forge(s.header(alg="none"), s.claims(), None).encode("ascii")


@_refusal("refuses-hs256", "HS256 with the broker's public key as the HMAC secret")
def refuses_hs256(s: ConformanceSession) -> bytes:
    secret = testing.public_pem(s.target.broker_key.verifying_key)
    return testing.hs256(s.header(alg="HS256"), s.claims(), secret).encode("ascii")


@_refusal("refuses-wrong-aud", "a request addressed to another member")
def refuses_wrong_aud(s: ConformanceSession) -> bytes:
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
def refuses_expired(s: ConformanceSession) -> bytes:
    claims = s.claims()
    now = int(time.time())
    claims["iat"], claims["exp"] = now - 200, now - 100
    return s.sign(claims)


@_refusal("refuses-future-iat", "a request issued more than 30 s in the future")
def refuses_future_iat(s: ConformanceSession) -> bytes:
    claims = s.claims()
    now = int(time.time())
    claims["iat"], claims["exp"] = now + 120, now + 180
    return s.sign(claims)


@_refusal("refuses-long-lifetime", "a request with a lifetime over 300 s")
def refuses_long_lifetime(s: ConformanceSession) -> bytes:
    claims = s.claims()
    claims["exp"] = claims["iat"] + jws.ATTRIBUTE_REQUEST.max_lifetime + 1
    return s.sign(claims)


@_check("refuses-replay", "REFUSES", "the same valid request sent twice: the second is refused")
async def refuses_replay(s: ConformanceSession) -> Verdict:
    token, _ = s.valid()
    first = await s.post("refuses-replay (first)", token)
    if first.status != 200:
        return False, f"the first send was not accepted (HTTP {first.status}); cannot judge"
    second = await s.post("refuses-replay", token)
    return _refused(second)


@_refusal("refuses-wrong-typ", "a request whose typ is not attribute-request+jwt")
def refuses_wrong_typ(s: ConformanceSession) -> bytes:
    return s.sign(s.claims(), typ="JWT")


@_refusal("refuses-other-member", "a request signed by another member (iss = that member)")
def refuses_other_member(s: ConformanceSession) -> bytes:
    claims = s.claims()
    claims["iss"] = s.target.other_member_id
    return s.sign(claims, key=s.target.other_member_key)


@_refusal("refuses-unknown-kid", "a request signed with a key no registry lists")
def refuses_unknown_kid(s: ConformanceSession) -> bytes:
    return s.sign(s.claims(), key=s.stranger)


@_refusal("refuses-duplicate-keys", "a payload with a duplicated JSON member")
def refuses_duplicate_keys(s: ConformanceSession) -> bytes:
    return s.sign(testing.raw_object(("jti", new_jti()), *s.claims().items()))


@_refusal("refuses-extra-header", "a header member beyond alg, kid, typ (jku)")
def refuses_extra_header(s: ConformanceSession) -> bytes:
    return s.sign(s.claims(), jku="https://attacker.invalid/jwks.json")


@_refusal("refuses-unoffered-attribute", "an attribute the provider does not offer")
def refuses_unoffered_attribute(s: ConformanceSession) -> bytes:
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
async def refuses_undeclared_field(s: ConformanceSession) -> Verdict:
    offered = _offered(s.target)
    asked = [n for n in s.target.attributes if n in offered]
    asked += [p.attribute for p in s.target.predicates if p.attribute in offered]
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
def refuses_content_type(s: ConformanceSession) -> bytes:
    return s.valid()[0]


@_refusal("refuses-oversized", "a request over 16 KiB gets 413", expect=413)
def refuses_oversized(s: ConformanceSession) -> bytes:
    claims = s.claims()
    claims["padding"] = "x" * (jws.MAX_TOKEN_BYTES * 3 // 4)  # base64url: just over 16 KiB
    return s.sign(claims)


# HYGIENE


@_check("hygiene-problem-json", "HYGIENE", "every error is an application/problem+json object")
async def hygiene_problem_json(s: ConformanceSession) -> Verdict:
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
async def hygiene_healthz(s: ConformanceSession) -> Verdict:
    url = health_url(s.target.endpoint)
    async with s.http.get(url, allow_redirects=False) as response:
        await read_limited(response.content, READ_LIMIT)
        return response.status == 200, f"GET {urlsplit(url).path}: HTTP {response.status}"


CHECK_IDS: Final[tuple[str, ...]] = tuple(spec.id for spec in CHECKS)


async def run_conformance(target: ConformanceTarget) -> ConformanceReport:
    """Run every check against ``target`` in order; a check that raises counts as a FAIL."""
    budget = aiohttp.ClientTimeout(total=target.timeout_ms / 1000 + 10)
    results: list[CheckResult] = []
    async with aiohttp.ClientSession(timeout=budget) as http:
        session = ConformanceSession(target, http)
        for spec in CHECKS:
            try:
                passed, detail = await spec.run(session)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                passed, detail = False, f"could not talk to the provider: {type(exc).__name__}"
            results.append(CheckResult(spec.id, spec.group, passed, one_line(detail)))
    return ConformanceReport(target.provider_id, target.endpoint, tuple(results))
