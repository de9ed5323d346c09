"""Keyed subject pseudonyms: the consent log can be searched by person without holding one.

HMAC-SHA256 under a key kept apart from the log. A pseudonym carries its key's id so that,
after a rotation, a subject access request can recompute the pseudonym under every key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from trust.keys import b64url_encode
from trust.messages import Subject, normalise_subject_field


@dataclass(frozen=True, slots=True)
class PseudonymKey:
    key_id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < 32:
            raise ValueError("a pseudonym key needs at least 256 bits")


@dataclass(frozen=True, slots=True)
class SubjectPseudonyms:
    """``person`` from family name and date of birth; ``nino`` when the query carried one.
    ``person`` is ``None`` only for a query that left the name to a credential that was then
    refused: no name was ever established."""

    key_id: str
    person: str | None
    nino: str | None


def _mac(key: PseudonymKey, label: str, *parts: str) -> str:
    message = "\x00".join((label, *parts)).encode("utf-8")
    return b64url_encode(hmac.new(key.secret, message, hashlib.sha256).digest())


def pseudonymise(subject: Subject, key: PseudonymKey) -> SubjectPseudonyms:
    person = None
    if "family_name" in subject.fields and "date_of_birth" in subject.fields:
        family = subject.family_name.casefold()
        person = _mac(key, "axb-person-v1", family, subject.fields["date_of_birth"])
    nino = subject.fields.get("nino")
    return SubjectPseudonyms(
        key_id=key.key_id,
        person=person,
        nino=None if nino is None else _mac(key, "axb-nino-v1", nino),
    )


def pseudonymise_identifiers(
    family_name: str, date_of_birth: str, nino: str | None, key: PseudonymKey
) -> SubjectPseudonyms:
    """The same pseudonyms from raw identifiers (subject access requests)."""
    fields = {
        "family_name": normalise_subject_field("family_name", family_name),
        "date_of_birth": normalise_subject_field("date_of_birth", date_of_birth),
    }
    if nino is not None:
        fields["nino"] = normalise_subject_field("nino", nino)
    return pseudonymise(Subject(fields), key)


def pseudonymise_credential_subject(provider: str, subject_id: str, key: PseudonymKey) -> str:
    """A pseudonym of an identity provider's ``sub`` (pairwise per relying party), so the log
    can tell two checks of one credential holder apart without holding the ``sub``."""
    return _mac(key, "axb-idp-sub-v1", provider, subject_id)
