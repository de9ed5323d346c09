"""A council proves its receipt against the live log, and a log that lies is caught.

The answer's ``log_index`` and ``record_digest`` are signed by the broker; the proof is checked
against a checkpoint signed by the log key the council pinned. A hostile log server on
127.0.0.1 that holds the real log key and serves a rewritten tree, broken proofs, errors or a
checkpoint that never grows is refused each time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import pytest
from aiohttp import web

from broker.app_keys import STORES, TRANSPARENCY
from broker.scheme import dev as devscheme
from connectors.config import member_identity
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.cli import run_axb
from tests.support.councils import blue_badge_answer_token
from tests.support.logdb import edit_record
from tests.support.servers import RunningBroker, start_app, url_of
from trust.checkpoint import Checkpoint, NoteSigner, NoteVerifier, generate_signer, sign_checkpoint
from trust.merkle import MerkleTree
from trust.messages import EligibilityAnswer
from trust.receipts import ReceiptNotCovered, ReceiptNotProven, receipt_leaf


@pytest.fixture
def consent_log_overrides(each_log_backend: dict[str, object]) -> dict[str, object]:
    return each_log_backend  # every broker here runs on SQLite, then on PostgreSQL


async def ask(client: EligibilityClient, who: str = "bb-yes-dla") -> EligibilityAnswer:
    return await client.check(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of(who),
        assurance="P2",
    )


async def test_a_council_proves_its_receipt_against_the_live_log(
    broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    answers = [await ask(blue_badge_client, who) for who in ("bb-yes-dla", "bb-no", "no-match")]
    for answer in answers:
        receipt = await blue_badge_client.prove_receipt(answer, wait_s=0)
        assert receipt.index == answer.log_index
        assert receipt.checkpoint.size > answer.log_index
        # the digest the broker signed is the one the log stores (what an auditor's export shows)
        stored = await broker.app[STORES].consent_log.get(answer.log_index)
        assert stored is not None
        assert stored.digest == answer.record_digest
    assert [a.log_index for a in answers] == [0, 1, 2]


async def test_a_client_pinning_another_log_key_proves_nothing(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    answer = await ask(blue_badge_client)
    _, other_vkey = generate_signer(devscheme.LOG_ORIGIN)  # same name, another key
    config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
    async with EligibilityClient.from_config(config, log_key=NoteVerifier(other_vkey)) as client:
        with pytest.raises(ReceiptNotProven, match="checkpoint refused"):
            await client.prove_receipt(answer, wait_s=0)
    async with EligibilityClient(**member_identity(config)) as unpinned:
        with pytest.raises(ReceiptNotProven, match="no log key is pinned"):
            await unpinned.prove_receipt(answer, wait_s=0)


# --- a hostile log: it holds the real log key --------------------------------------------


Route = Callable[[web.Request], Any]


class HostileLog(Protocol):
    """The ``hostile_log`` fixture: a log server answering ``routes``, and a Blue Badge
    client that asks it (pinning the real log key, which the hostile log holds too)."""

    async def __call__(self, routes: dict[str, Route]) -> EligibilityClient: ...


@pytest.fixture
async def hostile_log(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> AsyncIterator[HostileLog]:
    runners: list[web.AppRunner] = []

    async def serve(routes: dict[str, Route]) -> EligibilityClient:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runners.append(await start_app(app))
        config = scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        identity = {**member_identity(config), "broker_url": url_of(runners[-1])}
        vkey = (scheme.root / "public" / "log.vkey").read_text().strip()
        return EligibilityClient(**identity, log_key=NoteVerifier(vkey))

    yield serve
    for runner in runners:
        await runner.cleanup()


def log_signer(scheme: devscheme.DevScheme) -> NoteSigner:
    return NoteSigner((scheme.root / "secrets" / "log.skey").read_text().strip())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_a_log_rewritten_and_re_signed_with_the_real_key_is_caught(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    hostile_log: HostileLog,
) -> None:
    answers = [await ask(blue_badge_client, who) for who in ("bb-yes-dla", "bb-no", "no-match")]
    target = answers[1]
    real = broker.app[TRANSPARENCY]
    await real.sync()
    leaves = [await real.leaf(i) for i in range(real.size)]
    leaves[target.log_index] = receipt_leaf(bytes(32))  # the operator swaps the record out
    forged = MerkleTree(leaves)
    signer = log_signer(scheme)
    note = sign_checkpoint(Checkpoint(signer.name, forged.size, forged.root()), signer)

    async def checkpoint(_: web.Request) -> web.Response:
        return web.Response(text=note)

    async def inclusion(request: web.Request) -> web.Response:
        index, size = int(request.query["index"]), int(request.query["size"])
        proof = forged.inclusion_proof(index, size)
        return web.json_response({"proof": [b64(h) for h in proof]})

    client = await hostile_log(
        {"/v1/log/checkpoint": checkpoint, "/v1/log/proof/inclusion": inclusion}
    )
    async with client:
        with pytest.raises(ReceiptNotProven, match=f"record {target.log_index} is not in the log"):
            await client.prove_receipt(target, wait_s=0)
        # the records it left alone still prove: the check is of this record, not of the server
        await client.prove_receipt(answers[0], wait_s=0)


@pytest.mark.parametrize(
    "proof_body",
    [
        b"not json",
        b'{"proof": "AAAA"}',
        b'{"proof": ["not base64!"]}',
        b'{"proof": [1, 2]}',
        b"[]",
        b"{}",
    ],
)
async def test_malformed_proofs_are_refused(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    hostile_log: HostileLog,
    proof_body: bytes,
) -> None:
    answer = await ask(blue_badge_client)
    real_note = (await broker.app[TRANSPARENCY].checkpoint())[1]

    async def checkpoint(_: web.Request) -> web.Response:
        return web.Response(text=real_note)

    async def inclusion(_: web.Request) -> web.Response:
        return web.Response(body=proof_body, content_type="application/json")

    client = await hostile_log(
        {"/v1/log/checkpoint": checkpoint, "/v1/log/proof/inclusion": inclusion}
    )
    async with client:
        with pytest.raises(ReceiptNotProven):
            await client.prove_receipt(answer, wait_s=0)


async def test_a_log_that_errors_or_never_covers_the_record_is_refused(
    scheme: devscheme.DevScheme,
    broker: RunningBroker,
    blue_badge_client: EligibilityClient,
    hostile_log: HostileLog,
) -> None:
    answer = await ask(blue_badge_client)
    signer = log_signer(scheme)
    empty = sign_checkpoint(Checkpoint(signer.name, 0, MerkleTree().root()), signer)
    asked = 0

    async def stale(_: web.Request) -> web.Response:
        nonlocal asked
        asked += 1
        return web.Response(text=empty)

    async def failing(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    client = await hostile_log({"/v1/log/checkpoint": stale})
    async with client:
        with pytest.raises(ReceiptNotCovered, match="not yet record 0"):
            await client.prove_receipt(answer, wait_s=0.3, poll_s=0.05)
    assert asked >= 3  # it waited for a newer checkpoint before giving up

    client = await hostile_log({"/v1/log/checkpoint": failing})
    async with client:
        with pytest.raises(ReceiptNotProven, match="500"):
            await client.prove_receipt(answer, wait_s=0)


async def test_axb_check_proves_the_receipt_on_the_command_line(
    scheme: devscheme.DevScheme, broker: RunningBroker
) -> None:
    status, out, err = await run_axb(
        "check",
        "--config",
        str(scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)),
        devscheme.BLUE_BADGE_CHECK,
        "--purpose",
        "blue-badge-application",
        "--family-name",
        subject_of("bb-yes-dla")["family_name"],
        "--date-of-birth",
        subject_of("bb-yes-dla")["date_of_birth"],
        "--assurance",
        "P2",
        "--prove-receipt",
    )
    assert status == 0, err
    printed = json.loads(out)
    assert printed["verified"] is True
    assert printed["receipt"]["proven"] is True
    assert printed["receipt"]["checkpoint_size"] > printed["log_index"]
    stored = await broker.app[STORES].consent_log.get(printed["log_index"])
    assert stored is not None
    assert printed["record_digest"] == base64.b64encode(stored.digest).decode()


# --- an auditor checks a council's kept answer ---------------------------------------------


async def test_an_auditor_checks_a_kept_answer_on_the_command_line(
    scheme: devscheme.DevScheme, broker: RunningBroker, blue_badge_client: EligibilityClient
) -> None:
    kept = {
        who: await blue_badge_answer_token(blue_badge_client, who)
        for who in ("bb-yes-dla", "bb-no")
    }
    token, _ = blue_badge_client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-no"),
        assurance="P2",
    )  # a query, not an answer
    folder = scheme.root / "kept"
    folder.mkdir()
    auditor = str(scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml")
    (folder / "yes.jwt").write_text(kept["bb-yes-dla"] + "\n")
    receipt = ("audit", "receipt", "--config", auditor)
    status, out, err = await run_axb(*receipt, str(folder / "yes.jwt"))
    assert status == 0, out + err
    assert "answer: yes for council-warwickshire-blue-badge, blue-badge-automatic, record 0" in out
    assert "OK: record 0 is the record this answer was given on" in out

    # the operator rewrites record 1 (a "no") as a "yes"
    await edit_record(broker.settings, 1, outcome="yes")
    (folder / "no.jwt").write_text(kept["bb-no"])
    status, out, _ = await run_axb(*receipt, str(folder / "no.jwt"))
    assert status == 1
    assert "PROBLEM line 1: record 1 does not match its digest (modified)" in out
    assert "PROBLEM record 1 says outcome 'yes', the answer 'no'" in out

    # not an answer of this broker: a query signed by the council
    (folder / "query.jwt").write_text(token)
    status, out, _ = await run_axb(
        "audit", "receipt", "--config", auditor, str(folder / "query.jwt")
    )
    assert status == 1
    assert "PROBLEM not an answer signed by this broker" in out
