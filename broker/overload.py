"""Load shedding for the broker as a whole: a bound on checks in flight, and on how long a
check may wait for one of those places before its work starts.

A third bound catches what the first two cannot see: when the process's CPU is saturated,
requests queue in the event loop before any handler runs, so the broker also measures its own
event-loop lag (how late a 10 ms timer fires) and, while it has exceeded ``max_loop_lag_s``
on five ticks in a row, refuses new checks too. One long callback (a burst of start-up work)
is late once and then on time again: it sheds nothing.

Beyond any bound a check is refused at once — 503 ``overloaded`` with ``Retry-After`` —
before its signature is verified and before anything is recorded, so a broker at three times
its sustainable rate answers what it can at the speed it can, and refuses the rest in
milliseconds instead of queueing everyone into a timeout. Refusals are counted in the
metrics and summed up in one log line a second while they last, not a line each: under three
times its load a broker would otherwise spend a tenth of its core writing about the checks
it did not do. A check whose client has gone by the time it gets a place is dropped, also
without a record: nobody is waiting for its answer. Once a check has its place it runs to
the end, and its outcome stays recorded even if its client leaves meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from broker.errors import ClientGone, Overloaded

log = structlog.get_logger("broker.overload")


class LoadShedder:
    def __init__(
        self,
        *,
        max_in_flight: int,
        max_wait_s: float,
        max_loop_lag_s: float = 0.05,
        retry_after_s: int = 1,
    ) -> None:
        self._places = asyncio.Semaphore(max_in_flight)
        self._max_loop_lag_s = max_loop_lag_s
        self.loop_lag_s = 0.0
        self._late_ticks = 0  # consecutive ticks later than max_loop_lag_s
        self._max_in_flight = max_in_flight
        self._max_waiting = max_in_flight  # a queue as long as the work in hand, no longer
        self._max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.waiting = 0
        self.in_flight = 0
        self.shed = 0

    SATURATED_TICKS = 5

    @property
    def saturated(self) -> bool:
        return self._late_ticks >= self.SATURATED_TICKS

    @property
    def refusing(self) -> bool:
        """Whether a check arriving now would be refused without waiting."""
        return (self._places.locked() and self.waiting >= self._max_waiting) or self.saturated

    async def watch_loop(self, tick_s: float = 0.01) -> None:
        """Measure how late a timer fires, for ever (run it as a task). A saturated loop is
        late tick after tick and sheds within a few of them; one slow callback does not."""
        loop = asyncio.get_running_loop()
        reported_shed, reported_at = self.shed, loop.time()
        while True:
            before = loop.time()
            await asyncio.sleep(tick_s)
            self.loop_lag_s = max(0.0, loop.time() - before - tick_s)
            late = self.loop_lag_s > self._max_loop_lag_s
            self._late_ticks = self._late_ticks + 1 if late else 0
            if loop.time() - reported_at >= 1.0:  # one line a second while refusals last
                if self.shed != reported_shed:
                    log.warning(
                        "load_shed",
                        refused=self.shed - reported_shed,
                        in_flight=self.in_flight,
                        waiting=self.waiting,
                        loop_lag_ms=round(self.loop_lag_s * 1000, 1),
                    )
                reported_shed, reported_at = self.shed, loop.time()

    @contextlib.asynccontextmanager
    async def place(self, client_gone: object = None) -> AsyncIterator[None]:
        """Hold one place for a check; raises :class:`Overloaded` when none comes in time,
        :class:`ClientGone` when ``client_gone()`` says the client left while it waited."""
        if self.refusing:
            self.shed += 1
            raise Overloaded(self.retry_after_s)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._places.acquire(), timeout=self._max_wait_s)
        except TimeoutError:
            self.shed += 1
            raise Overloaded(self.retry_after_s) from None
        finally:
            self.waiting -= 1
        try:
            if callable(client_gone) and client_gone():
                raise ClientGone
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            self._places.release()
