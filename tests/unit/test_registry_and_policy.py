"""The signed registry (anchors, rollback, staleness, cross-references) and policy decisions."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from broker.scheme import dev as devscheme
from trust import jws, policy
from trust.errors import PolicyRefusal, RegistryError, VerificationError
from trust.keys import SigningKey
from trust.messages import ConsentReference, EligibilityQuery, Subject
from trust.registry import Anchors, Registry, member_document, sign_registry, verify_registry

NOW = 1_790_000_000
KEYS = {m: SigningKey.generate() for m in devscheme.MEMBERS}
OPERATOR = SigningKey.generate()
ANCHORS = Anchors(devscheme.SCHEME, devscheme.OPERATOR, (OPERATOR.verifying_key,))
PORTS = {p: 9001 + i for i, p in enumerate(devscheme.PROVIDERS)}


def members(suspended: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return devscheme.registry_members(KEYS, PORTS, suspended=suspended)


def publish(
    seq: int = 1,
    *,
    key: SigningKey = OPERATOR,
    lifetime: int = 86400,
    member_docs: list[dict[str, Any]] | None = None,
    scheme: str = devscheme.SCHEME,
) -> str:
    return sign_registry(
        members=member_docs if member_docs is not None else members(),
        purposes=devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=seq,
        scheme=scheme,
        operator=devscheme.OPERATOR,
        key=key,
        now=NOW,
        lifetime=lifetime,
    )


def registry(**kwargs: Any) -> Registry:
    return verify_registry(publish(**kwargs), ANCHORS, now=NOW + 10)


def test_verifies_and_indexes_keys_by_kid() -> None:
    reg = registry()
    trusted = reg.key(KEYS[devscheme.DWP].kid)
    assert trusted is not None
    assert trusted.owner == devscheme.DWP


def test_refuses_registry_signed_by_a_key_not_pinned() -> None:
    with pytest.raises(RegistryError, match="not verified"):
        verify_registry(publish(key=SigningKey.generate()), ANCHORS, now=NOW + 10)


def test_refuses_registry_of_another_scheme() -> None:
    with pytest.raises(RegistryError):
        verify_registry(publish(scheme="urn:other"), ANCHORS, now=NOW + 10)


def test_stale_registry_fails_closed() -> None:
    with pytest.raises(RegistryError):
        verify_registry(publish(lifetime=60), ANCHORS, now=NOW + 120)
    assert not registry(lifetime=60).fresh_at(NOW + 61)


def test_refuses_rollback_and_same_seq_with_other_content() -> None:
    current = verify_registry(publish(seq=5), ANCHORS, now=NOW + 10)
    with pytest.raises(RegistryError, match="rollback"):
        verify_registry(publish(seq=4), ANCHORS, now=NOW + 10, current=current)
    with pytest.raises(RegistryError, match="same seq"):
        verify_registry(publish(seq=5), ANCHORS, now=NOW + 10, current=current)
    newer = verify_registry(publish(seq=6), ANCHORS, now=NOW + 10, current=current)
    assert newer.seq == 6


def test_no_anchor_pinned_refuses_everything() -> None:
    with pytest.raises(RegistryError, match="no anchor"):
        verify_registry(publish(), Anchors(devscheme.SCHEME, devscheme.OPERATOR, ()), now=NOW)


def test_refuses_registration_with_private_key_or_duplicate_kid() -> None:
    docs = members()
    leaked = copy.deepcopy(docs)
    leaked[0]["keys"][0]["jwk"]["d"] = "AAAA"
    with pytest.raises(RegistryError, match="private"):
        publish(member_docs=leaked)
    duplicated = copy.deepcopy(docs)
    duplicated[1]["keys"] = duplicated[0]["keys"]
    with pytest.raises(RegistryError, match="registered twice"):
        publish(member_docs=duplicated)


def test_refuses_check_naming_an_attribute_nobody_offers() -> None:
    checks = devscheme.reference_checks()
    checks[0]["versions"][0]["rule"] = {"attribute": f"{devscheme.DWP}/no-such-attribute"}
    with pytest.raises(RegistryError, match="unknown attribute"):
        sign_registry(
            members=members(),
            purposes=devscheme.reference_purposes(),
            checks=checks,
            seq=1,
            scheme=devscheme.SCHEME,
            operator=devscheme.OPERATOR,
            key=OPERATOR,
            now=NOW,
        )


def test_registry_token_has_the_registry_typ() -> None:
    header = jws.decode_compact(publish(), max_bytes=jws.MAX_REGISTRY_BYTES).header
    assert header["typ"] == "trust-registry+jwt"


CONSENT = ConsentReference(
    "consent-123",
    "2026-11-01T10:00:00+00:00",
    "online-form",
    "https://council.example/notice",
    "sha256:" + "0" * 64,
)


def query(**overrides: Any) -> EligibilityQuery:
    fields: dict[str, Any] = {
        "requester": devscheme.COUNCIL_BLUE_BADGE,
        "jti": "j" * 24,
        "issued_at": NOW,
        "expires_at": NOW + 60,
        "check": devscheme.BLUE_BADGE_CHECK,
        "purpose": "blue-badge-application",
        "lawful_basis": "public-task",
        "consent": None,
        "as_of": date(2026, 11, 27),
        "assurance": "P2",
        "subject": Subject(
            {"family_name": "Testwell", "date_of_birth": "2016-03-14", "postcode": "CV34 4RL"}
        ),
    }
    fields.update(overrides)
    return EligibilityQuery(**fields)


def test_allows_a_permitted_query_and_plans_only_declared_fields() -> None:
    decision = policy.decide(registry(), query())
    assert decision.version.version == 1
    (call,) = decision.calls
    assert call.provider == devscheme.DWP
    assert call.fields == ("family_name", "date_of_birth")  # postcode not declared: not sent


def test_free_school_meals_fans_out_to_both_providers() -> None:
    decision = policy.decide(
        registry(),
        query(
            requester=devscheme.COUNCIL_SCHOOLS,
            check=devscheme.FSM_CHECK,
            purpose="free-school-meals-application",
        ),
    )
    assert {c.provider for c in decision.calls} == {devscheme.DWP, devscheme.HMRC}


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"requester": devscheme.AUDITOR}, policy.ROLE_NOT_PERMITTED),
        ({"check": "no-such-check"}, policy.UNKNOWN_CHECK),
        ({"purpose": "free-school-meals-application"}, policy.PURPOSE_NOT_PERMITTED),
        ({"purpose": "no-such-purpose"}, policy.PURPOSE_NOT_PERMITTED),
        ({"as_of": date(2010, 1, 1)}, policy.CHECK_NOT_IN_FORCE),
        ({"lawful_basis": None}, policy.LAWFUL_BASIS_MISSING),
        ({"lawful_basis": "legal-obligation"}, policy.LAWFUL_BASIS_NOT_PERMITTED),
        ({"lawful_basis": "consent"}, policy.CONSENT_REQUIRED),
        ({"assurance": None}, policy.ASSURANCE_TOO_LOW),
        ({"assurance": "P0"}, policy.ASSURANCE_TOO_LOW),
        ({"subject": Subject({"family_name": "X", "given_names": "Y"})}, "subject-fields-missing"),
    ],
)
def test_refuses_what_the_registry_does_not_allow(overrides: dict[str, Any], code: str) -> None:
    with pytest.raises(PolicyRefusal) as refusal:
        policy.decide(registry(), query(**overrides))
    assert refusal.value.code == code


def test_suspended_member_is_refused() -> None:
    reg = registry(member_docs=members(suspended=(devscheme.COUNCIL_BLUE_BADGE,)))
    with pytest.raises(PolicyRefusal) as refusal:
        policy.decide(reg, query())
    assert refusal.value.code == policy.MEMBER_SUSPENDED


def test_consent_purpose_needs_consent_and_refuses_a_withdrawn_one() -> None:
    base = {
        "requester": devscheme.COUNCIL_SCHOOLS,
        "check": devscheme.FSM_CHECK,
        "purpose": "school-uniform-grant",
        "lawful_basis": "consent",
    }
    with pytest.raises(PolicyRefusal) as missing:
        policy.decide(registry(), query(**base))
    assert missing.value.code == policy.CONSENT_REQUIRED
    assert policy.decide(registry(), query(**base, consent=CONSENT)).calls
    with pytest.raises(PolicyRefusal) as withdrawn:
        policy.decide(
            registry(), query(**base, consent=CONSENT), withdrawn=frozenset({"consent-123"})
        )
    assert withdrawn.value.code == policy.CONSENT_WITHDRAWN


def test_suspended_provider_is_not_called_and_counts_as_unavailable() -> None:
    reg = registry(member_docs=members(suspended=(devscheme.HMRC,)))
    decision = policy.decide(
        reg,
        query(
            requester=devscheme.COUNCIL_SCHOOLS,
            check=devscheme.FSM_CHECK,
            purpose="free-school-meals-application",
        ),
    )
    assert {c.provider for c in decision.calls} == {devscheme.DWP}
    assert {ref.provider for ref in decision.unavailable} == {devscheme.HMRC}


def test_a_registry_larger_than_16_kib_verifies_while_messages_stay_bounded() -> None:
    """The registry lists every member: dozens of councils outgrow the 16 KiB of a message."""
    councils = [
        member_document(
            member_id=f"council-{n}",
            name=f"Council number {n}",
            roles=["relying-party"],
            keys=[SigningKey.generate().verifying_key],
        )
        for n in range(40)
    ]
    token = publish(member_docs=[*members(), *councils])
    assert len(token) > jws.MAX_TOKEN_BYTES
    assert "council-39" in verify_registry(token, ANCHORS, now=NOW + 10).members
    big_query = jws.sign({"pad": "x" * jws.MAX_TOKEN_BYTES}, OPERATOR, jws.ELIGIBILITY_QUERY)
    with pytest.raises(VerificationError) as refused:
        jws.verify(big_query, jws.ELIGIBILITY_QUERY, keys=ANCHORS.lookup, audience="x", now=NOW)
    assert refused.value.reason == "token larger than 16 KiB"


def test_a_councils_bulk_callback_is_the_operators_https_or_loopback_url_only() -> None:
    callbacks = {devscheme.COUNCIL_SCHOOLS: "https://schools.example.gov.uk/axb/notices"}
    docs = devscheme.registry_members(KEYS, PORTS, suspended=(), callbacks=callbacks)
    found = verify_registry(publish(member_docs=docs), ANCHORS, now=NOW + 10)
    assert (
        found.members[devscheme.COUNCIL_SCHOOLS].bulk_callback
        == callbacks[devscheme.COUNCIL_SCHOOLS]
    )
    assert found.members[devscheme.COUNCIL_BLUE_BADGE].bulk_callback is None
    for url in ("http://schools.example.gov.uk/n", "ftp://x/y", "", 7):
        bad = copy.deepcopy(docs)
        next(d for d in bad if d["id"] == devscheme.COUNCIL_SCHOOLS)["bulk_callback"] = url
        with pytest.raises(RegistryError, match="bulk_callback"):
            publish(member_docs=bad)
    provider = copy.deepcopy(docs)
    next(d for d in provider if d["id"] == devscheme.DWP)["bulk_callback"] = "https://dwp/x"
    with pytest.raises(RegistryError, match="only a relying party"):
        publish(member_docs=provider)
