"""Auditors enforce the witness policy: ``axb audit verify --config`` and the audit API's
record proofs count a checkpoint as proven only with a quorum of witness cosignatures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from broker.app_keys import TRANSPARENCY
from broker.scheme import dev as devscheme
from connectors.config import load_log_key
from members.auditor import AuditClient
from members.council import EligibilityClient
from tests.support.cli import run_axb
from tests.support.councils import blue_badge_answer_token
from tests.support.servers import StartBroker
from tests.support.witnesses import serve_scheme_witnesses


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


async def test_audit_verify_and_receipts_count_only_witnessed_checkpoints(
    scheme: devscheme.DevScheme,
    witnesses: dict[str, web.AppRunner],
    start_broker: StartBroker,
    providers: object,
    tmp_path: Path,
) -> None:
    broker = await start_broker(checkpoint_every_seconds=0.2)
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
    assert "witness policy: 2 of 2 (dev-witnesses)" in witnessed
    assert "checkpoints without a quorum (not yet proven): 0" not in witnessed
    assert size_verified(witnessed) == 1
    assert size_verified(plain) == 2


def size_verified(report: str) -> int:
    return int(report.split("verified up to size: ")[1].split()[0])
