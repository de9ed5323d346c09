"""Fan a decided query out to its providers in parallel, under one deadline.

Each provider answers for some attributes. As answers arrive the rule is re-evaluated; once
it is decided (an ``any`` met a ``yes``, an ``all`` met a ``no``) the calls still running are
cancelled. At the deadline whatever has not answered counts as ``undetermined``. Calls to a
provider that takes batches may be coalesced with other checks' calls (:mod:`broker.coalesce`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.coalesce import Coalescer
from broker.resilience import Permit, ProviderGuards
from connectors.base import Connector
from connectors.errors import ProviderFault
from trust.messages import (
    AttributeAnswer,
    AttributeRequest,
    EligibilityQuery,
    Outcome,
    Subject,
    Verdict,
    new_jti,
)
from trust.policy import Decision, PlannedCall
from trust.rules import AttributeRef, final_verdict, verdict


@dataclass(frozen=True, slots=True)
class ProviderReport:
    """What one provider call came to; safe to log (no personal data)."""

    provider: str
    status: str
    latency_ms: float


@dataclass(frozen=True, slots=True)
class FanOutResult:
    outcome: Verdict
    reports: tuple[ProviderReport, ...]


def _outcomes(call: PlannedCall, answer: AttributeAnswer | None) -> dict[AttributeRef, Outcome]:
    refs = [AttributeRef(call.provider, name) for name in call.attributes]
    bound = [AttributeRef(call.provider, p.attribute, p.parameters) for p in call.predicates]
    if answer is None or answer.result == "unavailable":
        return dict.fromkeys([*refs, *bound], "undetermined")
    if answer.result == "no-match":
        return dict.fromkeys([*refs, *bound], "no-match")
    outcomes: dict[AttributeRef, Outcome] = {
        ref: "yes" if answer.attributes[ref.attribute] else "no" for ref in refs
    }
    if len(answer.predicates) != len(bound):  # verified answers never differ; fakes might
        return {**outcomes, **dict.fromkeys(bound, "undetermined")}
    for ref, holds in zip(bound, answer.predicates, strict=True):
        outcomes[ref] = "yes" if holds is True else "no" if holds is False else "undetermined"
    return outcomes


async def fan_out(
    decision: Decision,
    query: EligibilityQuery,
    *,
    broker_id: str,
    connector: Callable[[str], Connector],
    deadline_s: float,
    guards: ProviderGuards,
    coalescer: Coalescer | None = None,
) -> FanOutResult:
    """With a ``coalescer``, calls to providers that take batches go through it: it holds
    their concurrency slot and circuit-breaker permit per batch, so they are not taken here."""
    known: dict[AttributeRef, Outcome] = dict.fromkeys(decision.unavailable, "undetermined")
    version = decision.version
    reports = [ProviderReport(p, reason, 0.0) for p, reason in decision.skipped.items()]
    started = time.perf_counter()
    guard_of = {c.provider: guards.guard(c.provider, c.max_concurrency) for c in decision.calls}
    # a batch carries no predicates: a call that asks any goes on its own (docs/providers.md)
    batched = frozenset(
        c.provider
        for c in decision.calls
        if coalescer is not None and c.max_batch > 1 and not c.predicates
    )

    async def call(planned: PlannedCall) -> AttributeAnswer:
        request = AttributeRequest(
            broker=broker_id,
            provider=planned.provider,
            jti=new_jti(),
            purpose=query.purpose,
            attributes=planned.attributes,
            as_of=query.as_of,
            subject=Subject(query.subject.select(planned.fields)),
            predicates=planned.predicates,
        )
        if coalescer is not None and planned.provider in batched:
            return await coalescer.fetch(
                connector(planned.provider),
                planned,
                request,
                on_sent=lambda: sent.add(planned.provider),
            )
        guard = guard_of[planned.provider]
        # Waiting for one of the provider's concurrency slots is the broker's queue, not the
        # provider's latency: its timeout starts once the call is sent.
        async with guard.slots:
            sent.add(planned.provider)
            guard.in_flight += 1
            try:
                async with asyncio.timeout(planned.timeout_ms / 1000):
                    return await connector(planned.provider).fetch(request)
            finally:
                guard.in_flight -= 1

    sent: set[str] = set()  # providers whose call left the broker's queue
    permits: dict[str, Permit] = {}
    allowed = []
    for planned in decision.calls:
        if planned.provider in batched:  # the coalescer asks the breaker, once per batch
            allowed.append(planned)
            continue
        permit = guard_of[planned.provider].breaker.allow(guards.now())
        if permit is not None:
            permits[planned.provider] = permit
            allowed.append(planned)
        else:  # the circuit is open: don't call, count its attributes as undetermined
            known.update(_outcomes(planned, None))
            reports.append(ProviderReport(planned.provider, "circuit-open", 0.0))
    tasks = {asyncio.create_task(call(planned)): planned for planned in allowed}
    pending = set(tasks)
    outcome = verdict(version, known.get)
    try:
        while pending and outcome is None:
            remaining = deadline_s - (time.perf_counter() - started)
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                planned = tasks[task]
                elapsed = (time.perf_counter() - started) * 1000
                answer: AttributeAnswer | None = None
                status: str
                try:
                    answer = task.result()
                    status = answer.result
                except TimeoutError:
                    status = "timeout"
                except ProviderFault as exc:
                    status = exc.reason
                except Exception as exc:  # a connector bug must not break the check
                    status = f"connector-bug:{type(exc).__name__}"
                known.update(_outcomes(planned, answer))
                reports.append(ProviderReport(planned.provider, status, round(elapsed, 1)))
                if planned.provider not in batched:
                    guard_of[planned.provider].observe(
                        status, elapsed, guards.now(), permits[planned.provider]
                    )
            outcome = verdict(version, known.get)
    finally:
        for task in pending:
            task.cancel()
            provider = tasks[task].provider
            if outcome is not None:
                late = "cancelled"
            else:  # the check's deadline: the provider's fault only if it had the request
                late = "deadline" if provider in sent else "queued"
            elapsed = (time.perf_counter() - started) * 1000
            reports.append(ProviderReport(provider, late, round(elapsed, 1)))
            if provider not in batched:
                guard_of[provider].observe(late, elapsed, guards.now(), permits[provider])
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return FanOutResult(outcome or final_verdict(version, known), tuple(reports))
