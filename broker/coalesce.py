"""Coalescing: concurrent checks' calls to one provider travel as one signed batch.

A call joins the open group of calls with the same :func:`trust.batch.batch_key` (provider,
purpose, attributes, date). A group is sent when the window (``coalesce_window_ms``) since its
first call has passed, or at once when it holds the provider's ``max_batch`` calls. A group of
one goes as an ordinary single request. So under load one signature goes out and one is
verified for many checks, and a lone check waits at most the window.

Each check keeps its own answer (bound to its item id), its own deadline (it stops waiting when
its deadline passes or its rule is decided; a call that leaves before its group is sent is
dropped from it) and its own record. A batch that fails fails only the checks in it. Per
provider, a batch takes one concurrency slot and settles one circuit-breaker permit: the
breaker and the concurrency limit count batches, not checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from broker.resilience import ProviderGuards
from connectors.base import Connector, ItemResult
from connectors.errors import ProviderFault
from trust.batch import batch_key
from trust.messages import AttributeAnswer, AttributeRequest
from trust.policy import PlannedCall

BATCH_ANSWERED = "batch-answered"  # the status a batch reports to the provider's guard


@dataclass(slots=True)
class _Call:
    request: AttributeRequest
    future: asyncio.Future[AttributeAnswer]
    on_sent: Callable[[], None]


@dataclass(slots=True)
class _Group:
    connector: Connector
    planned: PlannedCall
    calls: list[_Call] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


def _status(results: Sequence[ItemResult]) -> str:
    """What one batch says about the provider: answered if any item got an answer."""
    answered = any(isinstance(r, AttributeAnswer) and r.result != "unavailable" for r in results)
    return BATCH_ANSWERED if answered else "unavailable"


class Coalescer:
    def __init__(self, *, window_s: float, guards: ProviderGuards) -> None:
        if not 0 < window_s <= 0.002:
            raise ValueError("the coalescing window is over 0 and at most 2 ms")
        self._window_s = window_s
        self._guards = guards
        self._open: dict[Hashable, _Group] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.batches_sent = 0  # batches (of two or more) and single requests sent

    async def fetch(
        self,
        connector: Connector,
        planned: PlannedCall,
        request: AttributeRequest,
        *,
        on_sent: Callable[[], None],
    ) -> AttributeAnswer:
        """The provider's answer for ``request``, fetched with whatever calls join it.
        Raises ``ProviderFault`` or ``TimeoutError`` (the provider's declared timeout) as a
        single fetch would; cancelling the caller drops its call."""
        loop = asyncio.get_running_loop()
        key = batch_key(request)
        group = self._open.get(key)
        if group is None:
            group = _Group(connector, planned)
            self._open[key] = group
            group.timer = loop.call_later(self._window_s, self._flush, key, group)
        future: asyncio.Future[AttributeAnswer] = loop.create_future()
        group.calls.append(_Call(request, future, on_sent))
        if len(group.calls) >= planned.max_batch:
            self._flush(key, group)
        return await future

    def _flush(self, key: Hashable, group: _Group) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        if group.timer is not None:
            group.timer.cancel()
            group.timer = None
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, group: _Group) -> None:
        provider = group.planned.provider
        guard = self._guards.guard(provider, group.planned.max_concurrency)
        calls = [c for c in group.calls if not c.future.done()]
        if not calls:
            return
        permit = guard.breaker.allow(self._guards.now())
        if permit is None:  # the circuit is open: nobody in the group is called
            self._fail(calls, lambda: ProviderFault("circuit-open"))
            return
        started = time.perf_counter()
        status = "queued"
        try:
            # Waiting for a slot is the broker's queue; the provider's timeout starts at send.
            async with guard.slots:
                calls = [c for c in calls if not c.future.done()]
                if not calls:
                    return  # every check in it gave up while it waited: nothing was sent
                for call in calls:
                    call.on_sent()
                self._abandon_when_nobody_waits(calls)
                status = "cancelled"
                guard.in_flight += 1
                started = time.perf_counter()
                self.batches_sent += 1
                try:
                    async with asyncio.timeout(group.planned.timeout_ms / 1000):
                        results = await self._fetch(group.connector, calls)
                finally:
                    guard.in_flight -= 1
            status = _status(results)
            for call, result in zip(calls, results, strict=True):
                if call.future.done():
                    continue
                if isinstance(result, AttributeAnswer):
                    call.future.set_result(result)
                else:
                    call.future.set_exception(result)
        except TimeoutError:
            status = "timeout"
            self._fail(calls, TimeoutError)
        except ProviderFault as exc:
            status = exc.reason
            self._fail(calls, lambda: ProviderFault(status))
        except Exception as exc:  # a connector bug must not break the checks
            status = f"connector-bug:{type(exc).__name__}"
            self._fail(calls, lambda: ProviderFault(status))
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            guard.observe(status, elapsed, self._guards.now(), permit)

    @staticmethod
    def _abandon_when_nobody_waits(calls: Sequence[_Call]) -> None:
        """Once every check in a batch in flight has stopped waiting (each rule decided by
        another provider, or each deadline passed), the batch is cancelled: it holds no slot
        and no probe for nobody, and its end says nothing about the provider."""
        task = asyncio.current_task()
        waiting = len(calls)

        def gone(future: asyncio.Future[AttributeAnswer]) -> None:
            nonlocal waiting
            if future.cancelled():
                waiting -= 1
                if waiting == 0 and task is not None:
                    task.cancel()

        for call in calls:
            call.future.add_done_callback(gone)

    @staticmethod
    async def _fetch(connector: Connector, calls: Sequence[_Call]) -> list[ItemResult]:
        if len(calls) == 1:  # a batch of one is an ordinary request
            return [await connector.fetch(calls[0].request)]
        return await connector.fetch_batch([c.request for c in calls])

    @staticmethod
    def _fail(calls: Sequence[_Call], error: Callable[[], Exception]) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error())

    async def close(self) -> None:
        """Send what is still open and wait for every batch in flight."""
        for key, group in list(self._open.items()):
            self._flush(key, group)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
