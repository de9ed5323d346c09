"""The consent log store: every record committed before its answer leaves.

General layout:

- ``base``      the ``ConsentLog`` interface, its records, and ``GroupCommitWriter``: concurrent
  checks queue their records, one transaction commits the batch, each ``append`` returns only
  once its record is durable
- ``location``  where the log lives (``SqliteLocation`` | ``PostgresLocation``), decided once
- ``sqlite``    ``SqliteConsentLog``: the embedded default, one process
- ``postgres``  ``PostgresConsentLog``: many processes, one log sequence
- ``columns``   the record columns both backends index and filter on
- ``jobs``      durable bulk jobs beside the records (either backend): items, outcomes, leases
"""

from broker.stores.consent_log.base import Appended, ConsentLog, RecordFilter, StoredRecord
from broker.stores.consent_log.location import (
    LogLocation,
    PostgresLocation,
    SqliteLocation,
)
from broker.stores.consent_log.postgres import PostgresConsentLog
from broker.stores.consent_log.sqlite import SqliteConsentLog


def open_consent_log(location: LogLocation) -> ConsentLog:
    """The consent log at ``location``."""
    match location:
        case PostgresLocation(dsn=dsn, schema=schema):
            return PostgresConsentLog(dsn, schema=schema)
        case SqliteLocation(path=path):
            return SqliteConsentLog(path)


__all__ = [
    "Appended",
    "ConsentLog",
    "LogLocation",
    "PostgresConsentLog",
    "PostgresLocation",
    "RecordFilter",
    "SqliteConsentLog",
    "SqliteLocation",
    "StoredRecord",
    "open_consent_log",
]
