"""Provider resilience in a live broker: circuit breaker, scheduled outages, /v1/providers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from broker.app_keys import GUARDS, REGISTRY
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.councils import blue_badge
from tests.support.servers import RunningBroker, RunningProvider, start_app
from trust.keys import SigningKey
from trust.registry import sign_registry


async def providers_status(broker: RunningBroker) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{broker.url}/v1/providers") as response,
    ):
        assert response.status == 200
        body = await response.json()
    return {p["id"]: p for p in body["providers"]}


async def test_circuit_opens_on_a_failing_provider_then_recovers(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    assert await blue_badge(blue_badge_client) == "yes"
    status = await providers_status(broker)
    assert status[devscheme.DWP]["latency_ms"]["samples"] == 1
    await providers[devscheme.DWP].stop()
    for _ in range(5):  # threshold: five consecutive failures
        assert await blue_badge(blue_badge_client) == "undetermined"
    status = await providers_status(broker)
    assert status[devscheme.DWP]["circuit"]["state"] == "open"
    assert status[devscheme.DWP]["availability"] == "unavailable"
    calls_before = status[devscheme.DWP]["calls"].get("provider-unreachable", 0)
    assert await blue_badge(blue_badge_client) == "undetermined"  # refused fast, not called
    status = await providers_status(broker)
    assert status[devscheme.DWP]["calls"].get("provider-unreachable", 0) == calls_before

    # The provider comes back; after the reset window one probe closes the circuit.
    service = providers[devscheme.DWP].service
    providers[devscheme.DWP].runner = await start_app(service.app, service.port)
    guard = broker.app[GUARDS].guard(devscheme.DWP, 32)
    guard.breaker.opened_at -= guard.breaker.reset_after_s  # as if the window had passed
    assert await blue_badge(blue_badge_client) == "yes"
    status = await providers_status(broker)
    assert status[devscheme.DWP]["circuit"]["state"] == "closed"


async def test_scheduled_outage_in_the_registry_is_not_called_and_is_shown(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    keys = {m: SigningKey.from_pem(scheme.key_path(m).read_bytes()) for m in devscheme.MEMBERS}
    members = devscheme.registry_members(keys, scheme.provider_ports, suspended=())
    now = datetime.now(UTC)
    for member in members:
        if member["id"] == devscheme.DWP:
            member["provider"]["outages"] = [
                {
                    "from": (now - timedelta(minutes=5)).isoformat(),
                    "to": (now + timedelta(hours=1)).isoformat(),
                    "reason": "database upgrade",
                }
            ]
    token = sign_registry(
        members=members,
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=2,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=SigningKey.from_pem(scheme.operator_key_path.read_bytes()),
        now=int(now.timestamp()),
    )
    scheme.registry_path.write_text(token + "\n")
    assert broker.app[REGISTRY].reload()
    assert await blue_badge(blue_badge_client) == "undetermined"
    status = await providers_status(broker)
    dwp = status[devscheme.DWP]
    assert dwp["availability"] == "scheduled-outage"
    assert dwp["outages"][0]["reason"] == "database upgrade"
    assert dwp["latency_ms"]["samples"] == 0, "the provider was never called"
    assert json.dumps(status)  # serialisable, nothing exotic


async def test_a_cancelled_probe_does_not_leave_the_circuit_half_open_for_good(
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
    schools_client: EligibilityClient,
) -> None:
    """DWP's circuit opens; after the window, its probe belongs to a free school meals check
    that HMRC answers yes first, so the probe is cancelled. The next check must probe again
    (before the fix every later Blue Badge check was undetermined until a restart)."""
    service = providers[devscheme.DWP].service
    await providers[devscheme.DWP].stop()
    for _ in range(5):
        assert await blue_badge(blue_badge_client) == "undetermined"
    guard = broker.app[GUARDS].guard(devscheme.DWP, 32)
    assert guard.breaker.state == "open"

    hung: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # accepts the request and never answers

    hanging = await asyncio.start_server(hang, service.host, service.port)
    try:
        guard.breaker.opened_at -= guard.breaker.reset_after_s
        answer = await schools_client.check(
            devscheme.FSM_CHECK,
            purpose="free-school-meals-application",
            subject=subject_of("hmrc-ctc-yes"),
            assurance="P2",
        )
        assert answer.outcome == "yes"  # HMRC's yes decided it; DWP's probe was cancelled
        assert guard.breaker.probe_in_flight is False
    finally:
        hanging.close()
        for writer in hung:
            writer.close()
        await hanging.wait_closed()
    providers[devscheme.DWP].runner = await start_app(service.app, service.port)
    assert await blue_badge(blue_badge_client) == "yes"
    assert guard.breaker.state == "closed"
