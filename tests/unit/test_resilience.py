"""The circuit breaker's state machine, driven with a fake clock, and proven by Hypothesis
never to stick: whatever interleaving of successes, failures, timeouts and cancellations, once
every permitted call has ended and the reset window has passed, a call is let through."""

from __future__ import annotations

import copy

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker.resilience import CircuitBreaker, Permit, ProviderGuard, verdict_of


def fail(breaker: CircuitBreaker, now: float) -> None:
    permit = breaker.allow(now)
    assert permit is not None
    breaker.settle(permit, "failure", now)


def test_opens_after_consecutive_failures_and_refuses_calls() -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10)
    for _ in range(3):
        fail(breaker, 0)
    assert breaker.state == "open"
    assert breaker.allow(5) is None


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    fail(breaker, 0)
    fail(breaker, 0)
    breaker.settle("call", "success", 0)
    fail(breaker, 0)
    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    fail(breaker, 0)
    assert breaker.allow(10) == "probe"
    assert breaker.state == "half-open"
    assert breaker.allow(10.5) is None, "a second call while the probe is in flight is refused"


def test_probe_success_closes_and_probe_failure_reopens() -> None:
    closes = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    fail(closes, 0)
    assert closes.allow(11) == "probe"
    closes.settle("probe", "success", 11)
    assert closes.state == "closed"
    assert closes.allow(11) == "call"
    reopens = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    fail(reopens, 0)
    assert reopens.allow(11) == "probe"
    reopens.settle("probe", "failure", 11)
    assert reopens.state == "open"
    assert reopens.allow(15) is None
    assert reopens.allow(21) == "probe"


def test_a_cancelled_probe_lets_the_next_call_probe() -> None:
    """The failure seen in production: DWP's probe belonged to a check HMRC had already
    answered yes, so it was cancelled; the circuit then stayed half-open with the probe slot
    taken, and every later check was undetermined until a restart."""
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    fail(breaker, 0)
    assert breaker.allow(10) == "probe"
    breaker.settle("probe", verdict_of("cancelled"), 10.1)
    assert breaker.allow(10.2) == "probe", "the next call must probe"
    breaker.settle("probe", "success", 10.3)
    assert breaker.state == "closed"


def test_a_late_failure_of_an_old_call_does_not_steal_the_probe() -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=10)
    old = breaker.allow(0)
    fail(breaker, 0)
    assert breaker.allow(10) == "probe"
    assert old == "call"
    breaker.settle(old, "failure", 10.5)  # a call sent while closed ends after the reset
    assert breaker.state == "half-open"
    assert breaker.probe_in_flight
    breaker.settle("probe", "success", 11)
    assert breaker.state == "closed"


def test_statuses_that_say_nothing_about_the_provider_are_neutral() -> None:
    for status in ("cancelled", "queued", "circuit-open", "provider-refused-400"):
        assert verdict_of(status) == "neutral", status
    for status in ("timeout", "deadline", "provider-unreachable", "provider-http-503"):
        assert verdict_of(status) == "failure", status
    assert verdict_of("match") == verdict_of("no-match") == "success"


def test_guard_counts_timeouts_as_failures_but_not_cancellations() -> None:
    guard = ProviderGuard(max_concurrency=4, breaker=CircuitBreaker(failure_threshold=2))
    guard.observe("cancelled", 5, 0, "call")
    guard.observe("cancelled", 5, 0, "call")
    assert guard.breaker.state == "closed"
    guard.observe("timeout", 5, 0, "call")
    guard.observe("provider-unreachable", 5, 0, "call")
    assert guard.breaker.state == "open"


def test_latency_percentiles_use_answered_calls_only() -> None:
    guard = ProviderGuard(max_concurrency=4)
    for ms in range(1, 101):
        guard.observe("match", float(ms), 0, "call")
    guard.observe("timeout", 5000.0, 0, "call")
    stats = guard.percentiles()
    assert stats["samples"] == 100
    assert stats["p50"] == 51.0
    assert stats["p99"] == 100.0


STATUSES = ("match", "no-match", "timeout", "deadline", "provider-unreachable", "cancelled")


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of calls let through, calls ending with any status, and time."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(failure_threshold=3, reset_after_s=10)
        self.now = 0.0
        self.outstanding: list[Permit] = []

    @rule(seconds=st.floats(min_value=0, max_value=15))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def a_check_asks(self) -> None:
        permit = self.breaker.allow(self.now)
        if permit is not None:
            self.outstanding.append(permit)

    @precondition(lambda self: self.outstanding)
    @rule(data=st.data(), status=st.sampled_from(STATUSES))
    def a_call_ends(self, data: st.DataObject, status: str) -> None:
        index = data.draw(st.integers(0, len(self.outstanding) - 1))
        permit = self.outstanding.pop(index)
        self.breaker.settle(permit, verdict_of(status), self.now)

    @invariant()
    def at_most_one_probe(self) -> None:
        assert self.outstanding.count("probe") <= 1
        assert self.breaker.probe_in_flight == ("probe" in self.outstanding)

    @invariant()
    def never_stuck(self) -> None:
        if self.outstanding:
            return
        later = copy.deepcopy(self.breaker)
        assert later.allow(self.now + later.reset_after_s) is not None, (
            "every call has ended and the reset window has passed, yet nothing may probe"
        )


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_the_breaker_never_sticks = BreakerMachine.TestCase
