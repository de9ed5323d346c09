"""One check, end to end: verify, admit, decide, fan out, record, answer.

The pure steps live in :mod:`trust`; this is the imperative shell that sequences them with the
stores and the providers. A query whose signature verified and whose claims are well formed is
admitted (its ``jti`` used up) and then always recorded — answered, refused or undetermined —
before anything is returned; if the record cannot be committed no answer leaves. A query that
fails verification or is malformed (401/400) leaves no trace: no record, no replay entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from broker.errors import Refused
from broker.fanout import ProviderReport, fan_out
from broker.resilience import ProviderGuards
from broker.settings import Settings
from broker.stores.admission import AdmissionStore, admit_or_refuse
from broker.stores.consent_log import ConsentLog
from broker.transparency import TransparencyLog
from connectors.base import Connector
from connectors.registry_source import RegistrySource
from trust import jws
from trust.errors import PolicyRefusal
from trust.messages import (
    EligibilityAnswer,
    EligibilityQuery,
    Outcome,
    answer_claims,
    new_jti,
    parse_query,
)
from trust.policy import decide
from trust.records import record_for
from trust.registry import Registry


@dataclass(frozen=True, slots=True)
class CheckResult:
    token: str
    outcome: Outcome
    log_index: int
    reports: tuple[ProviderReport, ...]


class CheckPipeline:
    def __init__(
        self,
        *,
        settings: Settings,
        registry: RegistrySource,
        admission: AdmissionStore,
        consent_log: ConsentLog,
        connector: Callable[[str], Connector],
        transparency: TransparencyLog,
        guards: ProviderGuards,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._guards = guards
        self._transparency = transparency
        self._settings = settings
        self._registry = registry
        self._admission = admission
        self._log = consent_log
        self._connector = connector
        self._clock = clock

    def _verify(self, body: bytes, now: float, registry: Registry) -> tuple[EligibilityQuery, int]:
        verified = jws.verify(
            body,
            jws.ELIGIBILITY_QUERY,
            keys=registry.key,
            audience=self._settings.broker_id,
            now=int(now),
            leeway=self._settings.leeway_s,
        )
        query = parse_query(verified, today=datetime.fromtimestamp(now, UTC).date())
        member = registry.members[query.requester]
        limit = member.rate_limit_per_second or self._settings.rate_limit_per_second
        return query, limit

    async def run(self, body: bytes) -> CheckResult:
        now = self._clock()
        registry = self._registry.current()  # one snapshot for the whole check
        query, limit = self._verify(body, now, registry)
        structlog.contextvars.bind_contextvars(
            requester=query.requester, check=query.check, purpose=query.purpose
        )
        await admit_or_refuse(
            self._admission,
            query.requester,
            query.jti,
            expires_at=query.expires_at + self._settings.leeway_s,
            now=now,
            limit=limit,
        )

        key = self._settings.pseudonym_key
        withdrawn: frozenset[str] = frozenset()
        if query.consent is not None and await self._log.is_withdrawn(
            query.requester, query.consent.id
        ):
            withdrawn = frozenset({query.consent.id})
        try:
            decision = decide(registry, query, withdrawn=withdrawn, now=int(now))
        except PolicyRefusal as refusal:
            record = record_for(
                query,
                key=key,
                now_ms=int(self._clock() * 1000),
                outcome="refused",
                refusal=refusal.code,
            )
            appended = await self._log.append(record)
            self._transparency.appended()
            structlog.contextvars.bind_contextvars(log_index=appended.index, outcome="refused")
            raise Refused(refusal, appended.index) from None

        result = await fan_out(
            decision,
            query,
            broker_id=self._settings.broker_id,
            connector=self._connector,
            deadline_s=self._settings.check_deadline_ms / 1000,
            guards=self._guards,
        )
        record = record_for(
            query,
            key=key,
            now_ms=int(self._clock() * 1000),
            outcome=result.outcome,
            check_version=decision.version.version,
            providers=tuple(call.provider for call in decision.calls),
        )
        appended = await self._log.append(record)
        self._transparency.appended()
        structlog.contextvars.bind_contextvars(log_index=appended.index, outcome=result.outcome)
        answer = EligibilityAnswer(
            broker=self._settings.broker_id,
            requester=query.requester,
            jti=new_jti(),
            query_jti=query.jti,
            check=query.check,
            check_version=decision.version.version,
            as_of=query.as_of,
            outcome=result.outcome,
            log_index=appended.index,
            record_digest=appended.digest,
        )
        claims = answer_claims(answer, now=int(self._clock()))
        token = jws.sign(claims, self._settings.signing_key, jws.ELIGIBILITY_RESPONSE)
        return CheckResult(token, result.outcome, appended.index, result.reports)
