"""What the consent log keeps: one record per query (answered, refused or undetermined) and
one per consent withdrawal. Pseudonyms, never identifiers; outcomes, never attribute values.

Each record is serialised canonically (RFC 8785 JCS) and committed through a salted digest:
the log's Merkle leaf is built from ``SHA-256(salt || JCS(body))``, so deleting an expired
body *and its salt* leaves every proof valid while the digest reveals nothing of the body.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from trust.credential import CoreIdentity, credential_digest, derived_fields
from trust.messages import ConsentReference, EligibilityQuery, Subject, Verdict
from trust.pseudonym import (
    PseudonymKey,
    SubjectPseudonyms,
    pseudonymise,
    pseudonymise_credential_subject,
)

# An outcome word, a band's name (a banded check's answer), or "refused".
RecordOutcome = Verdict | Literal["refused"]
LEAF_PREFIX = b"axb-consent-record-v1\n"
SALT_BYTES = 32


@functools.lru_cache(maxsize=64)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def iso_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-27T09:14:03.512Z`` (on the hot path:
    records arrive in time order, so the formatted second is nearly always cached)."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """What the log keeps of the identity credential a query carried: which provider, the
    ``vot`` and ``vtm``, a digest of the credential and a pseudonym of its ``sub`` -- never
    the name or the birth date. A credential that failed verification leaves its digest only."""

    credential_digest: str
    provider: str | None = None
    vot: str | None = None
    vtm: str | None = None
    subject: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "credential_digest": self.credential_digest,
            "provider": self.provider,
            "vot": self.vot,
            "vtm": self.vtm,
            "subject": self.subject,
        }


def identity_record(
    credential: str | None, identity: CoreIdentity | None, key: PseudonymKey
) -> IdentityRecord | None:
    if credential is None:
        return None
    if identity is None:
        return IdentityRecord(credential_digest(credential))
    return IdentityRecord(
        credential_digest=identity.digest,
        provider=identity.provider,
        vot=identity.vot,
        vtm=identity.vtm,
        subject=pseudonymise_credential_subject(identity.provider, identity.subject_id, key),
    )


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One eligibility query and what became of it."""

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
    identity: IdentityRecord | None = None  # only for a query that carried a credential

    kind = "check"

    @property
    def consent_id(self) -> str | None:
        return None if self.consent is None else self.consent.id

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "kind": self.kind,
            "recorded_at": iso_ms(self.recorded_at_ms),
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
            # absent (not null) for council-asserted identity: earlier records keep their form
            **({} if self.identity is None else {"identity": self.identity.to_json()}),
        }


@dataclass(frozen=True, slots=True)
class WithdrawalRecord:
    """A council's signed statement that a resident withdrew a consent (UK GDPR Art. 7(3))."""

    recorded_at_ms: int
    requester: str
    consent_id: str
    withdrawn_at: str
    request_jti: str

    kind = "consent-withdrawal"
    purpose = None
    check = None
    outcome = None
    lawful_basis = None
    query_jti = None
    subject = None

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "kind": self.kind,
            "recorded_at": iso_ms(self.recorded_at_ms),
            "requester": self.requester,
            "consent_id": self.consent_id,
            "withdrawn_at": self.withdrawn_at,
            "request_jti": self.request_jti,
        }


LogRecord = ConsentRecord | WithdrawalRecord


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) for the values records hold: objects with ASCII keys, strings, integers,
    booleans, null and arrays. orjson with sorted keys emits exactly JCS for these (tested
    against the ``rfc8785`` reference implementation); floats are refused."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A record as committed at ``index``: its canonical body, salt, digest and leaf input."""

    index: int
    body: bytes
    salt: bytes
    digest: bytes

    @property
    def leaf_input(self) -> bytes:
        return leaf_input(self.digest)


def record_digest(salt: bytes, body: bytes) -> bytes:
    return hashlib.sha256(salt + body).digest()


def leaf_input(digest: bytes) -> bytes:
    return LEAF_PREFIX + digest


def entry_for(record: LogRecord, index: int, salt: bytes | None = None) -> LogEntry:
    body = canonical_json(record.to_json(log_index=index))
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return LogEntry(index, body, salt, record_digest(salt, body))


def record_for(
    query: EligibilityQuery,
    *,
    key: PseudonymKey,
    now_ms: int,
    outcome: RecordOutcome,
    check_version: int | None = None,
    refusal: str | None = None,
    providers: tuple[str, ...] = (),
    identity: CoreIdentity | None = None,
) -> ConsentRecord:
    """The record of ``query``: pass the query as decided (its subject derived from a verified
    credential) and the ``identity`` verified, if any."""
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
        # the person the credential proved, whatever the council wrote (even if refused)
        subject=pseudonymise(
            query.subject
            if identity is None
            else Subject({**query.subject.fields, **derived_fields(identity)}),
            key,
        ),
        as_of=query.as_of.isoformat(),
        assurance=query.assurance,
        providers=providers,
        identity=identity_record(query.credential, identity, key),
    )
