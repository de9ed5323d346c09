"""The coalescer (``broker.coalesce``) with a fake connector: concurrent calls become batches
of at most the provider's N, each call keeps its own answer, a failed batch fails only its
calls, a call that leaves early is dropped, and the breaker and the concurrency limit count
batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date

import pytest

from broker.coalesce import Coalescer
from broker.resilience import ProviderGuards
from connectors.base import ItemResult
from connectors.errors import ProviderFault
from trust.messages import AttributeAnswer, AttributeRequest, Subject, new_jti
from trust.policy import PlannedCall

PROVIDER = "dwp-reference"
WINDOW_S = 0.002


def planned(max_batch: int = 100, max_concurrency: int = 32, timeout_ms: int = 500) -> PlannedCall:
    return PlannedCall(
        PROVIDER,
        "http://127.0.0.1:1/v1/attributes",
        timeout_ms,
        ("registered-blind",),
        ("family_name", "date_of_birth"),
        max_concurrency,
        max_batch=max_batch,
    )


def request(n: int, attributes: tuple[str, ...] = ("registered-blind",)) -> AttributeRequest:
    subject = Subject({"family_name": f"Person {n}", "date_of_birth": "1980-02-03"})
    return AttributeRequest(
        "broker-dev",
        PROVIDER,
        new_jti(),
        "blue-badge-application",
        attributes,
        date(2026, 1, 5),
        subject,
    )


def yes_if_even(request: AttributeRequest) -> AttributeAnswer:
    even = int(request.subject.family_name.split()[1]) % 2 == 0
    return AttributeAnswer(PROVIDER, new_jti(), request.jti, "match", {"registered-blind": even})


class FakeConnector:
    """Answers each item by the number in its family name; records what it was sent."""

    def __init__(self, *, fail: str | None = None, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.singles = 0
        self.fail = fail
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0

    async def fetch(self, request: AttributeRequest) -> AttributeAnswer:
        self.singles += 1
        if self.fail:
            raise ProviderFault(self.fail)
        return yes_if_even(request)

    async def fetch_batch(self, requests: Sequence[AttributeRequest]) -> list[ItemResult]:
        self.batches.append(len(requests))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise ProviderFault(self.fail)
            return [
                ProviderFault("batch-item-missing")
                if r.subject.family_name == "Person 13"
                else yes_if_even(r)
                for r in requests
            ]
        finally:
            self.in_flight -= 1


async def fetch_all(
    coalescer: Coalescer,
    connector: FakeConnector,
    call: PlannedCall,
    requests: list[AttributeRequest],
) -> list[AttributeAnswer | BaseException]:
    return await asyncio.gather(
        *(coalescer.fetch(connector, call, r, on_sent=lambda: None) for r in requests),
        return_exceptions=True,
    )


async def test_250_concurrent_calls_go_as_three_batches_and_each_keeps_its_own_answer() -> None:
    guards = ProviderGuards()
    coalescer, connector = Coalescer(window_s=WINDOW_S, guards=guards), FakeConnector()
    requests = [request(n) for n in range(250)]
    results = await fetch_all(coalescer, connector, planned(max_batch=100), requests)
    assert sorted(connector.batches) == [50, 100, 100]
    assert connector.singles == 0
    for n, (sent, got) in enumerate(zip(requests, results, strict=True)):
        if n == 13:
            assert isinstance(got, ProviderFault)
            assert got.reason == "batch-item-missing"
            continue
        assert isinstance(got, AttributeAnswer)
        assert got.request_jti == sent.jti
        assert got.attributes == {"registered-blind": n % 2 == 0}
    snapshot = guards.snapshot(PROVIDER)
    assert snapshot is not None
    assert snapshot["calls"] == {"batch-answered": 3}  # the guard counts batches


async def test_a_lone_call_waits_the_window_and_goes_as_a_single_request() -> None:
    coalescer, connector = Coalescer(window_s=WINDOW_S, guards=ProviderGuards()), FakeConnector()
    (answer,) = await fetch_all(coalescer, connector, planned(), [request(2)])
    assert isinstance(answer, AttributeAnswer)
    assert (connector.singles, connector.batches) == (1, [])


async def test_calls_that_ask_different_attributes_are_not_batched_together() -> None:
    coalescer, connector = Coalescer(window_s=WINDOW_S, guards=ProviderGuards()), FakeConnector()
    other = ("registered-blind", "pip-moving-around-8-plus")
    requests = [request(n) for n in range(3)] + [request(n, other) for n in range(3)]
    await fetch_all(coalescer, connector, planned(), requests)
    assert connector.batches == [3, 3]


async def test_a_failed_batch_fails_only_its_calls_and_counts_once_with_the_breaker() -> None:
    guards = ProviderGuards()
    coalescer = Coalescer(window_s=WINDOW_S, guards=guards)
    broken, working = FakeConnector(fail="provider-http-500"), FakeConnector()
    other = ("pip-moving-around-8-plus",)
    bad = fetch_all(coalescer, broken, planned(), [request(n) for n in range(10)])
    good = fetch_all(coalescer, working, planned(), [request(n, other) for n in range(10)])
    failed, answered = await asyncio.gather(bad, good)
    assert all(isinstance(r, ProviderFault) and r.reason == "provider-http-500" for r in failed)
    assert all(isinstance(r, AttributeAnswer) for r in answered)
    guard = guards.guard(PROVIDER, 32)
    assert guard.breaker.failures == 0  # the good batch came after or before: one each
    assert guard.outcomes == {"provider-http-500": 1, "batch-answered": 1}


async def test_five_failed_batches_open_the_circuit_and_then_nobody_is_called() -> None:
    guards = ProviderGuards()
    coalescer, broken = Coalescer(window_s=WINDOW_S, guards=guards), FakeConnector(fail="x")
    for _ in range(5):
        await fetch_all(coalescer, broken, planned(), [request(n) for n in range(20)])
    assert guards.guard(PROVIDER, 32).breaker.state == "open"
    assert len(broken.batches) == 5  # 100 failed calls, five failures counted
    refused = await fetch_all(coalescer, broken, planned(), [request(n) for n in range(4)])
    assert all(isinstance(r, ProviderFault) and r.reason == "circuit-open" for r in refused)
    assert len(broken.batches) == 5


async def test_a_call_cancelled_before_its_batch_leaves_is_dropped_from_it() -> None:
    coalescer, connector = Coalescer(window_s=WINDOW_S, guards=ProviderGuards()), FakeConnector()
    requests = [request(n) for n in range(5)]
    tasks = [
        asyncio.create_task(coalescer.fetch(connector, planned(), r, on_sent=lambda: None))
        for r in requests
    ]
    await asyncio.sleep(0)
    tasks[0].cancel()
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert connector.batches == [3]
    assert all(isinstance(r, asyncio.CancelledError) for r in results[:2])
    assert all(isinstance(r, AttributeAnswer) for r in results[2:])


async def test_a_batch_takes_one_concurrency_slot() -> None:
    coalescer = Coalescer(window_s=WINDOW_S, guards=ProviderGuards())
    connector = FakeConnector(delay_s=0.05)
    call = planned(max_batch=10, max_concurrency=1)
    await fetch_all(coalescer, connector, call, [request(n) for n in range(40)])
    assert connector.batches == [10, 10, 10, 10]
    assert connector.most_in_flight == 1


async def test_a_batch_past_the_providers_timeout_times_out_its_calls() -> None:
    guards = ProviderGuards()
    coalescer = Coalescer(window_s=WINDOW_S, guards=guards)
    connector = FakeConnector(delay_s=0.3)
    results = await fetch_all(
        coalescer, connector, planned(timeout_ms=100), [request(n) for n in range(3)]
    )
    assert all(isinstance(r, TimeoutError) for r in results)
    assert guards.guard(PROVIDER, 32).outcomes == {"timeout": 1}


@pytest.mark.parametrize("window_s", [0.0, 0.0021, -1.0])
def test_the_window_is_over_zero_and_at_most_2_ms(window_s: float) -> None:
    with pytest.raises(ValueError, match="2 ms"):
        Coalescer(window_s=window_s, guards=ProviderGuards())


async def test_a_batch_nobody_waits_for_any_more_is_abandoned_and_frees_its_probe() -> None:
    guards = ProviderGuards()
    coalescer = Coalescer(window_s=WINDOW_S, guards=guards)
    connector = FakeConnector(delay_s=5.0)  # hangs
    guard = guards.guard(PROVIDER, 32)
    guard.breaker.state, guard.breaker.opened_at = "open", -100.0  # due a probe
    tasks = [
        asyncio.create_task(coalescer.fetch(connector, planned(), request(n), on_sent=lambda: None))
        for n in range(3)
    ]
    await asyncio.sleep(WINDOW_S * 5)  # the window passes and the batch leaves
    assert connector.in_flight == 1
    assert guard.breaker.probe_in_flight
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert connector.in_flight == 0  # the batch itself was cancelled
    assert guard.breaker.probe_in_flight is False
    assert guard.outcomes == {"cancelled": 1}
