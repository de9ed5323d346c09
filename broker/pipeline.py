"""One check, end to end: through the gate, decide, fan out, record, answer.

The pure steps live in :mod:`trust`; this is the imperative shell that sequences them with the
stores and the providers. :class:`RecordedStep` is the part a single check and a bulk job's item
share: ask the decided query's providers (through the coalescer, so concurrent checks' calls
travel as batches) and append the query's consent record; or append the record of a refusal.

A query that passed the gate (verified, well formed, its ``jti`` used up) is always recorded —
answered, refused or undetermined — before anything is returned; if the record cannot be
committed no answer leaves. A query that fails verification or is malformed (401/400) leaves no
trace: no record, no replay entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from broker.coalesce import Coalescer
from broker.errors import Refused
from broker.fanout import ProviderReport, fan_out
from broker.gate import Gate
from broker.resilience import ProviderGuards
from broker.settings import Settings
from broker.stores.consent_log import Appended, ConsentLog
from broker.transparency import TransparencyLog
from connectors.base import Connector
from trust import jws
from trust.credential import CoreIdentity, CredentialRefused
from trust.errors import PolicyRefusal
from trust.messages import (
    EligibilityAnswer,
    EligibilityQuery,
    Verdict,
    answer_claims,
    new_jti,
    parse_query,
)
from trust.policy import Decision, decide
from trust.records import ConsentRecord, record_for


@dataclass(frozen=True, slots=True)
class CheckResult:
    token: str
    outcome: Verdict
    log_index: int
    reports: tuple[ProviderReport, ...]
    check: str = ""
    requester: str = ""


def _parse_query(verified: jws.Verified, now: float) -> EligibilityQuery:
    return parse_query(verified, today=datetime.fromtimestamp(now, UTC).date())


def _log_context(query: EligibilityQuery) -> dict[str, str]:
    return {"requester": query.requester, "check": query.check, "purpose": query.purpose}


@dataclass(frozen=True, slots=True)
class Recorded:
    """A query's consent record, durably appended, and what its providers came to."""

    record: ConsentRecord
    appended: Appended
    outcome: Verdict
    reports: tuple[ProviderReport, ...] = ()


class RecordedStep:
    """Ask providers, then record: the one sequence every check, single or bulk, goes through,
    so that nothing is answered without its consent record."""

    def __init__(
        self,
        *,
        settings: Settings,
        connector: Callable[[str], Connector],
        transparency: TransparencyLog,
        guards: ProviderGuards,
        clock: Callable[[], float],
        coalescer: Coalescer | None = None,
    ) -> None:
        self._settings = settings
        self._connector = connector
        self._transparency = transparency
        self._guards = guards
        self._clock = clock
        self.coalescer = coalescer  # None: coalescing is off

    async def refused(
        self, query: EligibilityQuery, code: str, identity: CoreIdentity | None = None
    ) -> Recorded:
        record = record_for(
            query,
            key=self._settings.pseudonym_key,
            now_ms=int(self._clock() * 1000),
            outcome="refused",
            refusal=code,
            identity=identity,
        )
        return Recorded(record, await self._transparency.append(record), "refused")

    async def asked(self, decision: Decision, query: EligibilityQuery) -> Recorded:
        """Fan ``query`` out to ``decision``'s providers under the check deadline and append
        its record (raises ``LogUnavailable`` when the record cannot be committed)."""
        result = await fan_out(
            decision,
            query,
            broker_id=self._settings.broker_id,
            connector=self._connector,
            deadline_s=self._settings.check_deadline_ms / 1000,
            guards=self._guards,
            coalescer=self.coalescer,
        )
        record = record_for(
            query,
            key=self._settings.pseudonym_key,
            now_ms=int(self._clock() * 1000),
            outcome=result.outcome,
            check_version=decision.version.version,
            providers=tuple(call.provider for call in decision.calls),
            identity=decision.identity,
        )
        appended = await self._transparency.append(record)
        return Recorded(record, appended, result.outcome, result.reports)


class CheckPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        gate: Gate,
        consent_log: ConsentLog,
        step: RecordedStep,
        clock: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._gate = gate
        self._log = consent_log
        self.step = step
        self._clock = clock

    async def run(self, body: bytes) -> CheckResult:
        passed = await self._gate.admit(
            body, jws.ELIGIBILITY_QUERY, _parse_query, log_context=_log_context
        )
        query, registry, now = passed.message, passed.registry, passed.now
        withdrawn: frozenset[str] = frozenset()
        if query.consent is not None and await self._log.is_withdrawn(
            query.requester, query.consent.id
        ):
            withdrawn = frozenset({query.consent.id})
        try:
            decision = decide(registry, query, withdrawn=withdrawn, now=int(now))
        except PolicyRefusal as refusal:
            identity = refusal.identity if isinstance(refusal.identity, CoreIdentity) else None
            refused = await self.step.refused(query, refusal.code, identity)
            index = refused.appended.index
            structlog.contextvars.bind_contextvars(log_index=index, outcome="refused")
            if isinstance(refusal, CredentialRefused):  # which check failed: for the log only
                structlog.contextvars.bind_contextvars(credential_reason=refusal.reason)
            raise Refused(refusal, index, check=query.check, requester=query.requester) from None
        if decision.query is not None:  # the subject as the credential proved it
            query = decision.query

        done = await self.step.asked(decision, query)
        appended = done.appended
        structlog.contextvars.bind_contextvars(log_index=appended.index, outcome=done.outcome)
        answer = EligibilityAnswer(
            broker=self._settings.broker_id,
            requester=query.requester,
            jti=new_jti(),
            query_jti=query.jti,
            check=query.check,
            check_version=decision.version.version,
            as_of=query.as_of,
            outcome=done.outcome,
            log_index=appended.index,
            record_digest=appended.digest,
        )
        claims = answer_claims(answer, now=int(self._clock()))
        token = jws.sign(claims, self._settings.signing_key, jws.ELIGIBILITY_RESPONSE)
        return CheckResult(
            token, done.outcome, appended.index, done.reports, query.check, query.requester
        )
