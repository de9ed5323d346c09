"""The row both backends store for a record: searchable columns beside the canonical body."""

from __future__ import annotations

from typing import Any

from trust.records import ConsentRecord, LogEntry, LogRecord

COLUMNS = (
    "log_index",
    "recorded_at_ms",
    "kind",
    "requester",
    "purpose",
    "check_name",
    "outcome",
    "lawful_basis",
    "consent_id",
    "query_jti",
    "subject_key_id",
    "subject_person",
    "subject_nino",
    "digest",
    "salt",
    "body",
)


def row(record: LogRecord, entry: LogEntry) -> tuple[Any, ...]:
    subject = record.subject if isinstance(record, ConsentRecord) else None
    return (
        entry.index,
        record.recorded_at_ms,
        record.kind,
        record.requester,
        record.purpose,
        record.check,
        record.outcome,
        record.lawful_basis,
        record.consent_id,
        record.query_jti,
        None if subject is None else subject.key_id,
        None if subject is None else subject.person,
        None if subject is None else subject.nino,
        entry.digest,
        entry.salt,
        entry.body,
    )


# Retention deletes a record's content, not only its body: every column that describes the
# query goes, so neither filters nor subject access find it. What stays is what the proofs
# need (index, digest) and when it was recorded.
PRUNE_SQL = (
    "UPDATE records SET body = NULL, salt = NULL, requester = '', purpose = NULL, "
    "check_name = NULL, outcome = NULL, lawful_basis = NULL, consent_id = NULL, "
    "query_jti = NULL, subject_key_id = NULL, subject_person = NULL, subject_nino = NULL "
    "WHERE recorded_at_ms < $1 AND body IS NOT NULL"
)
