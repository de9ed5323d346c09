"""A body split across TCP segments (as TLS, proxies and networks do) is read whole: by the
broker, by the provider kit, and by the broker's connector reading a provider's answer."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from broker.scheme import dev as devscheme
from connectors.conformance import ConformanceSession, target_from_scheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.servers import RunningBroker, RunningProvider, start_app


async def send_in_two_writes(port: int, path: str, body: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body[:100])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(body[100:])
    await writer.drain()
    status = (await reader.readline()).decode().strip()
    writer.close()
    await writer.wait_closed()
    return status


async def test_broker_reads_a_query_split_across_segments(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    token, _ = blue_badge_client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-yes-dla"),
        assurance="P2",
    )
    status = await send_in_two_writes(broker.settings.port, "/v1/checks", token.encode())
    assert status == "HTTP/1.1 200 OK"


async def test_provider_kit_reads_a_request_split_across_segments(
    scheme: devscheme.DevScheme, providers: dict[str, RunningProvider]
) -> None:
    service = providers[devscheme.DWP].service
    target = target_from_scheme(
        scheme.root,
        endpoint=f"http://127.0.0.1:{service.port}/v1/attributes",
        provider_id=devscheme.DWP,
    )
    async with aiohttp.ClientSession() as http:
        token, _ = ConformanceSession(target, http).valid()
    status = await send_in_two_writes(service.port, "/v1/attributes", token)
    assert status == "HTTP/1.1 200 OK"


async def test_connector_reads_an_answer_split_across_segments(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    providers: dict[str, RunningProvider],
    blue_badge_client: EligibilityClient,
) -> None:
    real = providers[devscheme.DWP]
    await real.stop()

    async def slow_writer(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = (await real.service.kit.answer(body)).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/jwt"})
        response.content_length = len(answer)
        await response.prepare(request)
        await response.write(answer[:100])
        await asyncio.sleep(0.05)
        await response.write(answer[100:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/attributes", slow_writer)
    runner = await start_app(app, real.service.port)  # the port the real one released
    try:
        answer = await blue_badge_client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of("bb-yes-dla"),
            assurance="P2",
        )
        assert answer.outcome == "yes"
    finally:
        await runner.cleanup()
