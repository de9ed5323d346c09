"""Queries carrying a core identity credential, against a live broker over real HTTP.

The credentials are made by jwcrypto (not this project's code) in the shape One Login documents,
for documented test identities, under the key the reference identity provider's DID document
publishes. A good one drives a Blue Badge check to the identity's documented outcome; each
hostile variant is refused with its problem type and, being admitted (its query verified and its
jti used), recorded with the credential's digest. A credential too large for any query is
refused before admission and recorded nowhere.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.scheme import admin as scheme_admin
from broker.scheme import dev as devscheme
from connectors.reference import identity as reference_identity
from connectors.reference.attributes import EXPECTED_OUTCOMES
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support import credentials as cred
from tests.support.councils import CouncilKey
from tests.support.servers import RunningBroker
from trust.credential import credential_digest
from trust.keys import SigningKey

BB_CHECK = devscheme.BLUE_BADGE_CHECK
ONLINE = devscheme.BLUE_BADGE_ONLINE
PROBLEM = "urn:ax-broker:problem:"


def records(broker: RunningBroker) -> dict[int, dict[str, Any]]:
    with sqlite3.connect(broker.settings.consent_log_path) as db:
        rows = db.execute("SELECT log_index, body FROM records").fetchall()
    return {index: json.loads(body) for index, body in rows}


def attack_keys(council_key: CouncilKey) -> cred.Keys:
    return cred.Keys(
        council_key(devscheme.IDP),
        council_key(devscheme.COUNCIL_BLUE_BADGE),
        SigningKey.generate(),
    )


def good_claims(identity: str = "bb-yes-pip-moving") -> dict[str, Any]:
    return cred.one_login_claims(identity, client_id=cred.BLUE_BADGE_CLIENT, now=int(time.time()))


async def refused(client: EligibilityClient, credential: str, **subject: str) -> dict[str, Any]:
    with pytest.raises(CheckFailed) as failed:
        await client.check(BB_CHECK, purpose=ONLINE, subject=subject, credential=credential)
    assert failed.value.status == 403, failed.value.problem
    problem: dict[str, Any] = failed.value.problem
    return problem


@pytest.mark.parametrize("identity", ["bb-yes-pip-moving", "bb-no", "bb-yes-dla"])
async def test_an_independent_credential_drives_a_check_to_its_documented_outcome(
    identity: str,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    council_key: CouncilKey,
) -> None:
    token = cred.jwcrypto_sign(council_key(devscheme.IDP), good_claims(identity))
    # the council sends no name and no birth date: both come from the credential
    answer = await blue_badge_client.check(BB_CHECK, purpose=ONLINE, subject={}, credential=token)
    assert answer.outcome == EXPECTED_OUTCOMES[identity][BB_CHECK]
    body = records(broker)[answer.log_index]
    assert body["identity"]["provider"] == devscheme.IDP
    assert body["identity"]["vot"] == "P2"
    assert body["identity"]["vtm"] == reference_identity.VTM
    assert body["identity"]["credential_digest"] == credential_digest(token)
    assert body["assurance"] == "P2"
    person = subject_of(identity)
    text = json.dumps(body)
    for personal in (person["family_name"], person["date_of_birth"], good_claims()["sub"]):
        assert personal not in text


async def test_every_hostile_credential_is_refused_and_recorded(
    broker: RunningBroker, blue_badge_client: EligibilityClient, council_key: CouncilKey
) -> None:
    keys = attack_keys(council_key)
    for attack in cred.ATTACKS:
        token = attack.make(keys, good_claims())
        problem = await refused(blue_badge_client, token)
        assert problem["type"] == PROBLEM + attack.code, attack.name
        body = records(broker)[problem["log_index"]]
        assert (body["outcome"], body["refusal"]) == ("refused", attack.code), attack.name
        assert body["identity"]["credential_digest"] == credential_digest(token), attack.name
        assert "detail" not in problem or "Sampleton" not in problem["detail"]


async def test_council_fields_contradicting_the_credential_are_refused_and_recorded(
    broker: RunningBroker, blue_badge_client: EligibilityClient, council_key: CouncilKey
) -> None:
    idp = council_key(devscheme.IDP)
    token = cred.jwcrypto_sign(idp, good_claims())
    for subject in ({"family_name": "Mockford"}, {"date_of_birth": "1941-05-19"}):
        problem = await refused(blue_badge_client, token, **subject)
        assert problem["type"] == PROBLEM + "subject-contradicts-credential"
        recorded = records(broker)[problem["log_index"]]["identity"]
        assert recorded["provider"] == devscheme.IDP  # the credential itself was genuine
    # two birth dates: the first is the one that counts, the council's second is refused
    claims = good_claims()
    claims["vc"]["credentialSubject"]["birthDate"].append({"value": "1962-07-02"})
    problem = await refused(
        blue_badge_client, cred.jwcrypto_sign(idp, claims), date_of_birth="1962-07-02"
    )
    assert problem["type"] == PROBLEM + "subject-contradicts-credential"


async def test_a_credential_replayed_by_another_council_is_refused_by_its_aud(
    broker: RunningBroker, council_key: CouncilKey, scheme: devscheme.DevScheme
) -> None:
    token = cred.jwcrypto_sign(council_key(devscheme.IDP), good_claims("fsm-no"))
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_SCHOOLS)
    ) as schools:
        with pytest.raises(CheckFailed) as failed:
            await schools.check(
                devscheme.FSM_CHECK,
                purpose="free-school-meals-application",
                subject={},
                credential=token,
            )
    assert failed.value.problem["type"] == PROBLEM + "credential-invalid"
    assert records(broker)[failed.value.problem["log_index"]]["requester"] == (
        devscheme.COUNCIL_SCHOOLS
    )


async def test_a_credential_purpose_refuses_a_council_asserted_query(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    with pytest.raises(CheckFailed) as failed:
        await blue_badge_client.check(
            BB_CHECK, purpose=ONLINE, subject=subject_of("bb-yes-dla"), assurance="P2"
        )
    assert failed.value.status == 403
    assert failed.value.problem["type"] == PROBLEM + "credential-required"
    body = records(broker)[failed.value.problem["log_index"]]
    assert body["refusal"] == "credential-required"
    assert "identity" not in body


async def test_a_credential_of_20_kib_is_refused_before_admission(
    broker: RunningBroker, blue_badge_client: EligibilityClient, council_key: CouncilKey
) -> None:
    claims = good_claims()
    claims["vc"]["credentialSubject"]["name"][0]["nameParts"].append(
        {"type": "GivenName", "value": "x" * 20 * 1024}
    )
    before = len(records(broker))
    with pytest.raises(CheckFailed) as failed:
        await blue_badge_client.check(
            BB_CHECK,
            purpose=ONLINE,
            subject={},
            credential=cred.jwcrypto_sign(council_key(devscheme.IDP), claims),
        )
    assert failed.value.status == 413
    assert len(records(broker)) == before


async def test_identity_provider_keys_rotate_through_its_did_document(
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    council_key: CouncilKey,
    scheme: devscheme.DevScheme,
    tmp_path: Path,
) -> None:
    old = council_key(devscheme.IDP)
    new = SigningKey.generate()
    both = reference_identity.did_document(
        reference_identity.DID,
        (
            reference_identity.did_signing_key(old).verifying_key,
            reference_identity.did_signing_key(new).verifying_key,
        ),
    )
    only_new = {**both, "assertionMethod": both["assertionMethod"][1:]}

    async def publish(document: dict[str, Any]) -> None:
        source = scheme_admin.import_did_document(
            scheme_admin.load_source(scheme.root), devscheme.IDP, document
        )
        seq = scheme_admin.publish(scheme.root, source)
        async with aiohttp.ClientSession() as session:
            for _ in range(100):  # the broker polls the registry file
                async with session.get(f"{broker.url}/readyz") as response:
                    if (await response.json())["registry_seq"] == seq:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError("the broker did not take the new registry")

    await publish(both)  # the overlap: both keys sign
    for key in (old, new):
        answer = await blue_badge_client.check(
            BB_CHECK,
            purpose=ONLINE,
            subject={},
            credential=cred.jwcrypto_sign(key, good_claims()),
        )
        assert answer.outcome == "yes"
    await publish(only_new)  # the old key left the document: its validity ends
    await asyncio.sleep(1.1)  # past the not_after second
    problem = await refused(blue_badge_client, cred.jwcrypto_sign(old, good_claims()))
    assert problem["type"] == PROBLEM + "credential-invalid"
    answer = await blue_badge_client.check(
        BB_CHECK, purpose=ONLINE, subject={}, credential=cred.jwcrypto_sign(new, good_claims())
    )
    assert answer.outcome == "yes"
