"""Load shedding in a live broker: beyond its places and their wait, a check is refused at
once with 503 ``overloaded`` and ``Retry-After``, before anything is verified or recorded; a
check whose client left before it got a place is dropped without a record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog
from aiohttp import web

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.logdb import log_sql
from tests.support.servers import RunningBroker, RunningProvider, StartBroker, start_app
from trust.jws import JWT_MEDIA_TYPE

BB, PURPOSE = devscheme.BLUE_BADGE_CHECK, "blue-badge-application"


@pytest.fixture
async def slow_dwp(providers: dict[str, RunningProvider]) -> AsyncIterator[None]:
    """DWP answering every request in 1 s: each check holds its place that long."""
    real = providers[devscheme.DWP]
    await real.stop()

    async def slow(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(1.0)
        return web.Response(text=await real.service.kit.answer(body), content_type=JWT_MEDIA_TYPE)

    app = web.Application()
    app.router.add_post("/v1/attributes", slow)
    runner = await start_app(app, real.service.port)
    yield
    await runner.cleanup()


async def records(broker: RunningBroker) -> int:
    [(count,)] = await log_sql(broker.settings, "SELECT COUNT(*) FROM records")
    return int(count)


async def timed_check(client: EligibilityClient) -> tuple[str | int, float, str | None]:
    started = time.perf_counter()
    try:
        answer = await client.check(
            BB, purpose=PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
        return answer.outcome, time.perf_counter() - started, None
    except CheckFailed as failed:
        kind = str(failed.problem.get("type", "")).rsplit(":", 1)[-1]
        return failed.status, time.perf_counter() - started, kind


async def test_beyond_its_places_the_broker_refuses_at_once_and_records_nothing(
    scheme: devscheme.DevScheme, start_broker: StartBroker, slow_dwp: None
) -> None:
    broker = await start_broker(max_checks_in_flight=2, max_check_wait_ms=50)
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as client:
        results = await asyncio.gather(*(timed_check(client) for _ in range(12)))
        answered = [r for r in results if r[0] == "yes"]
        refused = [r for r in results if r[0] == 503]
        assert len(answered) == 2, results
        assert len(refused) == 10, results
        assert {kind for _, _, kind in refused} == {"overloaded"}
        assert max(seconds for _, seconds, _ in refused) < 0.5, "refusals are fast"
        token, _ = client.sign_query(
            BB, purpose=PURPOSE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
        async with aiohttp.ClientSession() as session:
            holders = [asyncio.create_task(timed_check(client)) for _ in range(4)]
            await asyncio.sleep(0.2)
            async with session.post(
                broker.url + "/v1/checks", data=token, headers={"Content-Type": JWT_MEDIA_TYPE}
            ) as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
            await asyncio.gather(*holders)
    assert await records(broker) == 2 + 2  # only the answered checks


async def test_a_check_whose_client_left_before_it_got_a_place_leaves_no_record(
    scheme: devscheme.DevScheme, start_broker: StartBroker, slow_dwp: None
) -> None:
    broker = await start_broker(max_checks_in_flight=1, max_check_wait_ms=5000)
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    with structlog.testing.capture_logs() as events:
        async with EligibilityClient.from_config(config) as client:
            holder = asyncio.create_task(timed_check(client))
            await asyncio.sleep(0.2)  # the holder has the one place, for a second
            token, _ = client.sign_query(
                BB, purpose=PURPOSE, subject=subject_of("bb-no"), assurance="P2"
            )
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as gone:
                with pytest.raises(TimeoutError):  # the client gives up and goes
                    await gone.post(
                        broker.url + "/v1/checks",
                        data=token,
                        headers={"Content-Type": JWT_MEDIA_TYPE},
                    )
            assert (await holder)[0] == "yes"
            await asyncio.sleep(0.5)  # the waiting check got the place and found nobody there
    assert await records(broker) == 1
    lines = [e for e in events if e.get("event") == "check"]
    assert [line["problem"] for line in lines] == [None, "client-gone"]
    assert not [e for e in events if e.get("event") == "unhandled_error"]


async def test_refusals_are_summed_up_in_one_log_line_a_second_not_a_line_each(
    scheme: devscheme.DevScheme, start_broker: StartBroker, slow_dwp: None
) -> None:
    await start_broker(max_checks_in_flight=1, max_check_wait_ms=20)
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    with structlog.testing.capture_logs() as events:
        async with EligibilityClient.from_config(config) as client:
            results = await asyncio.gather(*(timed_check(client) for _ in range(6)))
            await asyncio.sleep(1.3)  # the shedder's next summary
    assert sorted(str(r[0]) for r in results) == ["503"] * 5 + ["yes"]
    checks = [e for e in events if e.get("event") == "check"]
    assert [e["problem"] for e in checks] == [None]  # the answered one; refusals have no line
    summaries = [e for e in events if e.get("event") == "load_shed"]
    assert sum(e["refused"] for e in summaries) == 5
    assert all(set(e) >= {"in_flight", "waiting", "loop_lag_ms"} for e in summaries)
