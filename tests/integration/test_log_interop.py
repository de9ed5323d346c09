"""The log's checkpoints and proofs verify with an independent implementation: Go's
golang.org/x/mod/sumdb/note (C2SP signed notes) and sumdb/tlog (RFC 6962 trees)."""

from __future__ import annotations

import aiohttp

from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.go import go_check
from tests.support.servers import RunningBroker


async def test_checkpoints_and_proofs_verify_with_go_sumdb(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    async def check(identity: str) -> int:
        answer = await blue_badge_client.check(
            devscheme.BLUE_BADGE_CHECK,
            purpose="blue-badge-application",
            subject=subject_of(identity),
            assurance="P2",
        )
        return answer.log_index

    async with aiohttp.ClientSession() as session:

        async def get_text(path: str) -> str:
            async with session.get(broker.url + path) as response:
                assert response.status == 200
                return await response.text()

        async def get_json(path: str) -> dict[str, object]:
            async with session.get(broker.url + path) as response:
                assert response.status == 200
                result: dict[str, object] = await response.json()
                return result

        for identity in ("bb-yes-dla", "bb-no", "no-match", "bb-yes-afcs", "bb-no"):
            await check(identity)
        first = await get_text("/v1/log/checkpoint")
        indices = [await check(i) for i in ("bb-yes-wpms", "bb-no", "no-match") * 3]
        second = await get_text("/v1/log/checkpoint")
        size = int(second.split("\n")[1])
        old = int(first.split("\n")[1])
        assert (old, size) == (5, 14)
        inclusion = [
            await get_json(f"/v1/log/proof/inclusion?index={i}&size={size}") for i in range(size)
        ]
        consistency = [
            await get_json(f"/v1/log/proof/consistency?from={m}&to={size}") for m in (old,)
        ]
        vkey = (await get_text("/v1/log/key")).strip()
    assert set(indices) <= set(range(size))
    result = go_check(
        "logcheck",
        {
            "vkey": vkey,
            "checkpoints": [first, second],
            "inclusion": inclusion,
            "consistency": consistency,
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok inclusion") == size
    assert "ok consistency 5->14" in result.stdout

    # The independent verifier is not a rubber stamp: a forged root is refused.
    forged = second.replace(second.split("\n")[2], "A" * 43 + "=")
    refused = go_check(
        "logcheck", {"vkey": vkey, "checkpoints": [forged], "inclusion": [], "consistency": []}
    )
    assert refused.returncode == 1
    assert "FAIL checkpoint" in refused.stdout
