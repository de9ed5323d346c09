"""The consent record: what the log keeps of one query. Pseudonyms, never identifiers;
outcomes, never attribute values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from trust.messages import ConsentReference, EligibilityQuery, Outcome
from trust.pseudonym import PseudonymKey, SubjectPseudonyms, pseudonymise

RecordOutcome = Literal["yes", "no", "no-match", "undetermined", "refused"]


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    recorded_at_ms: int
    requester: str
    purpose: str
    check: str
    check_version: int | None
    lawful_basis: str | None
    consent: ConsentReference | None
    outcome: RecordOutcome
    refusal: str | None
    query_jti: str
    subject: SubjectPseudonyms
    as_of: str
    assurance: str | None
    providers: tuple[str, ...]

    @property
    def recorded_at(self) -> str:
        moment = datetime.fromtimestamp(self.recorded_at_ms / 1000, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        return {
            "recorded_at": self.recorded_at,
            "requester": self.requester,
            "purpose": self.purpose,
            "check": self.check,
            "check_version": self.check_version,
            "lawful_basis": self.lawful_basis,
            "consent": None if self.consent is None else self.consent.to_json(),
            "outcome": self.outcome,
            "refusal": self.refusal,
            "query_jti": self.query_jti,
            "subject": {
                "key_id": self.subject.key_id,
                "person": self.subject.person,
                "nino": self.subject.nino,
            },
            "as_of": self.as_of,
            "assurance": self.assurance,
            "providers": list(self.providers),
        }


def record_for(
    query: EligibilityQuery,
    *,
    key: PseudonymKey,
    now_ms: int,
    outcome: Outcome | Literal["refused"],
    check_version: int | None = None,
    refusal: str | None = None,
    providers: tuple[str, ...] = (),
) -> ConsentRecord:
    return ConsentRecord(
        recorded_at_ms=now_ms,
        requester=query.requester,
        purpose=query.purpose,
        check=query.check,
        check_version=check_version,
        lawful_basis=query.lawful_basis,
        consent=query.consent,
        outcome=outcome,
        refusal=refusal,
        query_jti=query.jti,
        subject=pseudonymise(query.subject, key),
        as_of=query.as_of.isoformat(),
        assurance=query.assurance,
        providers=providers,
    )
