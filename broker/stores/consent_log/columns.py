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
    "identity_provider",
)
# Columns added after logs existed: each backend adds those an older log lacks when it opens.
ADDED_COLUMNS = (("identity_provider", "TEXT"),)


# Subject pseudonyms are indexed per block of 2**12 = 4,096 consecutive records, by
# ``(log_index >> SUBJECT_BLOCK_BITS, pseudonym)``. A plain index on the pseudonym would take
# every append's keys at random places in one large B-tree, so each group commit would dirty
# (and write to the WAL) about one index page per record; keyed by block first, a commit's
# keys land in the few pages of the newest block. The price is paid by subject access, which
# is rare: one index seek per block per pseudonym (1,000,000 records are 245 blocks).
SUBJECT_BLOCK_BITS = 12


def schema(*, integer: str, binary: str) -> str:
    """The tables both backends create, in each one's column types."""
    return f"""
CREATE TABLE IF NOT EXISTS records (
    log_index      {integer} PRIMARY KEY,
    recorded_at_ms {integer} NOT NULL,
    kind           TEXT NOT NULL,
    requester      TEXT NOT NULL,
    purpose        TEXT,
    check_name     TEXT,
    outcome        TEXT,
    lawful_basis   TEXT,
    consent_id     TEXT,
    query_jti      TEXT,
    subject_key_id TEXT,
    subject_person TEXT,
    subject_nino   TEXT,
    digest         {binary} NOT NULL,
    salt           {binary},
    body           {binary},
    identity_provider TEXT
);
CREATE INDEX IF NOT EXISTS records_time ON records (recorded_at_ms);
DROP INDEX IF EXISTS records_person;
DROP INDEX IF EXISTS records_nino;
CREATE INDEX IF NOT EXISTS records_person_by_block
    ON records ((log_index >> {SUBJECT_BLOCK_BITS}), subject_person);
CREATE INDEX IF NOT EXISTS records_nino_by_block
    ON records ((log_index >> {SUBJECT_BLOCK_BITS}), subject_nino);
CREATE INDEX IF NOT EXISTS records_requester ON records (requester, log_index);
CREATE INDEX IF NOT EXISTS records_query_by_block
    ON records ((log_index >> {SUBJECT_BLOCK_BITS}), query_jti);
CREATE TABLE IF NOT EXISTS withdrawals (
    requester   TEXT NOT NULL,
    consent_id  TEXT NOT NULL,
    log_index   {integer} NOT NULL,
    PRIMARY KEY (requester, consent_id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size          {integer} PRIMARY KEY,
    note          TEXT NOT NULL,
    issued_at_ms  {integer} NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    size     {integer} NOT NULL,
    witness  TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (size, witness)
);
CREATE TABLE IF NOT EXISTS log_tiles (
    level   {integer} NOT NULL,
    idx     {integer} NOT NULL,
    hashes  {binary} NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS commit_probe (
    id     {integer} PRIMARY KEY,
    at_ms  {integer} NOT NULL
);
"""


# One row, rewritten by each readiness probe: a real commit, so a full disk shows.
PROBE = (
    "INSERT INTO commit_probe VALUES (1, {0}) ON CONFLICT (id) DO UPDATE SET at_ms = excluded.at_ms"
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
        # the identity provider whose verified credential the check's identity came from
        None
        if not isinstance(record, ConsentRecord) or record.identity is None
        else record.identity.provider,
    )


# Was a query's jti recorded since a time (the replay check when admission has forgotten it)?
# Query ids are indexed per block like the pseudonyms (random keys, appended in bulk), and only
# the blocks from the first record since that time are searched: one index seek per block of
# the window, whatever the member sent in it. (Searching the requester's index range instead
# read every record of the member's in the window: 21 ms a check after a 200,000-item job.)
# ``{start}`` is the first index recorded since ``{since}`` (records are appended in about
# time order, and callers ask with a margin); with none since then, nothing can match.
SEEN_WINDOW_START = (
    "COALESCE((SELECT log_index FROM records WHERE recorded_at_ms >= {since} "
    "ORDER BY recorded_at_ms LIMIT 1), (SELECT COALESCE(MAX(log_index), -1) + 1 FROM records))"
)
# {blocks}: the backend's "block number is one of the window's blocks". The requester is
# compared outside the index search, so no planner takes the requester's index instead
# ({records}: the table, with SQLite's INDEXED BY; {fence}: PostgreSQL's OFFSET 0, which keeps
# the inner search from being merged into the outer one).
SEEN_QUERY_SQL = (
    "SELECT 1 FROM (SELECT requester FROM {records} WHERE {blocks} AND query_jti = {jti} "
    "AND log_index >= {start}{fence}) AS same_jti WHERE requester = {requester} LIMIT 1"
)


# Retention deletes a record's content, not only its body: every column that describes the
# query goes, so neither filters nor subject access find it. What stays is what the proofs
# need (index, digest) and when it was recorded.
PRUNE_SQL = (
    "UPDATE records SET body = NULL, salt = NULL, requester = '', purpose = NULL, "
    "check_name = NULL, outcome = NULL, lawful_basis = NULL, consent_id = NULL, "
    "query_jti = NULL, subject_key_id = NULL, subject_person = NULL, subject_nino = NULL, "
    "identity_provider = NULL "
    "WHERE recorded_at_ms < $1 AND body IS NOT NULL"
)
