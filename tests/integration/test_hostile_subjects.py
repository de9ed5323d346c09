"""Requests the broker should have refused are refused by the broker: every hostile subject
shape is a 400 ``invalid-query`` after normalisation, no provider ever receives it, and so no
council can open a provider's circuit for every other council with malformed names."""

from __future__ import annotations

import time
from typing import Any

import pytest

from broker.app_keys import GUARDS
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.councils import CouncilKey
from tests.support.servers import RunningBroker, RunningProvider
from trust import jws
from trust.keys import SigningKey
from trust.messages import query_claims

DLA = subject_of("bb-yes-dla")
HOSTILE_SUBJECTS: dict[str, dict[str, str]] = {
    "family-name-spaces": {**DLA, "family_name": "     "},
    "family-name-nbsp": {**DLA, "family_name": "\u00a0\u00a0\u00a0"},
    "family-name-ideographic-space": {**DLA, "family_name": "\u3000"},
    "family-name-zero-width": {**DLA, "family_name": "\u200b\u200b"},
    "family-name-zero-width-inside": {**DLA, "family_name": "Sam\u200bpleton"},
    "family-name-bidi-override": {**DLA, "family_name": "\u202eSampleton"},
    "family-name-tab": {**DLA, "family_name": "Sample\tton"},
    "family-name-digits-only": {**DLA, "family_name": "12345"},
    "family-name-punctuation-only": {**DLA, "family_name": "-'-"},
    "family-name-101-after-collapse": {**DLA, "family_name": "A" * 101},
    "family-name-empty": {**DLA, "family_name": ""},
    "given-names-spaces": {**DLA, "given_names": "  \u00a0 "},
    "date-of-birth-iso-week": {**DLA, "date_of_birth": "1961-W26-7"},
    "date-of-birth-ordinal": {**DLA, "date_of_birth": "1961-183"},
    "date-of-birth-basic": {**DLA, "date_of_birth": "19610702"},
    "date-of-birth-with-time": {**DLA, "date_of_birth": "1961-07-02T00:00"},
    "date-of-birth-not-a-day": {**DLA, "date_of_birth": "1961-02-30"},
    "date-of-birth-arabic-indic-digits": {**DLA, "date_of_birth": "١٩٦١-٠٧-٠٢"},
}


def sign(key: SigningKey, **changes: Any) -> str:
    claims = query_claims(
        requester=devscheme.COUNCIL_BLUE_BADGE,
        broker=devscheme.BROKER,
        now=int(time.time()),
        check=devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=DLA,
        assurance="P2",
    )
    claims.update(changes)
    return jws.sign(claims, key, jws.ELIGIBILITY_QUERY)


async def test_no_hostile_subject_reaches_a_provider_or_its_circuit(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
    council_key: CouncilKey,
) -> None:
    key = council_key(devscheme.COUNCIL_BLUE_BADGE)
    answered_before = {pid: p.service.kit.answered for pid, p in providers.items()}
    for name, subject in HOSTILE_SUBJECTS.items():
        token = sign(key, subject=subject)
        with pytest.raises(CheckFailed) as refused:
            await blue_badge_client.send(token, "")
        assert refused.value.status == 400, name
        assert refused.value.problem["type"].endswith("invalid-query"), name
    for as_of in ("2026-W01-1", "2026-001", "20260101", "2026-01-01T00:00:00Z"):
        with pytest.raises(CheckFailed) as refused:
            await blue_badge_client.send(sign(key, as_of=as_of), "")
        assert refused.value.status == 400, as_of
    assert {pid: p.service.kit.answered for pid, p in providers.items()} == answered_before
    guard = broker.app[GUARDS].guard(devscheme.DWP, 32)
    assert guard.breaker.state == "closed"
    assert guard.breaker.failures == 0
    answer = await blue_badge_client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject={**DLA, "family_name": f"\u00a0 {DLA['family_name']}  "},
        assurance="P2",
    )
    assert answer.outcome == "yes", "surrounding white space is still collapsed, as before"


async def test_a_provider_refusing_well_formed_requests_never_opens_its_circuit(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    """A provider's 4xx says the broker sent something it should not have: logged as
    ``provider-refused-400``, answered ``undetermined``, and not counted against the provider
    (five used to open DWP's circuit for every council)."""
    from aiohttp import web

    from tests.support.servers import start_app

    real = providers[devscheme.DWP]
    await real.stop()

    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"type": "urn:x:invalid-request"}, status=400)

    app = web.Application()
    app.router.add_post("/v1/attributes", refuse)
    runner = await start_app(app, real.service.port)
    try:
        for _ in range(8):
            answer = await blue_badge_client.check(
                devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                subject=DLA,
                assurance="P2",
            )
            assert answer.outcome == "undetermined"
    finally:
        await runner.cleanup()
    guard = broker.app[GUARDS].guard(devscheme.DWP, 32)
    assert guard.outcomes["provider-refused-400"] == 8
    assert guard.breaker.state == "closed"
