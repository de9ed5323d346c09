"""The orderly stop's time budget. Every step of the app's teardown (cancel its tasks, drain
and close the consent log and the job store, write the final checkpoint) runs against one
deadline, so a store that has gone silent — a database container torn down in the same
``podman stop`` as the broker, a network that drops packets — cannot hold the process past
``shutdown_timeout_s`` until it is SIGKILLed. A step that outlasts the deadline is cancelled,
logged (``shutdown_step_timed_out``, with the step's name) and the stop reported incomplete:
``axb serve`` then exits 1, not 0, so whoever stopped it knows the last checkpoint may be
missing (the records themselves are committed before any answer leaves, as always).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import structlog

from broker.errors import ShutdownIncomplete

log = structlog.get_logger("broker.shutdown")


class Teardown:
    """One stop's budget, shared by every cleanup context that takes part in it; the clock
    starts at the first step."""

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        self._deadline: float | None = None
        self.incomplete: list[str] = []

    async def step(self, name: str, work: Awaitable[object]) -> bool:
        """Await ``work`` within what is left of the budget; ``False`` if it was abandoned.
        Its own exceptions pass through. An abandoned step is cancelled but not waited for:
        a database gone silent can hold a query's cancellation as long as the query."""
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._budget_s
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, self._deadline - loop.time()))
        if task in done:
            task.result()
            return True
        task.cancel()
        log.error("shutdown_step_timed_out", step=name, budget_s=self._budget_s)
        self.incomplete.append(name)
        return False

    def check(self) -> None:
        """Raise :class:`ShutdownIncomplete` if any step was abandoned."""
        if self.incomplete:
            raise ShutdownIncomplete(self.incomplete)
