"""Schemathesis against the live broker: every operation of its own OpenAPI document, with a
bounded, seeded budget, must answer without a 5xx and exactly as the document says (status,
content type, body schema).

aiohttp exposes no ASGI app, so the cases go over real HTTP to a broker on loopback. The
fuzzer is synchronous (requests), so it runs in a worker thread while the broker serves on the
test's event loop. Failures are collected across every operation, not stopped at the first, so
one run shows every way the document and the server disagree.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import requests
import requests.auth
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from broker.routes import ROUTES
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.servers import RunningBroker
from trust import jws
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import SigningKey
from trust.messages import new_jti
from trust.testing import forge

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Per operation and generation mode: small, so the whole test stays near a minute on two cores.
EXAMPLES = 40
SEEDED_RECORDS = 3
BUDGET = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same cases every run: CI is deterministic
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: report what failed, quickly
    suppress_health_check=list(HealthCheck),
)


@schemathesis.deserializer("application/json")
def json_or_compact_jws(
    _: schemathesis.DeserializationContext, response: schemathesis.Response
) -> object:
    """JSON, as Schemathesis reads it, except a compact JWS: Schemathesis counts
    ``application/jwt`` as JSON, but a compact JWS is one ASCII string, so the document's
    schema (its three-part pattern) applies to the text itself. Registered under the JSON
    key, since the first registered deserializer of a media type's family wins."""
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.split(";")[0].strip().lower() == JWT_MEDIA_TYPE:
        return response.content.decode("ascii")
    return response.json()


class SignedAsAuditor(requests.auth.AuthBase):
    """Signs each prepared request as the scheme's auditor (an ``audit-request+jwt`` over the
    method, the path and query exactly as sent, and the body), so the audit routes' own
    parameter handling is fuzzed, not only the gate in front of it."""

    def __init__(self, auditor: AuditClient) -> None:
        self.auditor = auditor

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        assert request.method is not None
        request.headers["Authorization"] = self.auditor.authorization(
            request.method, request.path_url, body
        )
        return request


class SignedAsCouncil:
    """Signs fuzzed claims as a registered council, with the envelope (iss, aud, iat, exp,
    jti) made valid, so what the fuzzer varies reaches the pipeline behind the signature
    check."""

    def __init__(self, member_id: str, key: SigningKey) -> None:
        self.member_id = member_id
        self.key = key

    def token(self, claims: dict[str, Any], profile: jws.Profile) -> bytes:
        now = int(time.time())
        envelope = {"iat": now, "exp": now + 60, "jti": new_jti()}
        payload = {**claims, "iss": self.member_id, "aud": devscheme.BROKER, **envelope}
        header = {"alg": "ES256", "kid": self.key.kid, "typ": profile.typ}
        return forge(header, payload, self.key).encode("ascii")


def as_a_real_question(body: object) -> object:
    """Generated query claims, asking a real check about a real test identity on its lawful
    basis: the fuzzed options (as_of, assurance, consent, nbf) then reach policy, the
    providers and the log rather than stopping at subject validation."""
    if not isinstance(body, dict):
        return body
    real = {
        "check": devscheme.BLUE_BADGE_CHECK,
        "purpose": "blue-badge-application",
        "lawful_basis": "public-task",
        "subject": subject_of("bb-yes-dla"),
    }
    return {**body, **real}


@dataclass(frozen=True)
class SignedMessage:
    """A route taking a member's signed message, and how to fuzz what it says."""

    path: str
    claims_schema: str  # the document's component schema of the payload
    profile: jws.Profile
    control: dict[str, Any]  # a payload the broker answers (200): always sent first
    realistic: Callable[[object], object] = lambda body: body


SIGNED_MESSAGES = (
    SignedMessage(
        "/v1/checks",
        "EligibilityQuery",
        jws.ELIGIBILITY_QUERY,
        control={
            "check": devscheme.BLUE_BADGE_CHECK,
            "purpose": "blue-badge-application",
            "lawful_basis": "public-task",
            "subject": subject_of("bb-yes-dla"),
            "assurance": "P2",
        },
        realistic=as_a_real_question,
    ),
    SignedMessage(
        "/v1/consents/withdrawals",
        "ConsentWithdrawal",
        jws.CONSENT_WITHDRAWAL,
        control={"consent_id": "fuzz-control", "withdrawn_at": "2026-01-01T00:00:00Z"},
    ),
)


def claims_operation(document: dict[str, Any], schema: str) -> schemathesis.APIOperation:
    """An operation whose JSON body is one of the document's message schemas: a way to have
    Schemathesis generate claims, valid and invalid, from the document itself."""
    body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    synthetic = {
        "openapi": "3.1.0",
        "info": {"title": schema, "version": "1"},
        "paths": {
            "/claims": {
                "post": {
                    "requestBody": {"required": True, "content": body},
                    "responses": {"200": {"description": "unused"}},
                }
            }
        },
        "components": document["components"],
    }
    return schemathesis.openapi.from_dict(synthetic)["/claims"]["POST"]


@dataclass
class Run:
    """What the fuzzer sent and saw: each failed case described, and how often each
    operation answered each status (keyed ``"GET /path signed"`` or ``"GET /path"``)."""

    failures: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return self.statuses.total()


def fuzz_operation(
    run: Run,
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    auth: SignedAsAuditor | None,
) -> None:
    """Send one operation's budget of ``mode`` cases (signed by ``auth``, if any) and note
    in ``run`` what came back."""
    key = operation.label + (" signed" if auth else "")

    def send(case: schemathesis.Case) -> None:
        if case.media_type == JWT_MEDIA_TYPE and isinstance(case.body, str):
            # Schemathesis would send a JWS-shaped string as a JSON string, quotes and all;
            # as bytes it goes on the wire as the compact JWS a member would send.
            case.body = case.body.encode()
        response = case.call(base_url=base_url, session=session, timeout=10, auth=auth)
        run.statuses[key, response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:
            run.failures.append(f"{key} ({mode.value}): {failure.message}")

    test: Callable[[], None] = BUDGET(given(case=operation.as_strategy(generation_mode=mode))(send))
    test()


def modes(described: dict[str, Any]) -> tuple[GenerationMode, ...]:
    """Valid cases for every operation; invalid ones too where there is something to make
    invalid (an operation without a body, security or a constrained parameter has no negative
    case: any string is a valid member id in a path)."""
    constrained = [
        p
        for p in described.get("parameters", [])
        if p.get("in") != "path" or p.get("schema") != {"type": "string"}
    ]
    if constrained or described.get("requestBody") or described.get("security"):
        return (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return (GenerationMode.POSITIVE,)


def fuzz_signed(
    run: Run,
    schema: schemathesis.BaseSchema,
    message: SignedMessage,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    council: SignedAsCouncil,
) -> None:
    """POST ``message``'s route with ``mode`` claims generated from the document, signed by
    ``council``, and check each answer against that route's operation."""
    operation = schema[message.path]["POST"]
    key = operation.label + " signed"

    def send(body: object) -> None:
        if not isinstance(body, dict):  # a payload is an object, or it is 400 unread
            return
        token = council.token(body, message.profile)
        case = operation.Case(body=token, media_type=JWT_MEDIA_TYPE)
        response = case.call(base_url=base_url, session=session, timeout=10)
        run.statuses[key, response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:
            run.failures.append(f"{key} ({mode.value}): {failure.message}")

    claims = claims_operation(schema.raw_schema, message.claims_schema)
    generated = claims.as_strategy(generation_mode=mode).map(lambda case: case.body)
    bodies = st.one_of(generated, generated.map(message.realistic))
    test: Callable[[], None] = BUDGET(given(body=bodies)(example(body=message.control)(send)))
    test()


def fuzz(
    document: dict[str, Any], base_url: str, auditor: SignedAsAuditor, council: SignedAsCouncil
) -> Run:
    """Run every operation of ``document`` against ``base_url``, positive and negative cases,
    unsigned and (for the audit routes) signed by ``auditor``; then the member messages, their
    claims generated from the document's schemas, signed by ``council``."""
    schema = schemathesis.openapi.from_dict(document)
    run = Run()
    with requests.Session() as session:
        for message in SIGNED_MESSAGES:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz_signed(run, schema, message, mode, base_url, session, council)
        for result in schema.get_all_operations():
            operation = result.ok()
            described = document["paths"][operation.path][operation.method.lower()]
            signers = (None, auditor) if "security" in described else (None,)
            for mode in modes(described):
                for auth in signers:
                    fuzz_operation(run, operation, mode, base_url, session, auth)
    return run


def auditor_of(scheme: devscheme.DevScheme, broker: RunningBroker) -> AuditClient:
    return AuditClient(
        member_id=devscheme.AUDITOR,
        key=SigningKey.from_pem(scheme.key_path(devscheme.AUDITOR).read_bytes()),
        broker_url=broker.url,
        broker_id=devscheme.BROKER,
    )


@pytest.fixture
async def document(broker: RunningBroker) -> dict[str, Any]:
    """The document the live broker serves (not the one built here: what a client sees)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{broker.url}/openapi.json") as response,
    ):
        served: dict[str, Any] = await response.json()
        return served


@pytest.mark.timeout(480)  # bounded by the budget; each new route adds to it
async def test_every_operation_answers_as_its_document_says(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    document: dict[str, Any],
) -> None:
    # A few records in the log, so record, proof and export routes have something to answer
    # with (the fuzzer's small integers, 1 and 2 among them, then name real records).
    for _ in range(SEEDED_RECORDS):
        await blue_badge_client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of("bb-yes-dla"),
            assurance="P2",
        )
    auditor = auditor_of(scheme, broker)
    council = SignedAsCouncil(
        devscheme.COUNCIL_BLUE_BADGE,
        SigningKey.from_pem(scheme.key_path(devscheme.COUNCIL_BLUE_BADGE).read_bytes()),
    )
    run = await asyncio.to_thread(fuzz, document, broker.url, SignedAsAuditor(auditor), council)
    assert not run.failures, "\n\n".join(run.failures)
    # Every operation was exercised, and the signed audit requests got past the gate.
    labels = {label for label, _ in run.statuses}
    operations = {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }
    tally = sorted(run.statuses.items())
    assert operations <= labels, tally
    assert run.statuses["GET /v1/audit/records signed", 200] > 0, tally
    # ... and the signed checks reached an answer and a recorded refusal.
    assert run.statuses["POST /v1/checks signed", 200] > 0, tally
    assert run.statuses["POST /v1/checks signed", 403] > 0, tally
    assert run.statuses["POST /v1/consents/withdrawals signed", 200] > 0, tally


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class WrongMethod:
    """How the broker answered a method its document does not list for a path."""

    method: str
    path: str
    documented: set[str]
    status: int
    content_type: str
    problem_type: object
    allow: str | None


async def wrong_method_answers(base_url: str, document: dict[str, Any]) -> list[WrongMethod]:
    answers = []
    async with aiohttp.ClientSession() as http:
        for path, item in document["paths"].items():
            concrete = re.sub(  # {index}, {member}; a job id has its own shape
                r"\{[a-z_]+\}", lambda m: "0" * 32 if m.group(0) == "{job_id}" else "1", path
            )
            for method in (m for m in METHODS if m.lower() not in item):
                async with http.request(method, base_url + concrete) as response:
                    problem = await response.json(content_type=None)
                    answers.append(
                        WrongMethod(
                            method,
                            concrete,
                            {m.upper() for m in item},
                            response.status,
                            response.content_type,
                            problem.get("type"),
                            response.headers.get("Allow"),
                        )
                    )
    return answers


async def test_every_undocumented_method_is_a_405_problem(
    broker: RunningBroker, document: dict[str, Any]
) -> None:
    # What Schemathesis's coverage phase probes (unsupported_method); the document lists 405
    # method-not-allowed on every operation.
    answers = await wrong_method_answers(broker.url, document)
    assert len(answers) == len(document["paths"]) * len(METHODS) - len(ROUTES)
    for answer in answers:
        assert answer.status == 405, answer
        assert answer.content_type == PROBLEM_MEDIA_TYPE, answer
        assert answer.problem_type == TYPE_PREFIX + "method-not-allowed", answer


async def test_a_405_says_which_methods_are_allowed(
    broker: RunningBroker, document: dict[str, Any]
) -> None:
    for answer in await wrong_method_answers(broker.url, document):
        assert set((answer.allow or "").replace(" ", "").split(",")) == answer.documented, answer


@pytest.mark.parametrize(
    "moment",
    ["1961-W26-7", "19610702", "1961-183", "2020-01-01T00:00:00", "2020-01-01 00:00:00Z"],
)
async def test_audit_time_filters_refuse_forms_the_document_does_not_name(
    scheme: devscheme.DevScheme, broker: RunningBroker, moment: str
) -> None:
    # `since`/`until` are documented as a date or an RFC 3339 date-time; read with
    # datetime.fromisoformat they also took week and ordinal dates, basic format and zone-less
    # times (1961-W26-7 as 1961-07-02), answering 200 where the document says 400.
    async with auditor_of(scheme, broker) as auditor:
        for name in ("since", "until"):
            with pytest.raises(CheckFailed) as refused:
                await auditor.records(**{name: moment})
            assert refused.value.status == 400
            assert refused.value.problem["type"] == TYPE_PREFIX + "bad-request"


@pytest.mark.parametrize(
    "moment", ["1961-07-02", "2020-01-01T00:00:00Z", "2020-01-01t00:00:00+01:00"]
)
async def test_audit_time_filters_take_the_documented_forms(
    scheme: devscheme.DevScheme, broker: RunningBroker, moment: str
) -> None:
    async with auditor_of(scheme, broker) as auditor:
        assert (await auditor.records(since=moment))["records"] == []
        assert (await auditor.records(until=moment))["records"] == []
