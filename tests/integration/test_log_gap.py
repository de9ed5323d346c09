"""A consent log with a hole in it cannot be proven: the broker says so as a 503 problem
(``log-unavailable``), never as a plain 500, and signs no checkpoint over it."""

from __future__ import annotations

import aiohttp

from broker.app_keys import TRANSPARENCY
from broker.problems import PROBLEM_MEDIA_TYPE, TYPE_PREFIX
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.logdb import log_sql
from tests.support.servers import RunningBroker


async def test_a_record_deleted_behind_the_broker_is_a_503_not_a_500(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    for who in ("bb-yes-dla", "bb-no", "no-match"):
        await blue_badge_client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of(who),
            assurance="P2",
        )
    signed_before = broker.app[TRANSPARENCY].latest
    await log_sql(broker.settings, "DELETE FROM records WHERE log_index = ?", 1)
    async with aiohttp.ClientSession() as session:
        for target in ("/v1/log/checkpoint", "/v1/log/proof/inclusion?index=0&size=3"):
            async with session.get(broker.url + target) as response:
                assert response.status == 503, target
                assert response.content_type == PROBLEM_MEDIA_TYPE
                body = await response.json(content_type=None)
                assert body["type"] == TYPE_PREFIX + "log-unavailable"
    assert broker.app[TRANSPARENCY].latest == signed_before  # nothing signed over the hole
