"""End-of-job notices: the broker's signed ``bulk-notice+jwt`` (:mod:`trust.bulk`), posted to
the council's callback once a job that asked for one (``notify`` in its manifest) has ended.

The address is the registry's ``bulk_callback`` for the council when the notice is posted:
the scheme operator names it, never a manifest or a job, so the broker cannot be pointed at an
address of a caller's choosing. The body is the token alone (``application/jwt``): the
results manifest's statement (job, status, results digests, log index range) with the counts
per outcome and why a job failed or was cancelled, signed with the broker's key for the
council's audience.

At least once, never lost: the notice is written in the transaction that ends the job, then
posted by one process at a time (under a lease); a process posts up to ``NOTICES_AT_ONCE`` at
once, so one council's callback that hangs delays no other council's notice. A 2xx answer
delivers it; anything else (a redirect, which is never followed, an error status, a timeout, a
refused connection, no callback registered any more) is retried after
``[bulk] notice_backoff_s``, doubling up to an hour, until ``notice_attempts`` attempts; then
it is given up (the job's status still says everything). Every attempt carries the same
``jti``, so a receiver ignores a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import aiohttp
import structlog

from broker.bulk.runner import claim_loop, job_results
from broker.errors import LogUnavailable
from broker.metrics import Metrics
from broker.settings import Settings
from broker.stores.consent_log.jobs import JobStore, Notice
from connectors.registry_source import RegistrySource
from trust import bulk, jws
from trust.errors import RegistryError
from trust.jws import JWT_MEDIA_TYPE

log = structlog.get_logger("broker.bulk")
MAX_BACKOFF_S = 3600.0
NOTICES_AT_ONCE = 8


def backoff_s(first_s: float, attempts: int) -> float:
    """The wait before attempt ``attempts + 1``: ``first_s``, doubling, at most an hour."""
    return min(MAX_BACKOFF_S, first_s * float(1 << max(0, attempts - 1)))


class BulkNotifier:
    def __init__(
        self,
        *,
        store: JobStore,
        settings: Settings,
        registry: RegistrySource,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self._clock = clock
        self.owner = uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()
        # long enough for one POST and its bookkeeping; a process that dies frees it then
        self._lease_ms = int((settings.bulk_notice_timeout_s + 5) * 1000)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def wake(self) -> None:
        """A job ended here: post its notice now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Post due notices, up to ``NOTICES_AT_ONCE`` at a time: a council whose callback
        hangs holds one place for its timeout, never the others' notices."""
        timeout = aiohttp.ClientTimeout(total=self._settings.bulk_notice_timeout_s)
        connector = aiohttp.TCPConnector(limit=NOTICES_AT_ONCE)
        places = asyncio.Semaphore(NOTICES_AT_ONCE)
        posting: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def claim() -> Notice | None:
                await places.acquire()  # a place first: claim only what can be posted now
                try:
                    notice = await self._store.claim_notice(
                        self.owner, now_ms=self._now_ms(), lease_ms=self._lease_ms
                    )
                except BaseException:
                    places.release()
                    raise
                if notice is None:
                    places.release()
                return notice

            async def post(notice: Notice) -> None:
                try:
                    with contextlib.suppress(LogUnavailable):  # the lease lapses: tried again
                        await self.deliver(session, notice)
                finally:
                    places.release()

            async def start_post(notice: Notice) -> None:
                task = asyncio.create_task(post(notice), name="bulk-notice")
                posting.add(task)
                task.add_done_callback(posting.discard)

            try:
                await claim_loop(
                    claim,
                    start_post,
                    self._wake,
                    self._settings.bulk_poll_s,
                    "bulk_notice_claim_failed",
                )
            finally:  # stopping: posts in flight are abandoned, their leases lapse
                for task in list(posting):
                    task.cancel()
                await asyncio.gather(*posting, return_exceptions=True)

    async def deliver(self, session: aiohttp.ClientSession, notice: Notice) -> None:
        """One attempt at ``notice``, and its outcome recorded."""
        job = notice.job
        error = await self._post(session, notice)
        attempts = notice.attempts + 1
        now_ms = self._now_ms()
        retry_at_ms = None
        if error is not None and attempts < self._settings.bulk_notice_attempts:
            retry_at_ms = now_ms + int(
                backoff_s(self._settings.bulk_notice_backoff_s, attempts) * 1000
            )
        await self._store.notice_tried(
            job.job_id, self.owner, now_ms=now_ms, error=error, retry_at_ms=retry_at_ms
        )
        result = "delivered" if error is None else "retrying" if retry_at_ms else "gave-up"
        self._metrics.bulk_notices.labels(result).inc()
        event = {"delivered": log.info, "retrying": log.warning, "gave-up": log.error}[result]
        event(
            f"bulk_notice_{result.replace('-', '_')}",
            job=job.job_id,
            requester=job.requester,
            status=job.status,
            attempt=attempts,
            error=error,
        )

    async def _post(self, session: aiohttp.ClientSession, notice: Notice) -> str | None:
        """Post the notice once; ``None`` if the callback took it, else why not (a status or an
        exception's name: nothing the callback sent is kept)."""
        job = notice.job
        try:
            member = self._registry.current().members.get(job.requester)
        except RegistryError:
            return "registry-unavailable"
        url = None if member is None else member.bulk_callback
        if url is None:
            return "no-callback"
        settings = self._settings
        signed = bulk.BulkNotice(
            results=job_results(job, broker=settings.broker_id, jti=bulk.notice_jti(job.job_id)),
            counts=job.counts,
            reason=job.reason,
        )
        token = jws.sign(
            bulk.notice_claims(signed, now=int(self._clock())),
            settings.signing_key,
            bulk.BULK_NOTICE,
        )
        try:
            async with session.post(
                url,
                data=token.encode("ascii"),
                headers={"Content-Type": JWT_MEDIA_TYPE},
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"http-{response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__
