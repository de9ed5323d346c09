"""The consent log store: every record committed before its answer leaves.

``ConsentLog`` is the interface; ``SqliteConsentLog`` (embedded default, one process) and
``PostgresConsentLog`` (many processes, one log sequence) implement it. Appends are
group-committed by :class:`GroupCommitWriter`: concurrent checks queue their records, one
transaction commits the batch, each ``append`` returns only once its record is durable.
"""

from broker.stores.consent_log.base import (
    Appended,
    ConsentLog,
    RecordFilter,
    StoredRecord,
    open_consent_log,
)

__all__ = ["Appended", "ConsentLog", "RecordFilter", "StoredRecord", "open_consent_log"]
