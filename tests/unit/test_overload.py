"""The load shedder: places are bounded, waits are bounded, the refused are refused at once,
and a check whose client has gone while it waited is dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker.errors import ClientGone, Overloaded
from broker.overload import LoadShedder


async def hold(shedder: LoadShedder, release: asyncio.Event) -> None:
    async with shedder.place():
        await release.wait()


async def test_beyond_the_places_and_the_queue_a_check_is_refused_at_once() -> None:
    shedder = LoadShedder(max_in_flight=2, max_wait_s=5.0)
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(shedder, release)) for _ in range(2)]
    waiters = [asyncio.create_task(hold(shedder, release)) for _ in range(2)]  # the queue
    await asyncio.sleep(0.01)
    assert (shedder.in_flight, shedder.waiting) == (2, 2)
    started = time.perf_counter()
    with pytest.raises(Overloaded) as refused:
        async with shedder.place():
            pass
    assert time.perf_counter() - started < 0.05
    assert refused.value.retry_after == 1
    release.set()
    await asyncio.gather(*holders, *waiters)
    assert (shedder.in_flight, shedder.waiting, shedder.shed) == (0, 0, 1)


async def test_a_check_waits_no_longer_than_the_bound() -> None:
    shedder = LoadShedder(max_in_flight=1, max_wait_s=0.05)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(shedder, release))
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    with pytest.raises(Overloaded):
        async with shedder.place():
            pass
    assert 0.04 <= time.perf_counter() - started < 0.5
    release.set()
    await holder
    async with shedder.place():  # the place came back
        assert shedder.in_flight == 1


async def test_a_check_whose_client_left_while_it_waited_is_dropped() -> None:
    shedder = LoadShedder(max_in_flight=1, max_wait_s=5.0)
    release = asyncio.Event()
    holder = asyncio.create_task(hold(shedder, release))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(hold_if_client(shedder))
    await asyncio.sleep(0.01)
    release.set()
    await holder
    with pytest.raises(ClientGone):
        await gone
    assert shedder.in_flight == 0
    async with shedder.place():  # and its place was given back
        pass


async def hold_if_client(shedder: LoadShedder) -> None:
    async with shedder.place(lambda: True):
        raise AssertionError("a check without a client must not run")


def hog_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # deliberately blocking: the loop cannot run meanwhile


async def test_a_saturated_event_loop_sheds_new_checks() -> None:
    """CPU saturation queues requests before any handler runs, where the places cannot see
    them: the loop's own lag is the signal."""
    shedder = LoadShedder(max_in_flight=100, max_wait_s=5.0, max_loop_lag_s=0.02)
    watcher = asyncio.create_task(shedder.watch_loop(tick_s=0.005))
    try:
        await asyncio.sleep(0.05)
        async with shedder.place():  # an idle loop: admitted
            pass
        for _ in range(20):  # callbacks that hog the loop, as a CPU-bound broker's do
            hog_the_loop(0.03)
            await asyncio.sleep(0)
        assert shedder.saturated
        with pytest.raises(Overloaded):
            async with shedder.place():
                pass
    finally:
        watcher.cancel()


async def test_one_long_callback_sheds_nothing() -> None:
    """A burst of blocking start-up work is late once, then on time: not saturation."""
    shedder = LoadShedder(max_in_flight=100, max_wait_s=5.0, max_loop_lag_s=0.02)
    watcher = asyncio.create_task(shedder.watch_loop(tick_s=0.005))
    try:
        await asyncio.sleep(0.02)
        hog_the_loop(0.3)
        await asyncio.sleep(0.02)
        assert not shedder.saturated
        async with shedder.place():
            pass
    finally:
        watcher.cancel()
