"""Per-provider resilience: a concurrency limit, a circuit breaker and latency statistics.

The breaker is a small state machine with time passed in. Closed, it lets calls through and
counts consecutive failures; at the threshold it opens and refuses calls (their attributes
count as undetermined) until ``reset_after_s`` has passed; then one probe is let through
(half-open): success closes it, failure opens it again, and a probe that ends without a
verdict (cancelled because the rule was already decided) lets the next call probe.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

State = Literal["closed", "open", "half-open"]
Permit = Literal["call", "probe"]
Verdict = Literal["success", "failure", "neutral"]

# What a call's status says about the provider. A call the broker itself cut short or never
# sent (cancelled because the rule was decided, waiting for a concurrency slot, the circuit
# open, a scheduled outage) or a request the provider rightly refused as malformed (4xx: the
# broker's fault) says nothing about the provider's health.
SUCCESSES = frozenset({"match", "no-match", "batch-answered"})
NEUTRAL = frozenset({"cancelled", "queued", "circuit-open", "scheduled-outage"})


def verdict_of(status: str) -> Verdict:
    if status in SUCCESSES:
        return "success"
    if status in NEUTRAL or status.startswith("provider-refused-"):
        return "neutral"
    return "failure"


@dataclass
class CircuitBreaker:
    """Every call :meth:`allow` lets through holds a permit, and every permit is settled
    exactly once with a verdict: so a probe always ends in a decision, and the breaker can
    never stay half-open with nobody probing."""

    failure_threshold: int = 5
    reset_after_s: float = 10.0
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False

    def allow(self, now: float) -> Permit | None:
        """A permit to call the provider, or None while the circuit refuses calls."""
        if self.state == "closed":
            return "call"
        if self.state == "open" and now >= self.opened_at + self.reset_after_s:
            self.state = "half-open"
            self.probe_in_flight = False
        if self.state == "half-open" and not self.probe_in_flight:
            self.probe_in_flight = True
            return "probe"
        return None

    def settle(self, permit: Permit, verdict: Verdict, now: float) -> None:
        """The end of a permitted call. A probe decides the circuit: success closes it,
        failure opens it again, a neutral end (cancelled, never sent) frees the probe so the
        next call probes. An ordinary call only counts while the circuit is closed."""
        if permit == "probe":
            self.probe_in_flight = False
            if verdict == "success":
                self.state, self.failures = "closed", 0
            elif verdict == "failure":
                self.state, self.opened_at = "open", now
            return
        if self.state != "closed" or verdict == "neutral":
            return
        if verdict == "success":
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.state, self.opened_at = "open", now


@dataclass
class ProviderGuard:
    """Everything the broker tracks about one provider."""

    max_concurrency: int
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    outcomes: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_concurrency)

    def observe(self, status: str, latency_ms: float, now: float, permit: Permit) -> None:
        """Count one permitted call's end, and settle its permit with the breaker."""
        self.outcomes[status] += 1
        verdict = verdict_of(status)
        if verdict == "success":
            self.latencies_ms.append(latency_ms)
        self.breaker.settle(permit, verdict, now)

    def percentiles(self) -> dict[str, float | int | None]:
        """Latency percentiles over the last 2,000 answered calls (nearest rank)."""
        ordered = sorted(self.latencies_ms)

        def pick(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "samples": len(ordered)}


class ProviderGuards:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._guards: dict[str, ProviderGuard] = {}
        self._clock = clock

    def guard(self, provider_id: str, max_concurrency: int) -> ProviderGuard:
        guard = self._guards.get(provider_id)
        if guard is None or guard.max_concurrency != max_concurrency:
            guard = ProviderGuard(max_concurrency)
            self._guards[provider_id] = guard
        return guard

    def now(self) -> float:
        return self._clock()

    def items(self) -> list[tuple[str, ProviderGuard]]:
        """Every provider called so far, with its guard."""
        return list(self._guards.items())

    def snapshot(self, provider_id: str) -> dict[str, Any] | None:
        guard = self._guards.get(provider_id)
        if guard is None:
            return None
        return {
            "circuit": {
                "state": guard.breaker.state,
                "consecutive_failures": guard.breaker.failures,
            },
            "latency_ms": guard.percentiles(),
            "calls": dict(guard.outcomes),
            "in_flight": guard.in_flight,
            "max_concurrency": guard.max_concurrency,
        }
