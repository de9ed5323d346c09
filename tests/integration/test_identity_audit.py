"""What auditors see of identity: checks filtered by identity provider, and the share of checks
whose identity came from a verified credential, on each consent-log backend; and a log written
before identity providers existed opens with the new column added."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from broker.scheme import dev as devscheme
from broker.stores.consent_log import RecordFilter, open_consent_log
from broker.stores.consent_log.columns import schema
from broker.stores.consent_log.location import SqliteLocation
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.council import EligibilityClient
from members.errors import CheckFailed
from tests.support import credentials as cred
from tests.support.councils import CouncilKey
from tests.support.servers import RunningBroker

BB = devscheme.BLUE_BADGE_CHECK


@pytest.fixture
def consent_log_overrides(each_log_backend: dict[str, object]) -> dict[str, object]:
    return each_log_backend


async def test_auditors_filter_by_identity_provider_and_see_the_credential_backed_share(
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    council_key: CouncilKey,
    scheme: devscheme.DevScheme,
) -> None:
    idp = council_key(devscheme.IDP)
    now = int(time.time())
    backed = []
    for who in ("bb-yes-pip-moving", "bb-no"):
        claims = cred.one_login_claims(who, client_id=cred.BLUE_BADGE_CLIENT, now=now)
        answer = await blue_badge_client.check(
            BB,
            purpose=devscheme.BLUE_BADGE_ONLINE,
            subject={},
            credential=cred.jwcrypto_sign(idp, claims),
        )
        backed.append(answer.log_index)
    for who in ("bb-yes-dla", "bb-no"):  # council-asserted, face to face
        await blue_badge_client.check(
            BB, purpose="blue-badge-application", subject=subject_of(who), assurance="P2"
        )
    # a refused credential backs nothing
    expired = cred.one_login_claims("bb-no", client_id=cred.BLUE_BADGE_CLIENT, now=now - 7200)
    with pytest.raises(CheckFailed):
        await blue_badge_client.check(
            BB,
            purpose=devscheme.BLUE_BADGE_ONLINE,
            subject={},
            credential=cred.jwcrypto_sign(idp, expired),
        )
    config = scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml"
    async with AuditClient.from_config(config) as auditor:
        found = await auditor.records(identity_provider=devscheme.IDP)
        sources = await auditor.identity_sources(since="2020-01-01")
        nobody = await auditor.records(identity_provider="idp-unknown")
    assert [r["log_index"] for r in found["records"]] == backed
    assert sources == {
        "checks": 5,
        "credential_backed": 2,
        "share_credential_backed": 0.4,
        "by_identity_provider": {devscheme.IDP: 2},
    }
    assert nobody["records"] == []


async def test_a_log_written_before_identity_providers_opens_with_the_column_added(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    old = schema(integer="INTEGER", binary="BLOB").replace(",\n    identity_provider TEXT", "")
    with sqlite3.connect(path) as db:
        db.executescript(old)
        db.execute(
            "INSERT INTO records (log_index, recorded_at_ms, kind, requester, digest) "
            "VALUES (0, 1, 'check', 'council', x'00')"
        )
    log = open_consent_log(SqliteLocation(path))
    await log.start()
    try:
        assert await log.identity_counts(since_ms=None, until_ms=None) == {None: 1}
        assert await log.find(RecordFilter(identity_provider="x"), after=-1, limit=10) == []
    finally:
        await log.close()
