"""End-of-job notices on a real broker, reference providers and a council's callback server on
loopback, on both log backends: a job that asks for one ends with exactly one signed
``bulk-notice+jwt`` posted to the callback the registry names, which the council's SDK verifies
and which matches the results it downloads; a failing callback is retried (never following a
redirect) with the same ``jti`` until it takes the notice, or given up, the job unaffected; a
notice survives a broker restart and is delivered by whichever process runs jobs; a manifest
cannot ask for a notice where the registry names no callback; and the council's receiver
refuses notices it cannot verify."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from broker.app_keys import METRICS
from broker.bulk.service import BULK
from broker.scheme import dev as devscheme
from members.bulk import BulkJobs, ItemsFile, NoticeReceiver
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support.bulk import strangers
from tests.support.servers import RunningBroker, StartBroker, start_app, url_of
from trust import bulk, jws
from trust.keys import SigningKey

SCHOOLS = devscheme.COUNCIL_SCHOOLS
FAST = {"poll_s": 0.05, "chunk_items": 4, "lease_s": 2, "notice_backoff_s": 0.05}


@pytest.fixture
def consent_log_overrides(each_log_backend: dict[str, object]) -> dict[str, object]:
    return each_log_backend  # every broker here runs on SQLite, then on PostgreSQL


@dataclass
class Callback:
    """The council's callback server: answers each POST as ``answers`` says, in turn (then
    with the SDK's receiver), and keeps every token it was sent."""

    answers: list[int | str] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)
    redirected: int = 0
    notices: list[bulk.BulkNotice] = field(default_factory=list)
    receiver: NoticeReceiver | None = None
    url: str = ""

    async def post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.tokens.append(body)
        answer = self.answers.pop(0) if self.answers else "receiver"
        if answer == "hang":
            await asyncio.sleep(5)
            return web.Response(status=204)
        if answer == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        if answer == "receiver":
            assert self.receiver is not None
            return await self.receiver.handle(request)  # it reads the same body again
        return web.Response(status=int(answer))

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected += 1
        return web.Response(status=204)

    def jtis(self) -> list[str]:
        return [claims_of(token)["jti"] for token in self.tokens]


def claims_of(token: bytes) -> dict[str, Any]:
    claims: dict[str, Any] = orjson.loads(jws.decode_compact(token).payload)
    return claims


@pytest.fixture
async def callback() -> AsyncIterator[Callback]:
    server = Callback()
    app = web.Application()
    app.router.add_post("/notices", server.post)
    app.router.add_post("/elsewhere", server.elsewhere)
    runner = await start_app(app)
    server.url = url_of(runner) + "/notices"
    yield server
    await runner.cleanup()


Council = Callable[..., Awaitable[tuple[RunningBroker, EligibilityClient]]]


@pytest.fixture
async def council(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: object,
    callback: Callback,
) -> AsyncIterator[Council]:
    """A broker (on a registry naming the callback, unless ``registered=False``) and the
    schools council's client, whose receiver hands each notice to ``callback.notices``."""
    clients: list[EligibilityClient] = []

    async def start(
        *, registered: bool = True, **bulk_settings: object
    ) -> tuple[RunningBroker, EligibilityClient]:
        if registered:
            devscheme.publish_registry(scheme, seq=2, callbacks={SCHOOLS: callback.url})
        broker = await start_broker(bulk={**FAST, **bulk_settings})
        client = EligibilityClient.from_config(scheme.council_config(SCHOOLS))
        await client.__aenter__()
        clients.append(client)

        async def keep(notice: bulk.BulkNotice) -> None:
            callback.notices.append(notice)

        callback.receiver = NoticeReceiver(BulkJobs(client), keep)
        return broker, client

    yield start
    for client in clients:
        await client.__aexit__(None, None, None)


async def submit(client: EligibilityClient, rows: list[dict[str, Any]], **kw: Any) -> Any:
    items = bulk.items_ndjson(rows)
    return await BulkJobs(client).submit(
        items,
        ItemsFile("ndjson", len(rows), bulk.digest_of(items)),
        check=devscheme.FSM_CHECK,
        purpose="free-school-meals-application",
        assurance="P2",
        **kw,
    )


async def notice_state(client: EligibilityClient, job_id: str, state: str) -> dict[str, Any]:
    """Poll the job's status until its notice is in ``state``."""
    for _ in range(400):
        status = await BulkJobs(client).status(job_id)
        if (status["notice"] or {}).get("state") == state:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the notice never became {state}")


async def test_a_job_that_asks_ends_with_one_signed_notice_matching_its_results(
    council: Council, callback: Callback
) -> None:
    broker, client = await council()
    jobs = BulkJobs(client)
    job = await submit(client, strangers(9), notify=True)
    quiet = await submit(client, strangers(3))  # asks for none: gets none
    status = await notice_state(client, job["id"], "delivered")
    await jobs.wait(quiet["id"], poll_s=0.05)
    await asyncio.sleep(0.3)

    assert status["notify"] is True
    assert status["notice"] == {"state": "delivered", "attempts": 1}
    assert len(callback.tokens) == 1
    [notice] = callback.notices
    signed, body = await jobs.results(job["id"], manifest_jti=job["manifest_jti"])
    assert notice.results.job == job["id"]
    assert notice.results.manifest_jti == job["manifest_jti"]
    assert notice.results.status == "completed"
    assert notice.results.sha256 == signed.sha256
    assert (notice.results.first_index, notice.results.last_index) == (
        signed.first_index,
        signed.last_index,
    )
    assert dict(notice.counts) == status["counts"]
    assert notice.reason is None
    bulk.verify_results_file(notice.results, body, "ndjson")  # the notice vouches for the file
    header = jws.decode_compact(callback.tokens[0]).header
    assert header["typ"] == "bulk-notice+jwt"
    assert (await jobs.status(quiet["id"]))["notice"] is None
    metrics = broker.app[METRICS].registry
    assert metrics.get_sample_value("axb_bulk_notices_total", {"result": "delivered"}) == 1


async def test_a_failing_callback_is_retried_with_the_same_jti_and_no_redirect_followed(
    council: Council, callback: Callback
) -> None:
    broker, client = await council()
    callback.answers = [500, "redirect", 503]
    job = await submit(client, strangers(4), notify=True)
    status = await notice_state(client, job["id"], "delivered")

    assert status["notice"]["attempts"] == 4
    assert len(callback.tokens) == 4
    assert len(set(callback.jtis())) == 1
    assert callback.jtis()[0] == bulk.notice_jti(job["id"])
    assert callback.redirected == 0  # a redirect is a failure, never followed
    assert len(callback.notices) == 1
    metrics = broker.app[METRICS].registry
    assert metrics.get_sample_value("axb_bulk_notices_total", {"result": "retrying"}) == 3


async def test_a_callback_that_never_answers_is_given_up_and_the_job_is_unaffected(
    council: Council, callback: Callback
) -> None:
    broker, client = await council(notice_attempts=3, notice_timeout_s=0.2)
    callback.answers = ["hang", "hang", "hang"]
    job = await submit(client, strangers(4), notify=True)
    status = await notice_state(client, job["id"], "gave-up")

    assert status["status"] == "completed"
    assert status["notice"] == {"state": "gave-up", "attempts": 3}
    assert callback.notices == []
    signed, _ = await BulkJobs(client).results(job["id"])  # the council can still poll
    assert signed.results == 4
    metrics = broker.app[METRICS].registry
    assert metrics.get_sample_value("axb_bulk_notices_total", {"result": "gave-up"}) == 1


async def test_a_notice_survives_a_restart_and_reaches_a_cancelled_jobs_council(
    council: Council, callback: Callback, start_broker: StartBroker
) -> None:
    """A front broker that runs no jobs takes the job; the council cancels it while queued;
    the notice waits in the log's database and the worker that runs jobs posts it."""
    front, client = await council(run_jobs=False)
    job = await submit(client, strangers(6), notify=True)
    cancelled = await BulkJobs(client).cancel(job["id"])
    assert cancelled["status"] == "cancelled"
    await asyncio.sleep(0.3)
    assert callback.tokens == []  # nobody here posts notices
    await front.stop()

    await start_broker(bulk=FAST)  # restarted as a process that runs jobs
    status = await notice_state(client, job["id"], "delivered")
    [notice] = callback.notices
    assert notice.results.status == "cancelled" == status["status"]
    assert notice.reason == "cancelled by the council"
    assert notice.results.results == 0
    assert sum(notice.counts.values()) == 0


async def test_a_notice_whose_poster_died_is_posted_by_another_once_its_lease_lapses(
    council: Council, callback: Callback, start_broker: StartBroker
) -> None:
    """A process that took the notice and died (its lease held, never released): nobody else
    posts it while the lease lasts; once it lapses, the process that runs jobs does, once."""
    front, client = await council(run_jobs=False)
    job = await submit(client, strangers(2), notify=True)
    await BulkJobs(client).cancel(job["id"])
    store = front.app[BULK].store
    taken = time.time()
    claimed = await store.claim_notice("dead-process", now_ms=int(taken * 1000), lease_ms=1500)
    assert claimed is not None
    assert claimed.job.job_id == job["id"]

    await start_broker(port=0, bulk=FAST)  # runs jobs, and posts notices
    await asyncio.sleep(0.8)
    assert callback.tokens == []  # the lease still holds
    await notice_state(client, job["id"], "delivered")
    assert time.time() - taken >= 1.5
    assert len(callback.tokens) == 1
    assert callback.notices[0].results.status == "cancelled"


async def test_a_councils_hanging_callback_delays_no_other_councils_notice(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    providers: object,
    callback: Callback,
) -> None:
    """Schools' callback hangs past the 3 s timeout; the Blue Badge team's notice, due just
    after, is delivered meanwhile (each notice has a place of its own)."""
    other = Callback()
    app = web.Application()
    app.router.add_post("/notices", other.post)
    runner = await start_app(app)
    other.url = url_of(runner) + "/notices"
    callback.answers = ["hang"]
    callbacks = {SCHOOLS: callback.url, devscheme.COUNCIL_BLUE_BADGE: other.url}
    devscheme.publish_registry(scheme, seq=2, callbacks=callbacks)
    await start_broker(bulk={**FAST, "notice_timeout_s": 3.0})
    try:
        async with (
            EligibilityClient.from_config(scheme.council_config(SCHOOLS)) as schools,
            EligibilityClient.from_config(
                scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
            ) as blue_badge,
        ):
            other.receiver = NoticeReceiver(BulkJobs(blue_badge), other_notices(other))
            job = await submit(schools, strangers(2), notify=True)
            for _ in range(100):  # its first attempt is hanging
                if callback.tokens:
                    break
                await asyncio.sleep(0.02)
            assert callback.tokens
            items = bulk.items_ndjson(strangers(2))
            mine = await BulkJobs(blue_badge).submit(
                items,
                ItemsFile("ndjson", 2, bulk.digest_of(items)),
                check=devscheme.BLUE_BADGE_CHECK,
                purpose="blue-badge-application",
                assurance="P2",
                notify=True,
            )
            started = time.monotonic()
            await notice_state(blue_badge, mine["id"], "delivered")
            assert time.monotonic() - started < 2.5  # not behind the hanging 3 s attempt
            schools_now = await BulkJobs(schools).status(job["id"])
            assert schools_now["notice"] == {"state": "pending", "attempts": 0}
            assert [n.results.job for n in other.notices] == [mine["id"]]
    finally:
        await runner.cleanup()


def other_notices(server: Callback) -> Callable[[bulk.BulkNotice], Awaitable[None]]:
    async def keep(notice: bulk.BulkNotice) -> None:
        server.notices.append(notice)

    return keep


async def test_a_notice_needs_a_callback_the_registry_names(
    council: Council, callback: Callback
) -> None:
    broker, client = await council(registered=False)
    with pytest.raises(CheckFailed) as refused:
        await submit(client, strangers(3), notify=True)
    assert refused.value.status == 422
    assert refused.value.problem["type"].endswith(":bulk-callback-missing")
    assert await broker.app[BULK].store.jobs_of(SCHOOLS) == []  # nothing was started
    assert callback.tokens == []


async def test_the_councils_receiver_refuses_notices_it_cannot_verify(
    scheme: devscheme.DevScheme, council: Council, callback: Callback
) -> None:
    """Posted straight to the council's receiver: a notice signed by a council's key, one for
    another council, a results manifest in its place, and a replay of a good notice."""
    _broker, client = await council()
    job = await submit(client, strangers(3), notify=True)
    await notice_state(client, job["id"], "delivered")
    [good] = callback.tokens

    broker_key = SigningKey.from_pem(scheme.key_path(devscheme.BROKER).read_bytes())
    council_key = SigningKey.from_pem(scheme.key_path(SCHOOLS).read_bytes())
    claims = claims_of(good)
    notice_typ = bulk.BULK_NOTICE
    forged = [
        jws.sign(claims, council_key, bulk.BULK_NOTICE),  # not the broker's key
        jws.sign({**claims, "aud": devscheme.COUNCIL_BLUE_BADGE}, broker_key, bulk.BULK_NOTICE),
        jws.sign(claims, broker_key, bulk.BULK_RESULTS),  # another typ
        jws.sign({**claims, "jti": "x" * 22 + ".notice"}, broker_key, bulk.BULK_NOTICE),
        jws.sign({**claims, "counts": {**claims["counts"], "yes": 9}}, broker_key, notice_typ),
    ]
    async with aiohttp.ClientSession() as session:
        for token in forged:
            async with session.post(
                callback.url, data=token, headers={"Content-Type": "application/jwt"}
            ) as response:
                assert response.status == 400
        async with session.post(
            callback.url, data=good, headers={"Content-Type": "application/jwt"}
        ) as response:
            assert response.status == 204  # a repeat: taken, not handed on again
        async with session.post(callback.url, data=good) as response:
            assert response.status == 415
    assert len(callback.notices) == 1
