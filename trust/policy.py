"""Policy: may this member ask this check, for this purpose, on this basis? And whom to ask.

``decide`` is a pure function of the registry snapshot and a parsed query. It either returns a
:class:`Decision` (the check version in force and the provider calls to make, each with only
the subject fields that provider declared) or raises :class:`PolicyRefusal` with a stable code.
Anything the registry does not explicitly allow is refused.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from trust import credential as credentials
from trust.credential import CoreIdentity, CredentialRefused
from trust.errors import PolicyRefusal
from trust.messages import ASSURANCE_LEVELS, EligibilityQuery
from trust.parameters import Predicate
from trust.registry import Purpose, Registry, provider_fields
from trust.rules import AttributeRef, Check, CheckVersion

# Stable refusal codes; the broker maps each to an HTTP status and problem type in one place.
MEMBER_SUSPENDED = "member-suspended"
ROLE_NOT_PERMITTED = "role-not-permitted"
UNKNOWN_CHECK = "unknown-check"
LOCAL_CHECK_OF_ANOTHER_COUNCIL = "local-check-of-another-council"
PURPOSE_NOT_PERMITTED = "purpose-not-permitted"
CHECK_NOT_PERMITTED = "check-not-permitted"
CHECK_NOT_IN_FORCE = "check-not-in-force"
LAWFUL_BASIS_MISSING = "lawful-basis-missing"
LAWFUL_BASIS_NOT_PERMITTED = "lawful-basis-not-permitted"
CONSENT_REQUIRED = "consent-required"
CONSENT_WITHDRAWN = "consent-withdrawn"
ASSURANCE_TOO_LOW = "assurance-too-low"
SUBJECT_FIELDS_MISSING = "subject-fields-missing"
CREDENTIAL_REQUIRED = credentials.CREDENTIAL_REQUIRED
CREDENTIAL_INVALID = credentials.CREDENTIAL_INVALID
CREDENTIAL_VOT_TOO_LOW = credentials.CREDENTIAL_VOT_TOO_LOW
SUBJECT_CONTRADICTS_CREDENTIAL = credentials.SUBJECT_CONTRADICTS_CREDENTIAL
NOT_AN_AUDITOR = "not-an-auditor"
SUBJECT_ACCESS_NOT_GRANTED = "subject-access-not-granted"
SUBJECT_ACCESS_GRANT = "subject-access"

# Which refusals each decision can give (the broker's route table declares them per route).
CHECK_REFUSALS = (
    MEMBER_SUSPENDED,
    ROLE_NOT_PERMITTED,
    UNKNOWN_CHECK,
    LOCAL_CHECK_OF_ANOTHER_COUNCIL,
    PURPOSE_NOT_PERMITTED,
    CHECK_NOT_PERMITTED,
    CHECK_NOT_IN_FORCE,
    LAWFUL_BASIS_MISSING,
    LAWFUL_BASIS_NOT_PERMITTED,
    CONSENT_REQUIRED,
    CONSENT_WITHDRAWN,
    ASSURANCE_TOO_LOW,
    SUBJECT_FIELDS_MISSING,
    CREDENTIAL_REQUIRED,
    CREDENTIAL_INVALID,
    CREDENTIAL_VOT_TOO_LOW,
    SUBJECT_CONTRADICTS_CREDENTIAL,
)
AUDIT_REFUSALS = (MEMBER_SUSPENDED, NOT_AN_AUDITOR)
SUBJECT_ACCESS_REFUSALS = (*AUDIT_REFUSALS, SUBJECT_ACCESS_NOT_GRANTED)
WITHDRAWAL_REFUSALS = (MEMBER_SUSPENDED, ROLE_NOT_PERMITTED)
RESIDENT_ACCESS_REFUSALS = (MEMBER_SUSPENDED, ROLE_NOT_PERMITTED, CREDENTIAL_INVALID)
REFUSAL_CODES = tuple(
    dict.fromkeys((*SUBJECT_ACCESS_REFUSALS, *CHECK_REFUSALS, *WITHDRAWAL_REFUSALS))
)


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One provider request: which attributes and predicates, and the only subject fields it
    may see."""

    provider: str
    endpoint: str
    timeout_ms: int
    attributes: tuple[str, ...]
    fields: tuple[str, ...]
    max_concurrency: int = 32
    predicates: tuple[Predicate, ...] = ()
    max_batch: int = 1  # up to this many checks' calls may travel as one batch


@dataclass(frozen=True, slots=True)
class Decision:
    purpose: Purpose
    check: Check
    version: CheckVersion
    calls: tuple[PlannedCall, ...]
    unavailable: frozenset[AttributeRef]
    skipped: Mapping[str, str] = field(default_factory=dict)
    # the verified credential, and the query with the subject derived from it
    identity: CoreIdentity | None = None
    query: EligibilityQuery | None = None


def _refuse(code: str, detail: str) -> PolicyRefusal:
    return PolicyRefusal(code, detail)


def decide(
    registry: Registry,
    query: EligibilityQuery,
    *,
    withdrawn: frozenset[str] = frozenset(),
    now: int | None = None,
) -> Decision:
    """Decide a query; ``withdrawn`` holds consent ids the requester has withdrawn, ``now``
    (epoch seconds) is when to look for providers' scheduled outages."""
    member = registry.members.get(query.requester)
    if member is None or not member.active:
        raise _refuse(MEMBER_SUSPENDED, "the requesting member is not active in the scheme")
    if "relying-party" not in member.roles:
        raise _refuse(ROLE_NOT_PERMITTED, "the requesting member may not make eligibility checks")
    check = registry.checks.get(query.check)
    if check is None:
        raise _refuse(UNKNOWN_CHECK, f"no check named {query.check!r} in the registry")
    if not check.may_ask(query.requester):
        raise _refuse(LOCAL_CHECK_OF_ANOTHER_COUNCIL, "this check is another council's local one")
    purpose = registry.purposes.get(query.purpose)
    if purpose is None or query.purpose not in member.purposes:
        raise _refuse(PURPOSE_NOT_PERMITTED, "the member may not use this purpose")
    if query.check not in purpose.checks:
        raise _refuse(CHECK_NOT_PERMITTED, "this purpose does not allow this check")
    version = check.version_on(query.as_of, query.requester)
    if version is None:
        raise _refuse(CHECK_NOT_IN_FORCE, "no version of this check is in force on as_of")
    if query.lawful_basis is None:
        raise _refuse(LAWFUL_BASIS_MISSING, "the query states no lawful basis")
    if query.lawful_basis not in purpose.lawful_bases:
        raise _refuse(LAWFUL_BASIS_NOT_PERMITTED, "this lawful basis is not allowed here")
    if (purpose.consent_required or query.lawful_basis == "consent") and query.consent is None:
        raise _refuse(CONSENT_REQUIRED, "this purpose needs a consent reference")
    if query.consent is not None and query.consent.id in withdrawn:
        raise _refuse(CONSENT_WITHDRAWN, "the cited consent has been withdrawn")
    identity = establish_identity(registry, query, purpose, now=now)
    try:
        if identity is not None:
            query = dataclasses.replace(
                query,
                subject=credentials.subject_from_credential(query.subject, identity),
                assurance=identity.vot,
            )
        if version.min_assurance is not None and (
            query.assurance is None
            or ASSURANCE_LEVELS.index(query.assurance)
            < ASSURANCE_LEVELS.index(version.min_assurance)
        ):
            raise _refuse(ASSURANCE_TOO_LOW, f"this check needs assurance {version.min_assurance}")
        calls, unavailable, skipped = plan(registry, version, query, now=now)
    except PolicyRefusal as refusal:
        refusal.identity = identity  # the record keeps which credential was refused
        raise
    return Decision(purpose, check, version, calls, unavailable, skipped, identity, query)


def establish_identity(
    registry: Registry, query: EligibilityQuery, purpose: Purpose, *, now: int | None
) -> CoreIdentity | None:
    """The verified credential a query carries (``None`` without one), held to what the
    purpose needs. A ``credential`` purpose refuses a query without one; a credential is
    verified whatever the purpose, and a council-asserted ``assurance`` above its ``vot`` is a
    contradiction."""
    needed = purpose.identity
    if query.credential is None:
        if needed.source == "credential":
            raise CredentialRefused(
                credentials.CREDENTIAL_REQUIRED,
                "this purpose needs the resident's identity credential",
            )
        return None
    if now is None:
        raise credentials.invalid("no time to verify the credential at")
    identity = credentials.verify_credential(
        query.credential,
        registry=registry,
        relying_party=query.requester,
        now=now,
        max_age_s=needed.max_age_s,
    )
    if needed.min_vot is not None and not credentials.vot_at_least(identity.vot, needed.min_vot):
        refusal = CredentialRefused(
            credentials.CREDENTIAL_VOT_TOO_LOW,
            f"this purpose needs a credential of vot {needed.min_vot} or above",
        )
        refusal.identity = identity
        raise refusal
    if query.assurance is not None and ASSURANCE_LEVELS.index(
        query.assurance
    ) > ASSURANCE_LEVELS.index(identity.vot):
        refusal = CredentialRefused(
            credentials.SUBJECT_CONTRADICTS_CREDENTIAL,
            "the query's assurance is higher than the credential's vot",
        )
        refusal.identity = identity
        raise refusal
    return identity


def plan(
    registry: Registry, version: CheckVersion, query: EligibilityQuery, *, now: int | None = None
) -> tuple[tuple[PlannedCall, ...], frozenset[AttributeRef], dict[str, str]]:
    """Group the version's attributes (and predicates) by provider. A suspended provider, or
    one in a scheduled outage at ``now``, is not called: its attributes are returned as
    unavailable (they count as undetermined) and the reason is in ``skipped``."""
    by_provider: dict[str, list[AttributeRef]] = defaultdict(list)
    unavailable: set[AttributeRef] = set()
    skipped: dict[str, str] = {}
    for ref in sorted(version.attributes, key=str):
        member = registry.members[ref.provider]
        info = member.provider
        if not member.active:
            skipped[ref.provider] = "suspended"
        elif now is not None and info is not None and info.outage_at(now) is not None:
            skipped[ref.provider] = "scheduled-outage"
        else:
            by_provider[ref.provider].append(ref)
            continue
        unavailable.add(ref)
    calls = []
    present = set(query.subject.fields)
    for provider_id, refs in by_provider.items():
        info = registry.members[provider_id].provider
        if info is None:  # parse_registry_claims guarantees this never happens
            raise _refuse(CHECK_NOT_IN_FORCE, "a rule names a member that is not a provider")
        fields: list[str] = []
        names = [ref.attribute for ref in refs if ref.predicate is None]
        predicates = [ref.predicate for ref in refs if ref.predicate is not None]
        for ref in refs:
            spec = info.attributes[ref.attribute]
            missing = [f for f in spec.required_fields if f not in present]
            if missing:
                raise _refuse(SUBJECT_FIELDS_MISSING, f"this check needs subject fields {missing}")
            fields.extend(f for f in provider_fields(spec) if f in present and f not in fields)
        calls.append(
            PlannedCall(
                provider_id,
                info.endpoint,
                info.timeout_ms,
                tuple(names),
                tuple(fields),
                info.max_concurrency,
                tuple(predicates),
                info.max_batch,
            )
        )
    return tuple(calls), frozenset(unavailable), skipped


def authorize_audit(registry: Registry, member_id: str, *, subject_access: bool = False) -> None:
    """Auditors (an active member with role ``auditor``) read the audit API; subject access
    also needs the ``subject-access`` grant. Councils and providers never read it."""
    member = registry.members.get(member_id)
    if member is None or not member.active:
        raise _refuse(MEMBER_SUSPENDED, "the requesting member is not active in the scheme")
    if "auditor" not in member.roles:
        raise _refuse(NOT_AN_AUDITOR, "only auditors may read the consent log")
    if subject_access and SUBJECT_ACCESS_GRANT not in member.permissions:
        raise _refuse(
            SUBJECT_ACCESS_NOT_GRANTED, "this auditor may not make subject access requests"
        )


def _active_relying_party(registry: Registry, member_id: str, role_detail: str) -> None:
    member = registry.members.get(member_id)
    if member is None or not member.active:
        raise _refuse(MEMBER_SUSPENDED, "the requesting member is not active in the scheme")
    if "relying-party" not in member.roles:
        raise _refuse(ROLE_NOT_PERMITTED, role_detail)


def authorize_resident_access(registry: Registry, member_id: str) -> None:
    """Only an active relying party asks, for a resident signed in to it, who checked them."""
    _active_relying_party(registry, member_id, "only relying parties ask for a resident")


def authorize_withdrawal(registry: Registry, member_id: str) -> None:
    """Only an active relying party records a withdrawal of a consent it holds."""
    _active_relying_party(registry, member_id, "only relying parties record consent withdrawals")
