"""What a council does in a test: its signing key, a Blue Badge check, an answer token it kept."""

from __future__ import annotations

from typing import Protocol

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from trust.keys import SigningKey


class CouncilKey(Protocol):
    """The ``council_key`` fixture: a member's signing key from the test scheme."""

    def __call__(self, member_id: str) -> SigningKey: ...


async def blue_badge_answer_token(client: EligibilityClient, who: str) -> str:
    """A Blue Badge check for the test identity ``who``; the answer token, as a council keeps
    it (verified on the way in)."""
    query, jti = client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of(who),
        assurance="P2",
    )
    _, token = await client.exchange(query, jti)
    return token


async def blue_badge(client: EligibilityClient, who: str = "bb-yes-dla") -> str:
    """A Blue Badge check for the test identity ``who``; its verified outcome."""
    answer = await client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of(who),
        assurance="P2",
    )
    return answer.outcome
