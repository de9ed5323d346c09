"""JWKS, health, readiness, OpenAPI and hot registry replacement on a live broker."""

from __future__ import annotations

import aiohttp
import pytest
from openapi_spec_validator import validate

from broker.app_keys import REGISTRY
from broker.problems import PROBLEM_TYPES
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.servers import RunningBroker
from trust.keys import load_jwks


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def test_jwks_publishes_the_broker_key_by_thumbprint(broker: RunningBroker) -> None:
    status, document = await get_json(f"{broker.url}/.well-known/jwks.json")
    assert status == 200
    keys = load_jwks(document)
    assert broker.settings.signing_key.kid in {k.kid for k in keys}


async def test_health_and_readiness(broker: RunningBroker) -> None:
    assert (await get_json(f"{broker.url}/healthz"))[0] == 200
    status, body = await get_json(f"{broker.url}/readyz")
    assert status == 200
    assert body["status"] == "ready"


async def test_openapi_is_valid_3_1_and_covers_every_route_and_problem(
    broker: RunningBroker,
) -> None:
    status, document = await get_json(f"{broker.url}/openapi.json")
    assert status == 200
    validate(document)
    assert document["openapi"] == "3.1.0"
    routes = {r.resource.canonical for r in broker.app.router.routes() if r.resource}
    # the resident page's HTML (broker.resident.page) is for people, not an API operation
    pages = {route for route in routes if route.startswith("/resident")}
    assert pages == {
        "/resident",
        "/resident/sign-in",
        "/resident/callback",
        "/resident/checks",
        "/resident/sign-out",
        "/resident/assets/{name}",
    }
    assert routes - pages <= set(document["paths"])  # type: ignore[arg-type]
    problem_types = document["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]  # type: ignore[index]
    assert {t.rsplit(":", 1)[1] for t in problem_types} == set(PROBLEM_TYPES)


async def test_unknown_path_is_a_problem_document(broker: RunningBroker) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{broker.url}/nope") as response:
        assert response.status == 404
        assert response.content_type == "application/problem+json"


async def test_suspension_takes_effect_at_the_next_query_without_restart(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    subject = subject_of("bb-yes-dla")
    answer = await blue_badge_client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject,
        assurance="P2",
    )
    assert answer.outcome == "yes"
    devscheme.publish_registry(scheme, seq=2, suspended=[devscheme.COUNCIL_BLUE_BADGE])
    assert broker.app[REGISTRY].reload()
    with pytest.raises(CheckFailed) as refused:
        await blue_badge_client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject,
            assurance="P2",
        )
    assert refused.value.problem["type"] == "urn:ax-broker:problem:member-suspended"
    devscheme.publish_registry(scheme, seq=3)
    assert broker.app[REGISTRY].reload()
    again = await blue_badge_client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject,
        assurance="P2",
    )
    assert again.outcome == "yes"


async def test_registry_file_watch_picks_up_a_new_registry(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    import asyncio

    devscheme.publish_registry(scheme, seq=7)
    for _ in range(60):
        if broker.app[REGISTRY].snapshot.seq == 7:
            break
        await asyncio.sleep(0.1)
    assert broker.app[REGISTRY].snapshot.seq == 7
