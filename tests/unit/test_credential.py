"""Core identity credentials: the DID document import, verification against the registry, the
subject derived from a credential, and the identity a purpose needs (pure, no network)."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from typing import Any

import pytest

from broker.scheme import dev as devscheme
from connectors.reference import identity as reference_identity
from tests.support import credentials as cred
from trust import credential, policy
from trust.credential import CredentialRefused, verify_credential
from trust.did import parse_did_document
from trust.errors import KeyFormatError, PolicyRefusal, RegistryError
from trust.keys import SigningKey
from trust.messages import EligibilityQuery, parse_subject
from trust.pseudonym import PseudonymKey
from trust.records import record_for
from trust.registry import Anchors, Registry, sign_registry, verify_registry

NOW = 1_795_000_000  # 2026-11-18
KEYS = {m: SigningKey.generate() for m in devscheme.MEMBERS}
OPERATOR = SigningKey.generate()
ANCHORS = Anchors(devscheme.SCHEME, devscheme.OPERATOR, (OPERATOR.verifying_key,))
PORTS = {p: 9001 + i for i, p in enumerate(devscheme.PROVIDERS)}
ATTACK_KEYS = cred.Keys(
    KEYS[devscheme.IDP], KEYS[devscheme.COUNCIL_BLUE_BADGE], SigningKey.generate()
)
BB = devscheme.COUNCIL_BLUE_BADGE
PSEUDONYMS = PseudonymKey("pk-test", b"k" * 32)


def sign(
    *, members: list[dict[str, Any]] | None = None, purposes: list[dict[str, Any]] | None = None
) -> str:
    return sign_registry(
        members=members or devscheme.registry_members(KEYS, PORTS, suspended=()),
        purposes=purposes or devscheme.reference_purposes(),
        checks=devscheme.reference_checks(),
        seq=1,
        scheme=devscheme.SCHEME,
        operator=devscheme.OPERATOR,
        key=OPERATOR,
        now=NOW - 100,
    )


def registry(*, suspended: tuple[str, ...] = ()) -> Registry:
    members = devscheme.registry_members(KEYS, PORTS, suspended=suspended)
    return verify_registry(sign(members=members), ANCHORS, now=NOW)


REGISTRY = registry()


def good(identity: str = "bb-yes-pip-moving", **changes: Any) -> dict[str, Any]:
    claims = cred.one_login_claims(identity, client_id=cred.BLUE_BADGE_CLIENT, now=NOW)
    claims.update(changes)
    return claims


def verify(token: str, *, reg: Registry = REGISTRY, relying_party: str = BB) -> Any:
    return verify_credential(
        token, registry=reg, relying_party=relying_party, now=NOW, max_age_s=3600
    )


def query(token: str | None, purpose: str, **subject: str) -> EligibilityQuery:
    return EligibilityQuery(
        requester=BB,
        jti="j" * 22,
        issued_at=NOW,
        expires_at=NOW + 60,
        check=devscheme.BLUE_BADGE_CHECK,
        purpose=purpose,
        lawful_basis="public-task",
        consent=None,
        as_of=date(2026, 11, 18),
        assurance=None,
        subject=parse_subject(subject, required=()),
        credential=token,
    )


def test_a_credential_signed_by_jwcrypto_in_one_login_shape_verifies() -> None:
    identity = verify(cred.jwcrypto_sign(ATTACK_KEYS.idp, good()))
    assert (identity.provider, identity.vot, identity.vtm) == (
        devscheme.IDP,
        "P2",
        reference_identity.VTM,
    )
    assert identity.family_name == "Sampleton"  # the name without validUntil, not "Formerby"
    assert identity.given_names == "Arthur James"
    assert identity.date_of_birth == "1961-07-02"
    assert "Sampleton" not in repr(identity)
    assert "1961" not in repr(identity)


@pytest.mark.parametrize("attack", cred.ATTACKS, ids=lambda a: a.name)
def test_each_hostile_credential_is_refused_with_its_code(attack: cred.Attack) -> None:
    token = attack.make(ATTACK_KEYS, good())
    if attack.code == credential.CREDENTIAL_VOT_TOO_LOW:  # well formed: refused by the purpose
        purpose = devscheme.BLUE_BADGE_ONLINE
        with pytest.raises(CredentialRefused) as refused:
            policy.decide(REGISTRY, query(token, purpose, postcode="B15 2TT"), now=NOW)
    else:
        with pytest.raises(CredentialRefused) as refused:
            verify(token)
    assert refused.value.code == attack.code
    assert "Sampleton" not in refused.value.reason
    assert "1961" not in refused.value.reason


def test_a_credential_for_another_council_is_refused_when_replayed() -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    with pytest.raises(CredentialRefused, match="verified"):
        verify(token, relying_party=devscheme.COUNCIL_SCHOOLS)


def test_a_suspended_identity_provider_signs_nothing() -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    with pytest.raises(CredentialRefused) as refused:
        verify(token, reg=registry(suspended=(devscheme.IDP,)))
    assert refused.value.reason == "the identity provider is suspended"


def test_the_first_birth_date_is_the_one_used() -> None:
    claims = good()
    claims["vc"]["credentialSubject"]["birthDate"].append({"value": "1962-01-01"})
    identity = verify(cred.jwcrypto_sign(ATTACK_KEYS.idp, claims))
    assert identity.birth_dates == ("1961-07-02", "1962-01-01")
    assert identity.date_of_birth == "1961-07-02"


def test_name_parts_in_any_order_make_the_same_name() -> None:
    claims = good()
    parts = claims["vc"]["credentialSubject"]["name"][1]["nameParts"]
    parts.reverse()  # FamilyName first, then the given names reversed
    identity = verify(cred.jwcrypto_sign(ATTACK_KEYS.idp, claims))
    assert identity.family_name == "Sampleton"
    assert identity.given_names == "James Arthur"


@pytest.mark.parametrize(
    "subject",
    [
        {"family_name": "Sampletonn"},
        {"date_of_birth": "1962-01-01"},
        {"given_names": "Arthur"},
    ],
)
def test_council_fields_that_contradict_the_credential_are_refused(subject: dict[str, str]) -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    with pytest.raises(CredentialRefused) as refused:
        policy.decide(REGISTRY, query(token, "blue-badge-application", **subject), now=NOW)
    assert refused.value.code == credential.SUBJECT_CONTRADICTS_CREDENTIAL
    assert isinstance(refused.value.identity, credential.CoreIdentity)


def test_a_council_birth_date_matching_only_the_second_listed_is_a_contradiction() -> None:
    claims = good()
    claims["vc"]["credentialSubject"]["birthDate"].append({"value": "1962-01-01"})
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, claims)
    with pytest.raises(CredentialRefused) as refused:
        policy.decide(
            REGISTRY, query(token, "blue-badge-application", date_of_birth="1962-01-01"), now=NOW
        )
    assert refused.value.code == credential.SUBJECT_CONTRADICTS_CREDENTIAL


def test_the_decision_takes_name_and_birth_date_from_the_credential() -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    decision = policy.decide(
        REGISTRY,
        query(token, devscheme.BLUE_BADGE_ONLINE, family_name="SAMPLETON", nino="ZX100001A"),
        now=NOW,
    )
    assert decision.query is not None
    assert decision.identity is not None
    assert decision.query.subject.fields == {
        "family_name": "Sampleton",
        "given_names": "Arthur James",
        "date_of_birth": "1961-07-02",
        "nino": "ZX100001A",
    }
    assert decision.query.assurance == "P2"  # the credential's vot, not the council's word


def test_a_credential_purpose_refuses_a_council_asserted_query() -> None:
    council_asserted = query(
        None, devscheme.BLUE_BADGE_ONLINE, family_name="Sampleton", date_of_birth="1961-07-02"
    )
    with pytest.raises(PolicyRefusal) as refused:
        policy.decide(REGISTRY, council_asserted, now=NOW)
    assert refused.value.code == credential.CREDENTIAL_REQUIRED


def test_a_council_assurance_above_the_credential_vot_is_a_contradiction() -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good(vot="P1"))
    claimed = dataclasses.replace(query(token, "blue-badge-application"), assurance="P2")
    with pytest.raises(CredentialRefused) as refused:
        policy.decide(REGISTRY, claimed, now=NOW)
    assert refused.value.code == credential.SUBJECT_CONTRADICTS_CREDENTIAL


def test_vot_ordering_is_explicit_and_unknown_levels_prove_nothing() -> None:
    assert credential.vot_at_least("P2", "P1")
    assert credential.vot_at_least("P2", "P2")
    assert not credential.vot_at_least("P1", "P2")
    assert not credential.vot_at_least("P9", "P1")
    assert not credential.vot_at_least("P2", "Cl.Cm")


def test_the_record_keeps_provider_vot_digest_and_sub_pseudonym_never_the_name() -> None:
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    decision = policy.decide(REGISTRY, query(token, devscheme.BLUE_BADGE_ONLINE), now=NOW)
    assert decision.query is not None
    record = record_for(
        decision.query, key=PSEUDONYMS, now_ms=NOW * 1000, outcome="yes", identity=decision.identity
    )
    body = record.to_json()
    assert body["identity"]["provider"] == devscheme.IDP
    assert body["identity"]["vot"] == "P2"
    assert body["identity"]["credential_digest"] == credential.credential_digest(token)
    text = repr(body)
    for personal in ("Sampleton", "Arthur", "1961-07-02", good()["sub"]):
        assert personal not in text
    assert body["subject"]["person"] is not None


def test_a_refused_credential_is_recorded_by_its_digest_alone() -> None:
    token = cred.unsigned(good(), cred.did_kid(ATTACK_KEYS.idp))
    record = record_for(
        query(token, devscheme.BLUE_BADGE_ONLINE), key=PSEUDONYMS, now_ms=0, outcome="refused"
    )
    assert record.to_json()["identity"] == {
        "credential_digest": credential.credential_digest(token),
        "provider": None,
        "vot": None,
        "vtm": None,
        "subject": None,
    }
    assert record.subject.person is None  # no name was ever established


def test_did_document_keys_keep_their_published_ids() -> None:
    provider = reference_identity.ReferenceIdentityProvider(
        reference_identity.did_signing_key(ATTACK_KEYS.idp)
    )
    keys = parse_did_document(provider.did_document())
    assert keys.did == reference_identity.DID
    assert [k.kid for k in keys.keys] == [cred.did_kid(ATTACK_KEYS.idp)]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(id="did:key:z6Mk"),
        lambda d: d.update(assertionMethod=["did:web:identity.reference.ax-broker.test#k"]),
        lambda d: d["assertionMethod"][0].update(id="did:web:other.example#k"),
        lambda d: d["assertionMethod"][0].update(controller="did:web:other.example"),
        lambda d: d["assertionMethod"][0]["publicKeyJwk"].update(crv="P-384"),
        lambda d: d["assertionMethod"][0]["publicKeyJwk"].update(d="private"),
        lambda d: d["assertionMethod"].append(copy.deepcopy(d["assertionMethod"][0])),
    ],
    ids=[
        "not did:web",
        "a reference, not a key",
        "a key of another DID",
        "controlled by another DID",
        "not P-256",
        "private key material",
        "one id twice",
    ],
)
def test_did_documents_of_another_shape_are_refused(change: Any) -> None:
    document = reference_identity.ReferenceIdentityProvider(
        reference_identity.did_signing_key(ATTACK_KEYS.idp)
    ).did_document()
    change(document)
    with pytest.raises(KeyFormatError):
        parse_did_document(document)


def test_a_registry_refuses_an_identity_provider_key_outside_its_did() -> None:
    members = devscheme.registry_members(KEYS, PORTS, suspended=())
    idp = next(m for m in members if m["id"] == devscheme.IDP)
    idp["keys"][0]["jwk"]["kid"] = "did:web:other.example#k"
    with pytest.raises(RegistryError, match="fragment of its DID"):
        sign(members=members)


def test_an_identity_provider_key_never_verifies_a_member_message() -> None:
    kid = cred.did_kid(ATTACK_KEYS.idp)
    assert REGISTRY.key(kid) is None
    assert REGISTRY.credential_key(kid) is not None
    assert REGISTRY.credential_key(ATTACK_KEYS.council.kid) is None


def test_a_purpose_identity_declaration_of_another_shape_is_refused() -> None:
    purposes = devscheme.reference_purposes()
    purposes[0]["identity"] = {"source": "credential", "min_vot": "P9"}
    with pytest.raises(RegistryError, match="min_vot"):
        sign(purposes=purposes)


def test_a_council_credential_does_not_sign_anyone_in_to_the_resident_page() -> None:
    """The resident page is the broker's own client: a credential issued to a council (say,
    another resident's, captured there) is refused by its ``aud``."""
    token = cred.jwcrypto_sign(ATTACK_KEYS.idp, good())
    with pytest.raises(CredentialRefused) as refused:
        verify(token, relying_party=devscheme.BROKER)
    assert refused.value.reason == "aud is not this relying party's client id"
    resident = good(aud=devscheme.RESIDENT_PAGE_CLIENT_ID)
    assert verify(cred.jwcrypto_sign(ATTACK_KEYS.idp, resident), relying_party=devscheme.BROKER)
