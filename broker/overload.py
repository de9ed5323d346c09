"""Load shedding for the broker as a whole: a bound on checks in flight, and on how long a
check may wait for one of those places before its work starts.

Beyond either bound a check is refused at once — 503 ``overloaded`` with ``Retry-After`` —
before its signature is verified and before anything is recorded, so a broker at three times
its sustainable rate answers what it can at the speed it can, and refuses the rest in
milliseconds instead of queueing everyone into a timeout. A check whose client has gone by
the time it gets a place is dropped, also without a record: nobody is waiting for its answer.
Once a check has its place it runs to the end, and its outcome stays recorded even if its
client leaves meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from broker.errors import ClientGone, Overloaded


class LoadShedder:
    def __init__(self, *, max_in_flight: int, max_wait_s: float, retry_after_s: int = 1) -> None:
        self._places = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._max_waiting = max_in_flight  # a queue as long as the work in hand, no longer
        self._max_wait_s = max_wait_s
        self._retry_after_s = retry_after_s
        self.waiting = 0
        self.in_flight = 0
        self.shed = 0

    @contextlib.asynccontextmanager
    async def place(self, client_gone: object = None) -> AsyncIterator[None]:
        """Hold one place for a check; raises :class:`Overloaded` when none comes in time,
        :class:`ClientGone` when ``client_gone()`` says the client left while it waited."""
        if self._places.locked() and self.waiting >= self._max_waiting:
            self.shed += 1
            raise Overloaded(self._retry_after_s)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._places.acquire(), timeout=self._max_wait_s)
        except TimeoutError:
            self.shed += 1
            raise Overloaded(self._retry_after_s) from None
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
