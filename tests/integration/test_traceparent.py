"""A council's ``traceparent`` reaches the providers its check asks: the same trace id, a
parent id of the broker's own call; the check's log line carries the trace id. A malformed
one changes nothing but is not passed on."""

from __future__ import annotations

import structlog
from aiohttp import web
from structlog.testing import capture_logs

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.servers import RunningBroker, RunningProvider, start_app

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def test_traceparent_is_passed_to_the_providers_and_logged(
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    broker: RunningBroker,
) -> None:
    real = providers[devscheme.DWP]
    await real.stop()
    seen: list[str | None] = []

    async def recording(request: web.Request) -> web.Response:  # DWP, noting the header
        seen.append(request.headers.get("traceparent"))
        body = await request.read()
        return web.Response(
            text=await real.service.kit.answer(body), content_type="application/jwt"
        )

    app = web.Application()
    app.router.add_post("/v1/attributes", recording)
    dwp = await start_app(app, real.service.port)
    try:
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client:
            for header in (PARENT, "00-not-a-trace-01"):
                token, jti = client.sign_query(
                    devscheme.BLUE_BADGE_CHECK,
                    purpose="blue-badge-application",
                    subject=subject_of("bb-yes-dla"),
                    assurance="P2",
                )
                with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
                    async with client.session.post(
                        f"{broker.url}/v1/checks",
                        data=token,
                        headers={
                            "Content-Type": "application/jwt",
                            "Accept": "application/jwt",
                            "traceparent": header,
                        },
                    ) as response:
                        assert response.status == 200
                        answer = await client.verify_answer(await response.read(), jti)
                assert answer.outcome == "yes"
                (line,) = [e for e in events if e["event"] == "check"]
                assert line.get("trace_id") == (TRACE if header == PARENT else None)
    finally:
        await dwp.cleanup()
    assert len(seen) == 2
    first, second = seen
    assert first is not None
    assert first.startswith(f"00-{TRACE}-")
    assert first != PARENT, "the provider's parent is the broker's call, not the council's"
    assert first.endswith("-01")
    assert second is None
