"""Each broker process's bulk worker: claim a job by lease, check its items chunk by chunk.

A chunk's items run concurrently, each through ``broker.pipeline.RecordedStep`` exactly as a
single check does (one policy decision for the whole job; each provider sees only its declared
fields; concurrent items' calls to a provider that takes batches travel as signed batches
through the coalescer). Each item's consent record is appended as it is answered (the chunk's
appends share group commits); only once the records are durable are the items marked done, so
no result is readable without its record. If the log cannot commit, the job pauses (its lease
given up until a retry time) and ends ``failed`` after repeated failures; a process that takes
a job over first reconciles it with the records already in the log (see
:mod:`broker.stores.consent_log.jobs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from broker.errors import LogUnavailable
from broker.pipeline import Recorded, RecordedStep
from broker.settings import Settings
from broker.stores.consent_log import ConsentLog
from broker.stores.consent_log.jobs import Job, JobStore, LeaseLost, PendingItem
from connectors.registry_source import RegistrySource
from trust import bulk, policy
from trust.errors import PolicyRefusal, RegistryError
from trust.messages import ConsentReference, EligibilityQuery, Subject
from trust.policy import PlannedCall

log = structlog.get_logger("broker.bulk")
T = TypeVar("T")
MAX_PAUSES = 8  # consecutive log failures before a job ends failed
RESULTS_PAGE = 5000


class BulkRunner:
    def __init__(
        self,
        *,
        store: JobStore,
        settings: Settings,
        registry: RegistrySource,
        consent_log: ConsentLog,
        step: RecordedStep,
        clock: Callable[[], float],
        on_ended: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._on_ended = on_ended  # a job ended here (its notice may be due)
        self._settings = settings
        self._registry = registry
        self._log = consent_log
        self._step = step
        self._clock = clock
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self._wake = asyncio.Event()
        self._lease_ms = int(settings.bulk_lease_s * 1000)
        self._pruned_at = 0.0

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def wake(self) -> None:
        """A job was queued here: look for work now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self) -> None:
        async def claim() -> Job | None:
            await self._housekeeping()
            return await self._store.claim(
                self.owner, now_ms=self._now_ms(), lease_ms=self._lease_ms
            )

        await claim_loop(
            claim, self.run_job, self._wake, self._settings.bulk_poll_s, "bulk_claim_failed"
        )

    async def _housekeeping(self) -> None:
        """Forget intakes that died; delete results past retention (at most once a minute)."""
        if time.monotonic() - self._pruned_at < 60:
            return
        self._pruned_at = time.monotonic()
        now_ms = self._now_ms()
        await self._store.sweep_receiving(now_ms=now_ms)
        retention_ms = self._settings.bulk_retention_days * 86_400_000
        pruned = await self._store.prune(finished_before_ms=now_ms - retention_ms)
        if pruned:
            log.info("bulk_results_pruned", jobs=pruned)

    async def run_job(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job=job.job_id, requester=job.requester)
        try:
            await self._run(job)
        except LeaseLost:
            log.warning("bulk_lease_lost")
        except (LogUnavailable, RegistryError) as exc:  # the job waits for the log or registry
            await self._pause(job, type(exc).__name__)
        except Exception:  # a bug must not leave the job running for ever
            log.exception("bulk_job_error")
            with contextlib.suppress(Exception):
                await self._end(job, "failed", "internal error")
        finally:
            structlog.contextvars.unbind_contextvars("job", "requester")

    async def _pause(self, job: Job, error: str) -> None:
        log.warning("bulk_job_paused", error=error)
        try:
            failures = await self._store.pause(
                job.job_id,
                self.owner,
                reason=f"paused: {error}",
                retry_at_ms=self._now_ms() + min(30_000, 500 * 2**job.failures),
            )
            if failures >= MAX_PAUSES:
                await self._end(job, "failed", "the consent log could not commit")
        except LogUnavailable:  # the lease runs out and another attempt reclaims the job
            pass

    async def _run(self, job: Job) -> None:
        manifest = bulk.manifest_from_json(job.manifest)
        recorded = await self._store.recorded(job)
        if recorded:  # records committed before the previous owner stopped: mark, not recheck
            job = await self._complete(job, recorded)
            log.info("bulk_job_reconciled", records=len(recorded))
        try:
            shared = bulk.decide_job(self._registry.current(), manifest, now=int(self._clock()))
        except PolicyRefusal as refusal:
            await self._end(job, "failed", f"refused: {refusal.code}")
            return
        withdrawn: dict[str, bool] = {}
        while True:
            if job.cancel_requested:
                await self._end(job, "cancelled", "cancelled by the council")
                return
            items = await self._store.pending(job.job_id, self._settings.bulk_chunk_items)
            if not items:
                await self._end(job, "completed", None)
                return
            done = await self._chunk(job, manifest, shared, items, withdrawn)
            job = await self._complete(job, done)

    async def _complete(self, job: Job, done: list[tuple[int, str, int]]) -> Job:
        now_ms = self._now_ms()
        return await self._store.complete(
            job.job_id, self.owner, done, now_ms=now_ms, lease_until_ms=now_ms + self._lease_ms
        )

    async def _chunk(
        self,
        job: Job,
        manifest: bulk.BulkManifest,
        shared: bulk.JobDecision,
        items: list[PendingItem],
        withdrawn: dict[str, bool],
    ) -> list[tuple[int, str, int]]:
        queries = [
            bulk.job_query(
                manifest,
                jti=bulk.item_jti(job.job_id, item.seq),
                subject=Subject(item.subject),
                consent=None if item.consent is None else ConsentReference(**item.consent),
            )
            for item in items
        ]
        for consent_id in {q.consent.id for q in queries if q.consent is not None}:
            if consent_id not in withdrawn:
                withdrawn[consent_id] = await self._log.is_withdrawn(job.requester, consent_id)
        slots = asyncio.Semaphore(
            items_in_flight(self._settings.bulk_items_in_flight, shared.decision.calls)
        )

        async def check(query: EligibilityQuery) -> Recorded:
            async with slots:  # a bounded burst: requests to the broker keep their turn
                if query.consent is not None and withdrawn.get(query.consent.id):
                    return await self._step.refused(query, policy.CONSENT_WITHDRAWN)
                return await self._step.asked(shared.decision, query)

        done = await asyncio.gather(*(check(q) for q in queries))
        return [
            (item.seq, d.record.outcome, d.appended.index)
            for item, d in zip(items, done, strict=True)
        ]

    async def _end(self, job: Job, status: str, reason: str | None) -> None:
        """The job's terminal state, with the digests of its results files."""
        digests = await results_digests(self._store, job.job_id)
        ended = await self._store.finish(
            job.job_id,
            self.owner,
            status,
            reason=reason,
            sha256=digests.digests(),
            now_ms=self._now_ms(),
        )
        if ended is not None:
            self._on_ended()
            log.info(
                "bulk_job_ended",
                status=ended.status,
                reason=reason,
                rows=ended.done_rows,
                records=ended.done_subjects,
            )


async def claim_loop(
    claim: Callable[[], Awaitable[T | None]],
    work: Callable[[T], Awaitable[None]],
    wake: asyncio.Event,
    poll_s: float,
    failed_event: str,
) -> None:
    """Claim and work until cancelled: at once again while there is work, else at the next
    poll or ``wake``. A store that cannot answer is logged as ``failed_event`` and tried at the
    next poll (what was claimed stays leased, and its lease lapses for another to take)."""
    while True:
        try:
            claimed = await claim()
        except LogUnavailable as exc:
            log.warning(failed_event, error=str(exc))
            claimed = None
        if claimed is not None:
            await work(claimed)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=poll_s)
        wake.clear()


def items_in_flight(setting: int, calls: Sequence[PlannedCall]) -> int:
    """How many of a chunk's items may be in their fan-out at once: the setting, but never more
    than every provider of the job can take at once — ``max_batch`` calls per batch times its
    ``max_concurrency`` batches — so that no item spends its check deadline queued for a
    provider (a provider without batches takes ``max_concurrency`` items)."""
    return min(setting, *(c.max_batch * c.max_concurrency for c in calls)) if calls else setting


def job_results(job: Job, *, broker: str, jti: str) -> bulk.BulkResults:
    """An ended job's signed statement (the results manifest's claims, and the notice's)."""
    return bulk.BulkResults(
        broker=broker,
        requester=job.requester,
        jti=jti,
        job=job.job_id,
        manifest_jti=job.manifest_jti,
        status=job.status,
        items=job.items,
        results=job.done_rows,
        records=job.done_subjects,
        sha256=job.sha256 or {},
        first_index=job.first_index,
        last_index=job.last_index,
    )


async def results_digests(store: JobStore, job_id: str) -> bulk.ResultsDigests:
    """The digests of the job's results files as they stand, computed page by page."""
    digests = bulk.ResultsDigests()
    after = 0
    while page := await store.results(job_id, after=after, limit=RESULTS_PAGE):
        for row, ref, outcome in page:
            digests.add(ref, outcome)
            after = row
    return digests
