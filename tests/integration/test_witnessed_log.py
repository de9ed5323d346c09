"""The log as a witness client, and the witness policy enforced by councils: two witnesses
(real servers on loopback) cosign the broker's checkpoints; a council proves its receipt only
under a quorum; a witness that goes away stops nothing but the quorum; and a log operator that
forks its history and shows each fork to a different council is caught. Auditors enforce the
policy too: ``axb audit verify --config`` and the audit API's record proofs count a checkpoint
as proven only with a quorum."""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from broker.app_keys import REGISTRY, TRANSPARENCY
from broker.scheme import dev as devscheme
from connectors.config import (
    load_log_key,
    member_identity,
    member_log_key,
    member_witness_policy,
    scheme_files,
)
from connectors.reference.population import subject_of
from members.auditor import AuditClient
from members.council import EligibilityClient
from tests.support.cli import run_axb
from tests.support.councils import blue_badge_answer_token
from tests.support.servers import RunningBroker, StartBroker
from tests.support.witnesses import serve_scheme_witnesses
from trust.cosignature import verified_cosignatures
from trust.messages import EligibilityAnswer
from trust.receipts import ReceiptNotWitnessed
from trust.registry import verify_registry


@pytest.fixture
def listeners() -> Iterator[devscheme.Listeners]:
    with devscheme.Listeners(witnesses=devscheme.WITNESSES) as held:
        yield held


@pytest.fixture
async def witnesses(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners
) -> AsyncIterator[dict[str, web.AppRunner]]:
    running = await serve_scheme_witnesses(scheme, listeners)
    yield running
    for runner in running.values():
        await runner.cleanup()


@pytest.fixture
async def broker(
    start_broker: StartBroker, providers: object, witnesses: dict[str, web.AppRunner]
) -> RunningBroker:
    """The scheme's broker, checkpointing (and so submitting to the witnesses) every 0.2 s."""
    return await start_broker(checkpoint_every_seconds=0.2)


def council(scheme: devscheme.DevScheme, member_id: str, broker_url: str) -> EligibilityClient:
    config = scheme.council_config(member_id)
    return EligibilityClient(
        **{**member_identity(config), "broker_url": broker_url},
        log_key=member_log_key(config),
        witness_policy=member_witness_policy(config, now=int(time.time())),
    )


async def blue_badge(client: EligibilityClient, who: str = "bb-yes-dla") -> EligibilityAnswer:
    return await client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of(who),
        assurance="P2",
    )


async def free_school_meals(client: EligibilityClient) -> EligibilityAnswer:
    return await client.check(
        devscheme.FSM_CHECK,
        purpose="free-school-meals-application",
        subject=subject_of("fsm-yes-income-support"),
        assurance="P2",
    )


async def cosigned_note(broker: RunningBroker) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{broker.url}/v1/log/checkpoint/cosigned") as response,
    ):
        return response.status, await response.text()


async def test_both_witnesses_cosign_and_the_council_proves_its_receipt_under_the_policy(
    scheme: devscheme.DevScheme,
    witnesses: dict[str, web.AppRunner],
    broker: RunningBroker,
) -> None:
    policy = broker.app[REGISTRY].current().witness_policy
    assert policy is not None
    assert policy.describe() == "2 of 2 in dev-witnesses"
    async with council(scheme, devscheme.COUNCIL_BLUE_BADGE, broker.url) as client:
        answer = await blue_badge(client, "bb-yes-dla")
        receipt = await client.prove_receipt(answer, wait_s=10, poll_s=0.1)
    assert receipt.checkpoint.size > answer.log_index
    found = verified_cosignatures(receipt.note, policy.verifiers(), now=int(time.time()))
    assert set(found) == {"witness.dev/a", "witness.dev/b"}


async def test_the_log_keeps_going_when_a_witness_is_down_but_receipts_lack_a_quorum(
    scheme: devscheme.DevScheme,
    witnesses: dict[str, web.AppRunner],
    broker: RunningBroker,
) -> None:
    await witnesses.pop("witness-b").cleanup()  # witness B is gone: connections are refused
    async with council(scheme, devscheme.COUNCIL_BLUE_BADGE, broker.url) as client:
        indices = [
            (await blue_badge(client)).log_index for _ in range(3)
        ]  # checks are answered as ever
        assert indices == [0, 1, 2]
        answer = await blue_badge(client, "bb-no")
        with pytest.raises(ReceiptNotWitnessed, match="short of the policy's quorum 2 of 2"):
            await client.prove_receipt(answer, wait_s=1.5, poll_s=0.1)
    status, note = await cosigned_note(broker)
    assert status == 200  # witness A still cosigns
    policy = broker.app[REGISTRY].current().witness_policy
    assert policy is not None
    assert set(verified_cosignatures(note, policy.verifiers(), now=int(time.time()))) == {
        "witness.dev/a"
    }


async def test_a_log_forked_for_two_councils_leaves_one_unable_to_prove_its_receipt(
    scheme: devscheme.DevScheme,
    start_broker: StartBroker,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    """The operator runs two logs under the one log key: the same origin, two histories. Each
    council sees only its own fork, and each fork's checkpoints verify under the log key. The
    witnesses cosign whichever history they see first and refuse the other (409, then 422)."""
    honest = broker
    async with council(scheme, devscheme.COUNCIL_BLUE_BADGE, honest.url) as first:
        answer = await blue_badge(first, "bb-yes-dla")
        await first.prove_receipt(answer, wait_s=10, poll_s=0.1)  # both witnesses cosigned
    fork = await start_broker(
        port=0, consent_log=str(tmp_path / "fork.sqlite3"), checkpoint_every_seconds=0.2
    )
    async with council(scheme, devscheme.COUNCIL_SCHOOLS, fork.url) as second:
        forked = await free_school_meals(second)
        for _ in range(3):  # the fork grows past the honest log's size, to no avail
            await free_school_meals(second)
        assert forked.log_index == answer.log_index  # the same index, another record
        with pytest.raises(ReceiptNotWitnessed):
            await second.prove_receipt(forked, wait_s=2, poll_s=0.1)
    assert (await cosigned_note(fork))[0] == 404  # no witness cosigned any checkpoint of it


async def test_audit_verify_and_receipts_count_only_witnessed_checkpoints(
    scheme: devscheme.DevScheme,
    witnesses: dict[str, web.AppRunner],
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    transparency = broker.app[TRANSPARENCY]
    auditor_config = scheme.folder.auditor_config(devscheme.AUDITOR)
    log_key = load_log_key(scheme.folder.log_verifier_key)
    async with EligibilityClient.from_config(
        scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    ) as council:
        token = await blue_badge_answer_token(council, "bb-yes-dla")
        for _ in range(50):  # until both witnesses cosigned a checkpoint covering it
            cosigned = await transparency.latest_cosigned()
            if cosigned is not None and cosigned[1].count("— witness.dev/") == 2:
                break
            await asyncio.sleep(0.1)
        async with AuditClient.from_config(auditor_config) as auditor:
            assert auditor.witness_policy is not None
            audit = await auditor.audit_receipt(token, log_key)
            assert audit.problems == []
            # witness B goes away; a newer record's checkpoint is never cosigned by both
            await witnesses.pop("witness-b").cleanup()
            newer = await blue_badge_answer_token(council, "bb-no")
            await asyncio.sleep(0.6)
            late = await auditor.audit_receipt(newer, log_key)
            assert any("not yet proven" in p for p in late.problems)
        export = tmp_path / "export.jsonl"
        status, _, err = await run_axb(
            "audit", "export", "--config", str(auditor_config), "--out", str(export)
        )
        assert status == 0, err
    key_file = str(scheme.folder.log_verifier_key)
    status, plain, _ = await run_axb("audit", "verify", str(export), "--log-key", key_file)
    assert status == 0, plain
    status, witnessed, _ = await run_axb(
        "audit", "verify", str(export), "--log-key", key_file, "--config", str(auditor_config)
    )
    assert status == 0, witnessed
    assert "witness policy: 2 of 2 in dev-witnesses" in witnessed
    assert "checkpoints without a quorum (not yet proven): 0" not in witnessed
    assert size_verified(witnessed) == 1
    assert size_verified(plain) == 2


def size_verified(report: str) -> int:
    return int(report.split("verified up to size: ")[1].split()[0])


async def test_a_restarted_broker_catches_up_with_the_witnesses_after_their_409(
    scheme: devscheme.DevScheme,
    witnesses: dict[str, web.AppRunner],
    start_broker: StartBroker,
    providers: object,
    each_log_backend: dict[str, object],
) -> None:
    """A new broker process knows nothing of what the witnesses hold: its first submission
    (``old 0``) is answered 409 with their size, and it retries with a proof from there. The
    cosignatures are kept in the consent log's database (SQLite, then PostgreSQL) and served
    by the restarted process."""
    first = await start_broker(checkpoint_every_seconds=0.2, **each_log_backend)
    async with council(scheme, devscheme.COUNCIL_BLUE_BADGE, first.url) as client:
        await client.prove_receipt(await blue_badge(client), wait_s=10, poll_s=0.1)
    await first.stop()
    again = await start_broker(checkpoint_every_seconds=0.2, **each_log_backend)
    status, note = await cosigned_note(again)
    assert status == 200  # what the first process stored, served by the second
    assert note.count("— witness.dev/") == 2
    async with council(scheme, devscheme.COUNCIL_BLUE_BADGE, again.url) as client:
        answer = await blue_badge(client, "bb-no")
        receipt = await client.prove_receipt(answer, wait_s=10, poll_s=0.1)
    assert receipt.checkpoint.size == 2


def test_a_scheme_change_keeps_the_witness_policy_and_a_suspended_witness_counts_for_nothing(
    scheme: devscheme.DevScheme,
) -> None:
    """The scheme operator's tools (``axb scheme …``) republish the registry with its
    policy; suspending a witness leaves the policy in force and that witness unheard."""
    from broker.scheme import admin

    source = admin.set_status(admin.load_source(scheme.root), "witness-b", "suspended")
    admin.publish(scheme.root, source)
    files = scheme_files(scheme.root, {**tomllib.loads(scheme.broker_config.read_text())})
    registry = verify_registry(files.read_registry(), files.anchors, now=int(time.time()))
    assert registry.seq == 2
    policy = registry.witness_policy
    assert policy is not None
    assert policy.describe() == "2 of 2 in dev-witnesses"
    assert set(policy.verifiers()) == {"witness.dev/a"}  # B's cosignatures are not counted
    assert not policy.satisfied_by({"witness-a"})
