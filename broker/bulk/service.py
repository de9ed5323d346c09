"""What the app holds for bulk jobs, and how it is installed: the job store beside the consent
log, this process's runner and its notifier (end-of-job notices), started and stopped in a
cleanup context of their own (after the consent log starts, before it drains)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from broker.app_keys import CLOCK, METRICS, REGISTRY, SETTINGS, STEP, STORES, TEARDOWN
from broker.bulk.notices import BulkNotifier
from broker.bulk.runner import BulkRunner
from broker.stores.consent_log.jobs import JobStore, open_job_store


@dataclass(frozen=True, slots=True)
class BulkService:
    store: JobStore
    runner: BulkRunner
    notifier: BulkNotifier


BULK = web.AppKey("bulk", BulkService)


def install(app: web.Application) -> None:
    """Give ``app`` bulk jobs: call after the app's own resources are in its cleanup contexts."""
    settings = app[SETTINGS]
    store = open_job_store(settings.consent_log)
    notifier = BulkNotifier(
        store=store,
        settings=settings,
        registry=app[REGISTRY],
        metrics=app[METRICS],
        clock=app[CLOCK],
    )
    runner = BulkRunner(
        store=store,
        settings=settings,
        registry=app[REGISTRY],
        consent_log=app[STORES].consent_log,
        step=app[STEP],
        clock=app[CLOCK],
        on_ended=notifier.wake,
    )
    app[BULK] = BulkService(store, runner, notifier)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await store.start()
        # run_jobs = false: this process takes jobs and answers about them, and other broker
        # processes on the same log (a worker that receives no traffic) run them
        tasks = (
            [
                asyncio.create_task(runner.run_forever(), name="bulk-runner"),
                asyncio.create_task(notifier.run_forever(), name="bulk-notifier"),
            ]
            if settings.bulk_run_jobs
            else []
        )
        yield
        stop = app[TEARDOWN]
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop.step(task.get_name(), task)
        await stop.step("job-store-close", store.close())

    app.cleanup_ctx.append(resources)
