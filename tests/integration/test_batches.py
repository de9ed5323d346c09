"""Batched provider calls end to end, on real servers: concurrent checks through the broker
travel to the reference provider as signed batch requests; each check gets its own answer and
its own consent record; a batch whose items partly fail makes only those checks
``undetermined``; a hostile batch answer is discarded for every check in it; the provider kit
refuses malformed batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from broker.app_keys import GUARDS, PIPELINE, STORES
from broker.errors import SettingsError
from broker.resilience import CircuitBreaker
from broker.scheme import dev as devscheme
from broker.settings import load_settings
from connectors.provider_kit import BATCH_PATH, BatchLookupRequest, Found, LookupRequest
from connectors.reference.attributes import EXPECTED_OUTCOMES
from connectors.reference.population import subject_of
from connectors.reference.predicates import EXPECTED_BANDS
from members.council import EligibilityClient
from tests.support.servers import RunningBroker, RunningProvider, StartBroker, start_app
from trust import jws
from trust.batch import batch_of, batch_request_claims
from trust.keys import SigningKey
from trust.messages import AttributeRequest, Subject, new_jti

BB = devscheme.BLUE_BADGE_CHECK
PURPOSE = "blue-badge-application"
PEOPLE = sorted(EXPECTED_OUTCOMES)


@pytest.fixture
async def broker(start_broker: StartBroker, providers: object) -> RunningBroker:
    """A broker whose rate limit lets a council send a hundred checks at once."""
    return await start_broker(
        rate_limit_per_second=100_000, max_checks_in_flight=1000, max_check_wait_ms=10_000
    )


async def check_everyone(
    client: EligibilityClient, people: list[str]
) -> list[tuple[str, str, int]]:
    async def one(who: str) -> tuple[str, str, int]:
        answer = await client.check(BB, purpose=PURPOSE, subject=subject_of(who), assurance="P2")
        return who, answer.outcome, answer.log_index

    return await asyncio.gather(*(one(who) for who in people))


async def test_concurrent_checks_go_as_batches_and_each_gets_its_own_answer_and_record(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    assert broker.settings.coalesce_window_ms > 0  # the default: coalescing on
    kit = providers[devscheme.DWP].service.kit
    sizes: list[int] = []
    answer_batch = kit.answer_batch

    async def counting(body: bytes) -> str:
        sizes.append(len(claims_of(body)["items"]))
        return await answer_batch(body)

    kit.answer_batch = counting  # type: ignore[method-assign]
    people = PEOPLE * 4  # the same person asked by several checks at once: still one each
    results = await check_everyone(blue_badge_client, people)
    assert sizes, "no batch was sent"
    assert len(sizes) < len(people)  # fewer signed requests than checks
    assert max(sizes) <= devscheme.REFERENCE_BATCH
    assert kit.answered == len(people)  # every check's call answered once, no more
    for who, outcome, _ in results:
        assert outcome == EXPECTED_OUTCOMES[who][BB], who
    indexes = [index for _, _, index in results]
    assert len(set(indexes)) == len(people)  # one consent record per check
    log = broker.app[STORES].consent_log
    for index in indexes:
        stored = await log.get(index)
        assert stored is not None
        assert stored.body is not None
        assert json.loads(stored.body)["check"] == BB


def claims_of(token: str | bytes) -> dict[str, Any]:
    return jws.parse_json_object(
        jws.decode_compact(token, max_bytes=jws.MAX_BATCH_TOKEN_BYTES).payload
    )


async def test_a_partial_failure_makes_only_those_checks_undetermined(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    kit = providers[devscheme.DWP].service.kit
    single = kit._lookup
    failing = {subject_of(who)["family_name"] for who in PEOPLE[::3]}

    async def batch_lookup(request: BatchLookupRequest) -> Mapping[str, Found]:
        found: dict[str, Found] = {}
        for item_id, subject in request.subjects.items():
            if subject.family_name in failing:
                continue  # this item's lookup failed: the kit answers it "unavailable"
            found[item_id] = await single(
                LookupRequest(request.attributes, subject, request.as_of, request.purpose)
            )
        return found

    kit._batch_lookup = batch_lookup
    before = kit.batches_answered
    results = await check_everyone(blue_badge_client, PEOPLE)
    assert kit.batches_answered > before
    for who, outcome, _ in results:
        if subject_of(who)["family_name"] in failing:
            assert outcome == "undetermined", who
        else:
            assert outcome == EXPECTED_OUTCOMES[who][BB], who


Forge = Callable[[dict[str, Any], SigningKey], Awaitable[str]]


def _answer(asked: dict[str, Any], items: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": devscheme.DWP,
        "aud": asked["iss"],
        "iat": now,
        "exp": now + 60,
        "jti": new_jti(),
        "request": asked["jti"],
        "items": items,
    }
    return {**claims, **changes}


def _yes(asked: dict[str, Any], item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "result": "match",
        "attributes": dict.fromkeys(asked["attributes"], True),
    }


async def unbound(asked: dict[str, Any], key: SigningKey) -> str:
    items = [_yes(asked, i["id"]) for i in asked["items"]]
    return jws.sign(_answer(asked, items, request=new_jti()), key, jws.ATTRIBUTE_BATCH_RESPONSE)


async def answered_twice(asked: dict[str, Any], key: SigningKey) -> str:
    first = asked["items"][0]["id"]
    items = [_yes(asked, first)] + [_yes(asked, i["id"]) for i in asked["items"][:-1]]
    return jws.sign(_answer(asked, items), key, jws.ATTRIBUTE_BATCH_RESPONSE)


async def never_asked(asked: dict[str, Any], key: SigningKey) -> str:
    items = [_yes(asked, i["id"]) for i in asked["items"][1:]] + [_yes(asked, new_jti())]
    return jws.sign(_answer(asked, items), key, jws.ATTRIBUTE_BATCH_RESPONSE)


async def single_typ(asked: dict[str, Any], key: SigningKey) -> str:
    items = [_yes(asked, i["id"]) for i in asked["items"]]
    return jws.sign(_answer(asked, items), key, jws.ATTRIBUTE_RESPONSE)


async def another_member(asked: dict[str, Any], key: SigningKey) -> str:
    items = [_yes(asked, i["id"]) for i in asked["items"]]
    return jws.sign(_answer(asked, items), SigningKey.generate(), jws.ATTRIBUTE_BATCH_RESPONSE)


HOSTILE: dict[str, tuple[Forge, str]] = {
    "not-bound-to-the-batch": (unbound, "answer-invalid"),
    "an-item-answered-twice": (answered_twice, "answer-invalid"),
    "an-item-never-asked": (never_asked, "answer-invalid"),
    "a-single-answer-typ": (single_typ, "answer-not-verified"),
    "signed-by-a-stranger": (another_member, "answer-not-verified"),
}


async def test_a_hostile_batch_answer_is_discarded_for_every_check_in_it(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    dwp_key = SigningKey.from_pem(scheme.key_path(devscheme.DWP).read_bytes())
    real = providers[devscheme.DWP]
    await real.stop()
    forging: list[Forge] = []
    batches = 0

    async def hostile(request: web.Request) -> web.StreamResponse:
        nonlocal batches
        batches += 1
        forged = await forging[-1](claims_of(await request.read()), dwp_key)
        return web.Response(text=forged, content_type=jws.JWT_MEDIA_TYPE)

    app = web.Application(client_max_size=jws.MAX_BATCH_TOKEN_BYTES)
    app.router.add_post(BATCH_PATH, hostile)
    runner = await start_app(app, real.service.port)
    people = [who for who in PEOPLE if EXPECTED_OUTCOMES[who][BB] == "no"]
    try:
        for name, (forge, reason) in HOSTILE.items():
            forging.append(forge)
            # each forgery judged on its own: a closed circuit, as if the provider were new
            broker.app[GUARDS].guard(devscheme.DWP, 32).breaker = CircuitBreaker()
            sent = batches
            with structlog.testing.capture_logs() as events:
                results = await check_everyone(blue_badge_client, people)
            assert batches > sent, name
            assert {outcome for _, outcome, _ in results} == {"undetermined"}, name
            lines = [e for e in events if e.get("event") == "check"]
            assert len(lines) == len(people)
            statuses = {r["status"] for line in lines for r in line["providers"]}
            assert any(status.startswith(reason) for status in statuses), (name, statuses)
            logged = repr(events)
            for who in people:
                for value in subject_of(who).values():
                    assert value not in logged
            assert "eyJ" not in logged
    finally:
        await runner.cleanup()


# --- the provider kit's batch endpoint ---------------------------------------------------------


def _batch_token(
    scheme: devscheme.DevScheme, subjects: list[dict[str, str]], **changes: Any
) -> str:
    key = SigningKey.from_pem(scheme.key_path(devscheme.BROKER).read_bytes())
    requests = [
        AttributeRequest(
            devscheme.BROKER,
            devscheme.DWP,
            new_jti(),
            PURPOSE,
            ("registered-blind",),
            date.today(),
            Subject(subject),
        )
        for subject in subjects
    ]
    claims = {
        **batch_request_claims(batch_of(requests, jti=new_jti()), now=int(time.time())),
        **changes,
    }
    return jws.sign(claims, key, jws.ATTRIBUTE_BATCH_REQUEST)


async def _post(url: str, token: str) -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=token, headers={"Content-Type": jws.JWT_MEDIA_TYPE}) as response,
    ):
        return response.status, response.content_type, await response.read()


def _subject(who: str) -> dict[str, str]:
    person = subject_of(who)
    return {"family_name": person["family_name"], "date_of_birth": person["date_of_birth"]}


async def test_the_kit_answers_a_batch_item_by_item_and_refuses_a_replay(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider]
) -> None:
    url = f"http://127.0.0.1:{scheme.provider_ports[devscheme.DWP]}{BATCH_PATH}"
    token = _batch_token(scheme, [_subject("bb-yes-registered-blind"), _subject("no-match")])
    status, content_type, body = await _post(url, token)
    assert (status, content_type) == (200, jws.JWT_MEDIA_TYPE)
    claims, asked = claims_of(body), claims_of(token)
    assert claims["request"] == asked["jti"]
    assert [i["id"] for i in claims["items"]] == [i["id"] for i in asked["items"]]
    assert claims["items"][0] == {
        "id": asked["items"][0]["id"],
        "result": "match",
        "attributes": {"registered-blind": True},
    }
    assert claims["items"][1] == {"id": asked["items"][1]["id"], "result": "no-match"}
    status, content_type, _ = await _post(url, token)
    assert (status, content_type) == (401, "application/problem+json")


def _as_single(scheme: devscheme.DevScheme) -> str:
    """A batch's claims signed as a single request: the batch endpoint must refuse its typ."""
    claims = claims_of(_batch_token(scheme, [_subject("bb-no")]))
    key = SigningKey.from_pem(scheme.key_path(devscheme.BROKER).read_bytes())
    return jws.sign(claims, key, jws.ATTRIBUTE_REQUEST)


def _too_many(scheme: devscheme.DevScheme) -> str:
    return _batch_token(scheme, [_subject("bb-no")] * (devscheme.REFERENCE_BATCH + 1))


def _undeclared(scheme: devscheme.DevScheme) -> str:
    return _batch_token(scheme, [_subject("bb-no"), {**_subject("bb-no"), "postcode": "CV34 4RL"}])


def _other_audience(scheme: devscheme.DevScheme) -> str:
    return _batch_token(scheme, [_subject("bb-no")], aud=devscheme.HMRC)


REFUSALS: dict[str, tuple[Callable[[devscheme.DevScheme], str], int, str]] = {
    "more-items-than-declared": (_too_many, 400, "invalid-request"),
    "an-undeclared-field": (_undeclared, 400, "undeclared-fields"),
    "another-audience": (_other_audience, 401, "invalid-token"),
    "single-typ": (_as_single, 401, "invalid-token"),
}


async def test_the_kit_refuses_a_malformed_batch(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider]
) -> None:
    url = f"http://127.0.0.1:{scheme.provider_ports[devscheme.DWP]}{BATCH_PATH}"
    kit = providers[devscheme.DWP].service.kit
    for name, (build, status, slug) in REFUSALS.items():
        got, content_type, body = await _post(url, build(scheme))
        assert (got, content_type) == (status, "application/problem+json"), name
        assert json.loads(body)["type"].endswith(slug), name
    assert kit.answered == 0


async def test_with_coalescing_off_every_check_sends_its_own_request(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: dict[str, RunningProvider],
) -> None:
    for bad in (-1, 2.5):
        with pytest.raises(SettingsError, match="coalesce_window_ms"):
            load_settings(scheme.broker_config, coalesce_window_ms=bad)
    broker = await start_broker(
        coalesce_window_ms=0, rate_limit_per_second=100_000, max_checks_in_flight=1000
    )
    assert broker.app[PIPELINE].step.coalescer is None
    kit = providers[devscheme.DWP].service.kit
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as client:
        results = await check_everyone(client, PEOPLE)
    assert {who: outcome for who, outcome, _ in results} == {
        who: EXPECTED_OUTCOMES[who][BB] for who in PEOPLE
    }
    assert (kit.batches_answered, kit.answered) == (0, len(PEOPLE))


async def test_checks_that_ask_predicates_are_never_batched_and_keep_their_bands(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
) -> None:
    """DWP declares max_batch and answers the CTR predicates: concurrent banded checks still
    go one request each (a batch carries no predicates), each with its band."""
    assert broker.settings.coalesce_window_ms > 0
    kit = providers[devscheme.DWP].service.kit
    seen: list[str] = []
    answer = kit.answer

    async def counting(body: bytes) -> str:
        seen.append(json.dumps(claims_of(body).get("predicates")))
        return await answer(body)

    kit.answer = counting  # type: ignore[method-assign]
    councils = {council for _, council, _, _ in EXPECTED_BANDS}
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            c: await stack.enter_async_context(
                EligibilityClient.from_config(scheme.council_config(c))
            )
            for c in councils
        }

        async def one(identity: str, council: str, as_of: str) -> str:
            got = await clients[council].check(
                devscheme.CTR_CHECK,
                purpose="council-tax-reduction-application",
                subject=subject_of(identity),
                as_of=date.fromisoformat(as_of),
                assurance="P2",
            )
            return got.outcome

        rounds = 3  # the same banded checks several times at once: plenty to coalesce
        outcomes = await asyncio.gather(
            *(one(i, c, d) for _ in range(rounds) for i, c, d, _ in EXPECTED_BANDS)
        )
    assert outcomes == [band for _ in range(rounds) for *_, band in EXPECTED_BANDS]
    assert kit.batches_answered == 0
    assert len(seen) == rounds * len(EXPECTED_BANDS)  # one signed request per check
    assert all(p != "null" for p in seen)  # each of them carried its predicates
