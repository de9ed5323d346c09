"""A provider answer that is unsigned, signed by another member, unbound to the request, late,
oversized or carrying an unknown outcome is discarded: the council gets ``undetermined`` for
that provider, never the bad answer, and the reason is logged without personal data."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp import web

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.servers import RunningBroker, RunningProvider, start_app
from trust import jws
from trust.keys import SigningKey
from trust.messages import new_jti
from trust.testing import forge

Forge = Callable[[dict[str, Any], SigningKey, SigningKey], Awaitable[web.StreamResponse]]


def claims_for(asked: dict[str, Any], **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": devscheme.DWP,
        "aud": asked["iss"],
        "iat": now,
        "exp": now + 60,
        "jti": new_jti(),
        "request": asked["jti"],
        "result": "match",
        "attributes": dict.fromkeys(asked["attributes"], True),  # a "yes" if believed
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def jwt(token: str) -> web.Response:
    return web.Response(text=token, content_type="application/jwt")


async def unsigned(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    header = {"alg": "none", "typ": jws.ATTRIBUTE_RESPONSE.typ}
    return jwt(forge(header, claims_for(request), None))


async def other_member(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    return jwt(jws.sign(claims_for(request, iss=devscheme.HMRC), other, jws.ATTRIBUTE_RESPONSE))


async def unbound(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    forged = claims_for(request, request=new_jti())
    return jwt(jws.sign(forged, dwp, jws.ATTRIBUTE_RESPONSE))


async def late(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    await asyncio.sleep(3)  # the declared timeout is 2 s
    return jwt(jws.sign(claims_for(request), dwp, jws.ATTRIBUTE_RESPONSE))


async def oversized(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    padded = claims_for(request, padding="x" * 20_000)
    return jwt(jws.sign(padded, dwp, jws.ATTRIBUTE_RESPONSE))


async def unknown_outcome(
    request: dict[str, Any], dwp: SigningKey, other: SigningKey
) -> web.Response:
    odd = claims_for(request, result="probably")
    return jwt(jws.sign(odd, dwp, jws.ATTRIBUTE_RESPONSE))


async def extra_attribute(
    request: dict[str, Any], dwp: SigningKey, other: SigningKey
) -> web.Response:
    claims = claims_for(request)
    claims["attributes"]["benefit-amount-per-week"] = True
    return jwt(jws.sign(claims, dwp, jws.ATTRIBUTE_RESPONSE))


async def wrong_type(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    return web.json_response(claims_for(request))


async def server_error(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
    return web.Response(status=500, text="database on fire")


HOSTILE: dict[str, tuple[Forge, str]] = {
    "unsigned": (unsigned, "answer-not-verified"),
    "signed-by-another-member": (other_member, "answer-not-verified"),
    "not-bound-to-the-request": (unbound, "answer-invalid"),
    "late": (late, "timeout"),
    "oversized": (oversized, "provider-answer-oversized"),
    "unknown-outcome": (unknown_outcome, "answer-invalid"),
    "an-attribute-beyond-those-asked": (extra_attribute, "answer-invalid"),
    "not-application-jwt": (wrong_type, "provider-wrong-content-type"),
    "http-500": (server_error, "provider-http-500"),
}


async def serve_in_place(real: RunningProvider, handler: Any) -> Any:
    """Stop the real provider and serve ``handler`` on the port it released."""
    await real.stop()
    app = web.Application()
    app.router.add_post("/v1/attributes", handler)
    return await start_app(app, real.service.port)


def provider_status(events: list[Any]) -> str:
    """The one provider report of the one canonical check line."""
    (line,) = [e for e in events if e.get("event") == "check"]
    (report,) = line["providers"]
    assert report["provider"] == devscheme.DWP
    status: str = report["status"]
    return status


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_a_bad_provider_answer_becomes_undetermined_and_is_logged_safely(
    name: str,
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    forge, reason = HOSTILE[name]
    dwp_key = SigningKey.from_pem(scheme.key_path(devscheme.DWP).read_bytes())
    hmrc_key = SigningKey.from_pem(scheme.key_path(devscheme.HMRC).read_bytes())

    async def hostile(request: web.Request) -> web.StreamResponse:
        payload = jws.decode_compact(await request.read()).payload
        return await forge(jws.orjson.loads(payload), dwp_key, hmrc_key)

    runner = await serve_in_place(providers[devscheme.DWP], hostile)
    subject = subject_of("bb-yes-dla")
    try:
        with structlog.testing.capture_logs() as events:
            answer = await blue_badge_client.check(
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=subject,
                assurance="P2",
            )
    finally:
        await runner.cleanup()
    assert answer.outcome == "undetermined"  # never the forged "yes"
    assert provider_status(events).startswith(reason)
    logged = repr(events)
    for value in subject.values():
        assert value not in logged
    assert "eyJ" not in logged


def _predicate_answer(values: Callable[[list[Any]], Any]) -> Forge:
    """A DWP answer to a banded check's request whose ``predicates`` are ``values(asked)``."""

    async def answer(request: dict[str, Any], dwp: SigningKey, other: SigningKey) -> web.Response:
        claims = claims_for(request, predicates=values(request.get("predicates", [])))
        return jwt(jws.sign(claims, dwp, jws.ATTRIBUTE_RESPONSE))

    return answer


HOSTILE_PREDICATE_ANSWERS: dict[str, Forge] = {
    "an-amount-where-a-boolean-is-due": _predicate_answer(lambda asked: [61_666 for _ in asked]),
    "a-band-where-a-boolean-is-due": _predicate_answer(
        lambda asked: ["reduction-85" for _ in asked]
    ),
    "one-predicate-short": _predicate_answer(lambda asked: [True for _ in asked][1:]),
    "no-predicates-at-all": _predicate_answer(lambda asked: None),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PREDICATE_ANSWERS))
async def test_a_provider_answering_a_predicate_with_anything_but_a_boolean_is_undetermined(
    name: str,
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
) -> None:
    dwp_key = SigningKey.from_pem(scheme.key_path(devscheme.DWP).read_bytes())
    asked: list[dict[str, Any]] = []

    async def hostile(request: web.Request) -> web.StreamResponse:
        claims = jws.orjson.loads(jws.decode_compact(await request.read()).payload)
        asked.append(claims)
        return await HOSTILE_PREDICATE_ANSWERS[name](claims, dwp_key, dwp_key)

    runner = await serve_in_place(providers[devscheme.DWP], hostile)
    subject = subject_of("fsm-yes-uc-low-earnings")
    try:
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_TAX_COVENTRY)
        ) as client:
            with structlog.testing.capture_logs() as events:
                answer = await client.check(
                    devscheme.CTR_CHECK,
                    purpose="council-tax-reduction-application",
                    subject=subject,
                    assurance="P2",
                )
    finally:
        await runner.cleanup()
    assert answer.outcome == "undetermined"  # never a band, never "yes"
    (request,) = asked
    assert {p["attribute"] for p in request["predicates"]} == {"uc-take-home-pay-below"}
    assert provider_status(events).startswith("answer-invalid")
    logged = repr(events)
    assert all(value not in logged for value in subject.values())
    assert "61666" not in logged
