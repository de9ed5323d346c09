"""The consent log: group commit, durability before answer, and no answer without a record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiohttp
import orjson

from broker.scheme import dev as devscheme
from broker.stores.consent_log.sqlite import SqliteConsentLog
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.logdb import gather_indices
from tests.support.servers import RunningBroker
from trust.messages import EligibilityQuery, Subject
from trust.pseudonym import PseudonymKey
from trust.records import record_for

KEY = PseudonymKey("pk-test", b"k" * 32)


def _query(n: int) -> EligibilityQuery:
    from datetime import date

    return EligibilityQuery(
        requester="council",
        jti=f"jti-{n:030d}",
        issued_at=0,
        expires_at=60,
        check="blue-badge-automatic",
        purpose="blue-badge-application",
        lawful_basis="public-task",
        consent=None,
        as_of=date(2026, 11, 27),
        assurance="P2",
        subject=Subject({"family_name": "Testwell", "date_of_birth": "2016-03-14"}),
    )


async def test_concurrent_appends_share_commits_and_get_consecutive_indices(
    tmp_path: Path,
) -> None:
    log = SqliteConsentLog(tmp_path / "log.sqlite3")
    await log.start()
    records = [record_for(_query(n), key=KEY, now_ms=n, outcome="yes") for n in range(500)]
    indices = await gather_indices(*(log.append(r) for r in records))
    commits = log.commits
    await log.close()
    assert sorted(indices) == list(range(500))
    assert commits < 100, "concurrent appends should share commits (group commit)"
    db = sqlite3.connect(tmp_path / "log.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM records").fetchone() == (500,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_log_reopens_and_continues_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    first = SqliteConsentLog(path)
    await first.start()
    await first.append(record_for(_query(1), key=KEY, now_ms=1, outcome="no"))
    await first.close()
    second = SqliteConsentLog(path)
    await second.start()
    index = (await second.append(record_for(_query(2), key=KEY, now_ms=2, outcome="yes"))).index
    await second.close()
    assert index == 1


async def test_record_holds_pseudonyms_never_identifiers(tmp_path: Path) -> None:
    log = SqliteConsentLog(tmp_path / "log.sqlite3")
    await log.start()
    await log.append(record_for(_query(1), key=KEY, now_ms=1, outcome="yes"))
    (stored,) = await log.entries(0, 1)
    await log.close()
    assert stored.body is not None
    text = stored.body.decode()
    body = orjson.loads(stored.body)
    assert "Testwell" not in text
    assert "2016-03-14" not in text
    assert body["subject"]["key_id"] == "pk-test"
    assert len(body["subject"]["person"]) == 43


async def test_no_answer_leaves_when_the_log_cannot_commit(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    ok = await blue_badge_client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-yes-dla"),
        assurance="P2",
    )
    assert ok.outcome == "yes"
    # Sabotage the store underneath the running broker: every commit now fails.
    saboteur = sqlite3.connect(broker.settings.consent_log_path)
    saboteur.execute("DROP TABLE records")
    saboteur.commit()
    token, _ = blue_badge_client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-yes-dla"),
        assurance="P2",
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{broker.url}/v1/checks", data=token, headers={"Content-Type": "application/jwt"}
        ) as response,
    ):
        body = await response.json(content_type=None)
        assert response.status == 503
        assert response.content_type == "application/problem+json"
    assert body["type"] == "urn:ax-broker:problem:log-unavailable"
