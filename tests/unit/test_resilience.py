"""The circuit breaker's state machine, driven with a fake clock."""

from __future__ import annotations

from broker.resilience import CircuitBreaker, ProviderGuard


def test_opens_after_consecutive_failures_and_refuses_calls() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10)
    for _ in range(3):
        assert breaker.allow(0)
        breaker.record_failure(0)
    assert breaker.state == "open"
    assert not breaker.allow(5)


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.record_failure(0)
    breaker.record_failure(0)
    breaker.record_success()
    breaker.record_failure(0)
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    breaker.record_failure(0)
    assert breaker.allow(10)
    assert breaker.state == "half-open"
    assert not breaker.allow(10.5), "a second call while the probe is in flight is refused"


def test_probe_success_closes_and_probe_failure_reopens() -> None:
    closes = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    closes.record_failure(0)
    assert closes.allow(11)
    closes.record_success()
    assert closes.state == "closed"
    assert closes.allow(11)
    reopens = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    reopens.record_failure(0)
    assert reopens.allow(11)
    reopens.record_failure(11)
    assert reopens.state == "open"
    assert not reopens.allow(15)
    assert reopens.allow(21)


def test_guard_counts_timeouts_as_failures_but_not_cancellations() -> None:
    guard = ProviderGuard(max_concurrency=4, breaker=CircuitBreaker(failure_threshold=2))
    guard.observe("cancelled", 5, 0)
    guard.observe("cancelled", 5, 0)
    assert guard.breaker.state == "closed"
    guard.observe("timeout", 5, 0)
    guard.observe("provider-unreachable", 5, 0)
    assert guard.breaker.state == "open"


def test_latency_percentiles_use_answered_calls_only() -> None:
    guard = ProviderGuard(max_concurrency=4)
    for ms in range(1, 101):
        guard.observe("match", float(ms), 0)
    guard.observe("timeout", 5000.0, 0)
    stats = guard.percentiles()
    assert stats["samples"] == 100
    assert stats["p50"] == 51.0
    assert stats["p99"] == 100.0
