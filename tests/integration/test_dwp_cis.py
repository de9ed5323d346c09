"""The DWP Citizen Information API adapter against its stub, over real HTTP on 127.0.0.1.

Covers the derivations (they agree with the reference DWP provider for every test identity with
a NINO), the OAuth2 token (cached, refreshed before expiry, one refresh after a 401 then
``undetermined``), the wire (JSON:API body, the four headers, only a NINO fragment), and each
documented error case: 404 and 422 (no-match), 429 with Retry-After, 5xx, a slow answer, a
malformed JSON:API document, claims for another guid. Every test also proves that no response
body, token, NINO or other identifier reached a log line or an exception.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from connectors.dwp_cis import (
    CIS_ATTRIBUTES,
    JSON_API,
    DwpCisClient,
    DwpError,
    DwpInvalidResponse,
    DwpRejected,
    DwpUnavailable,
    cis_lookup,
)
from connectors.provider_kit import LookupRequest
from connectors.reference.attributes import evaluate
from connectors.reference.dwp_cis_stub import CIS_STUB, CisStubState, create_cis_stub_app
from connectors.reference.population import TEST_IDENTITIES, TWINS, Person
from connectors.reference.predicates import evaluate_predicate
from tests.support.servers import start_app, url_of
from trust.messages import Subject
from trust.parameters import Predicate

CLIENT_ID, CLIENT_SECRET = "axb-dwp-cis", "s3cret-client-credential-value"
INSTIGATOR = "dwp-cis-adapter"  # a pseudonym of the caller, never a person
PEOPLE = [*TEST_IDENTITIES.values(), *TWINS]
AS_OF = date(2026, 11, 27)
THRESHOLDS = (1, 61_667, 61_676, 128_334, 500_000)


def _identifiers() -> list[str]:
    values = {CLIENT_SECRET}
    for person in PEOPLE:
        values |= {person.family_name, person.date_of_birth.isoformat(), person.postcode}
        if person.nino:
            values.add(person.nino)
    return sorted(values, key=len, reverse=True)


LEAK = re.compile("|".join(re.escape(v) for v in _identifiers()), re.IGNORECASE)
BODY_WORDS = re.compile(r"MatchResult|takeHomePay|benefitType|access_token|Bearer [A-Za-z0-9_-]")


def test_the_leak_scanner_can_fail() -> None:
    assert LEAK.search('{"lastName": "Fixturely"}')
    assert LEAK.search("nino=ZX100105A")
    assert BODY_WORDS.search('{"type": "MatchResult"}')
    assert BODY_WORDS.search("Authorization: Bearer abcdef")
    assert not LEAK.search("correlation_id=3f2a19aa dwp-http-503")


@pytest.fixture(autouse=True)
def nothing_personal_in_logs(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[list[MutableMapping[str, Any]]]:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        yield events
    out, err = capfd.readouterr()
    tokens = STUBS[-1].tokens_ever if STUBS else set()
    for source, text in (
        ("structlog", repr(events)),
        ("stdout", out),
        ("stderr", err),
        ("stdlib logging", caplog.text),
    ):
        assert LEAK.search(text) is None, f"an identifier reached {source}"
        assert BODY_WORDS.search(text) is None, f"a response body or token reached {source}"
        assert not [t for t in tokens if t in text], f"a token reached {source}"


def assert_clean(exc: BaseException) -> None:
    chain: BaseException | None = exc
    while chain is not None:
        for text in (str(chain), repr(chain)):
            assert LEAK.search(text) is None
            assert BODY_WORDS.search(text) is None
        chain = chain.__cause__ or chain.__context__


# --- harness ----------------------------------------------------------------------------------


@dataclass
class Stub:
    url: str
    state: CisStubState
    tokens_ever: set[str]


STUBS: list[Stub] = []


class Clock:
    """Time for both the stub and the client, moved forward by ``sleep`` without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def start_stub(clock: Clock) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(**options: Any) -> Stub:
        app = create_cis_stub_app(
            CLIENT_ID, CLIENT_SECRET, people=PEOPLE, clock=clock.wall, **options
        )
        state = app[CIS_STUB]
        issued: set[str] = set()
        original = state.tokens

        class Remembering(dict[str, float]):
            def __setitem__(self, key: str, value: float) -> None:
                issued.add(key)
                super().__setitem__(key, value)

        state.tokens = Remembering(original)
        runner = await start_app(app)
        runners.append(runner)
        stub = Stub(url_of(runner), state, issued)
        STUBS.append(stub)
        return stub

    yield start
    for runner in runners:
        await runner.cleanup()
    STUBS.clear()


@pytest.fixture
async def stub(start_stub: Any) -> Stub:
    stub: Stub = await start_stub()
    return stub


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def client_for(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock, *, secret: str = CLIENT_SECRET
) -> DwpCisClient:
    return DwpCisClient(
        session,
        base_url=stub.url,
        token_url=stub.url + "/oauth2/token",
        client_id=CLIENT_ID,
        client_secret=secret,
        policy_id="free-school-meals",
        clock=clock.monotonic,
        sleep=clock.sleep,
    )


PREDICATES = tuple(
    Predicate("uc-take-home-pay-below", (("amount_pence", amount), ("periods", periods)))
    for amount in THRESHOLDS
    for periods in (1, 3)
)


def request_for(subject: dict[str, str], as_of: date = AS_OF) -> LookupRequest:
    return LookupRequest(tuple(CIS_ATTRIBUTES), Subject(subject), as_of, "test", PREDICATES)


def subject_of(person: Person, **changes: str) -> dict[str, str]:
    fields = {
        "family_name": person.family_name,
        "date_of_birth": person.date_of_birth.isoformat(),
        "nino": person.nino or "",
        **changes,
    }
    return fields


def case(last_name: str) -> dict[str, str]:
    return {"family_name": last_name, "date_of_birth": "1980-01-01", "nino": "ZX999991A"}


# --- derivations ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", [AS_OF, date(2026, 8, 31), date(2024, 3, 1)])
async def test_the_adapter_derives_what_the_reference_dwp_provider_answers(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock, as_of: date
) -> None:
    client = client_for(stub, session, clock)
    lookup = cis_lookup(client, instigator=INSTIGATOR, deadline_s=5)
    compared = 0
    for person in PEOPLE:
        if person.nino is None:
            continue
        answers = await lookup(request_for(subject_of(person), as_of))
        assert answers is not None, person.person_id
        expected = {name: evaluate(person, name, as_of) for name in CIS_ATTRIBUTES}
        expected |= {str(p): evaluate_predicate(person, p, as_of) for p in PREDICATES}
        assert dict(answers) == expected, person.person_id
        compared += 1
    assert compared >= 25
    assert client.tokens_fetched == 1  # one token, cached across every enquiry


async def test_a_subject_without_a_nino_is_no_match_without_calling_dwp(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock
) -> None:
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=5)
    person = TEST_IDENTITIES["fsm-yes-uc-low-earnings"]
    fields = {k: v for k, v in subject_of(person).items() if k != "nino"}
    assert await lookup(request_for(fields)) is None
    assert stub.state.calls.get("match", 0) == 0


async def test_the_wire_carries_json_api_the_four_headers_and_only_a_nino_fragment(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock
) -> None:
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=5)
    person = TEST_IDENTITIES["fsm-yes-uc-low-earnings"]
    assert await lookup(request_for(subject_of(person)))
    match, claims = stub.state.headers
    for headers in (match, claims):
        assert headers["instigating-user-id"] == INSTIGATOR
        assert headers["policy-id"] == "free-school-meals"
        assert headers["context"] == "eligibility-check"
        assert uuid.UUID(headers["correlation-id"])
        assert headers["authorization"].startswith("Bearer ")
    assert match["correlation-id"] == claims["correlation-id"]  # one enquiry, one id
    assert match["content-type"] == JSON_API
    assert person.nino is not None
    assert all(person.nino not in value for value in (*match.values(), *claims.values()))


# --- the token --------------------------------------------------------------------------------


async def test_the_token_is_refreshed_before_it_expires(
    start_stub: Any, session: aiohttp.ClientSession, clock: Clock
) -> None:
    stub = await start_stub(token_lifetime_s=120)  # refreshed 60 s before its end
    client = client_for(stub, session, clock)
    lookup = cis_lookup(client, instigator=INSTIGATOR, deadline_s=5)
    subject = subject_of(TEST_IDENTITIES["fsm-yes-income-support"])
    await lookup(request_for(subject))
    clock.offset += 59
    await lookup(request_for(subject))
    assert client.tokens_fetched == 1
    clock.offset += 2  # 61 s: inside the refresh margin, still valid at the stub
    await lookup(request_for(subject))
    assert client.tokens_fetched == 2
    assert stub.state.calls["token"] == 2


async def test_a_401_refreshes_the_token_once_and_the_enquiry_succeeds(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock
) -> None:
    client = client_for(stub, session, clock)
    lookup = cis_lookup(client, instigator=INSTIGATOR, deadline_s=5)
    subject = subject_of(TEST_IDENTITIES["fsm-yes-income-support"])
    await lookup(request_for(subject))
    stub.state.revoke_tokens()  # the token expired early at DWP's end
    answers = await lookup(request_for(subject))
    assert answers is not None
    assert answers["income-support"] is True
    assert client.tokens_fetched == 2


async def test_a_401_after_the_refresh_is_rejected_and_undetermined(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock
) -> None:
    client = client_for(stub, session, clock)
    lookup = cis_lookup(client, instigator=INSTIGATOR, deadline_s=5)
    with pytest.raises(DwpRejected) as rejected:
        await lookup(request_for(case("Cisunauthorised")))
    assert rejected.value.reason == "dwp-http-401-after-refresh"
    assert stub.state.calls["match"] == 2  # the call and one retry with a fresh token
    assert client.tokens_fetched == 2
    assert_clean(rejected.value)


async def test_wrong_client_credentials_fail_at_the_token_endpoint(
    stub: Stub, session: aiohttp.ClientSession, clock: Clock
) -> None:
    client = client_for(stub, session, clock, secret="not-the-secret")
    lookup = cis_lookup(client, instigator=INSTIGATOR, deadline_s=5)
    with pytest.raises(DwpUnavailable, match="dwp-token-http-401") as failed:
        await lookup(request_for(subject_of(TEST_IDENTITIES["fsm-yes-income-support"])))
    assert stub.state.calls.get("match", 0) == 0
    assert_clean(failed.value)


# --- the documented cases ---------------------------------------------------------------------


async def test_nobody_and_more_than_one_are_both_no_match_with_their_own_reasons(
    stub: Stub,
    session: aiohttp.ClientSession,
    clock: Clock,
    nothing_personal_in_logs: list[MutableMapping[str, Any]],
) -> None:
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=5)
    person = TEST_IDENTITIES["fsm-yes-income-support"]
    assert await lookup(request_for(subject_of(person, nino="ZX100102B"))) is None  # not theirs
    assert await lookup(request_for(case("Cismanymatches"))) is None
    events = [e["event"] for e in nothing_personal_in_logs]
    assert "dwp_no_match" in events
    assert "dwp_more_than_one_match" in events


@pytest.mark.parametrize(
    ("last_name", "error", "reason"),
    [
        ("Cisservererror", DwpUnavailable, "dwp-http-500"),
        ("Cismalformed", DwpInvalidResponse, "dwp-match-not-json-api"),
        ("Cisotherguid", DwpInvalidResponse, "dwp-claims-for-another-citizen"),
    ],
)
async def test_each_documented_failure_is_a_fault_never_an_answer(
    stub: Stub,
    session: aiohttp.ClientSession,
    clock: Clock,
    last_name: str,
    error: type[DwpError],
    reason: str,
) -> None:
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=5)
    with pytest.raises(error) as failed:
        await lookup(request_for(case(last_name)))
    assert failed.value.reason == reason
    assert_clean(failed.value)


async def test_a_slow_answer_is_a_timeout(
    start_stub: Any, session: aiohttp.ClientSession, clock: Clock
) -> None:
    stub = await start_stub(slow_s=2.0)
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=0.3)
    with pytest.raises(DwpUnavailable, match="dwp-timeout"):
        await lookup(request_for(case("Cisslow")))


async def test_a_429_is_retried_after_retry_after_within_the_deadline(
    start_stub: Any, session: aiohttp.ClientSession, clock: Clock
) -> None:
    stub = await start_stub(throttle_first=1)
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=5)
    assert await lookup(request_for(case("Cisthrottled"))) == dict.fromkeys(
        [*CIS_ATTRIBUTES, *map(str, PREDICATES)], False
    )
    assert clock.sleeps == [1.0]
    assert stub.state.calls["match"] == 2


async def test_a_429_whose_wait_would_pass_the_deadline_is_undetermined_without_waiting(
    start_stub: Any, session: aiohttp.ClientSession, clock: Clock
) -> None:
    stub = await start_stub(throttle_first=10)
    lookup = cis_lookup(client_for(stub, session, clock), instigator=INSTIGATOR, deadline_s=0.8)
    with pytest.raises(DwpUnavailable, match="dwp-throttled"):
        await lookup(request_for(case("Cisthrottled")))
    assert clock.sleeps == []
    assert stub.state.calls["match"] == 1


def test_the_client_keeps_its_credentials_out_of_its_repr() -> None:
    async def build() -> DwpCisClient:
        async with aiohttp.ClientSession() as http:
            return DwpCisClient(
                http,
                base_url="https://cis.example",
                token_url="https://cis.example/token",
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                policy_id="p",
            )

    import asyncio

    client = asyncio.run(build())
    assert CLIENT_SECRET not in repr(client)
    assert CLIENT_SECRET not in str(vars(client))
