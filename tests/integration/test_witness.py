"""``axb witness serve``: a C2SP tlog-witness on loopback, attacked with bad signatures,
stale sizes, forks and broken proofs, and raced for the rollback the spec warns of."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from broker.witness.settings import WitnessSettings, load_witness_settings
from broker.witness.state import WitnessState
from tests.support.cli import run_axb
from tests.support.witnesses import StandaloneWitness, TestLog, standalone_witness
from trust.checkpoint import NoteSigner, generate_signer
from trust.cosignature import CosignatureVerifier, load_cosigner, verified_cosignatures
from trust.witnessing import WitnessRefusal


@pytest.fixture
async def witness(tmp_path: Path) -> AsyncIterator[StandaloneWitness]:
    running = standalone_witness(tmp_path / "witness")
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_cosigns_a_consistent_checkpoint_with_a_verifiable_cosignature(
    witness: StandaloneWitness, session: aiohttp.ClientSession
) -> None:
    first = witness.log.request(0, 5)
    status, _, lines = await witness.post(session, first)
    assert status == 200
    found = verified_cosignatures(
        first.note + lines, [CosignatureVerifier(witness.vkey)], now=2**40
    )
    assert list(found) == ["witness.test/w1"]
    status, _, lines = await witness.post(session, witness.log.request(5, 12))
    assert status == 200
    assert lines.startswith("— witness.test/w1 ")
    # monitors read the latest cosigned checkpoint at /<sha256 of the origin>/checkpoint
    origin_hash = hashlib.sha256(b"example.test/log").hexdigest()
    async with session.get(f"{witness.url}/{origin_hash}/checkpoint") as response:
        assert response.status == 200
        assert (await response.text()).startswith("example.test/log\n12\n")
    async with session.get(f"{witness.url}/{'0' * 64}/checkpoint") as response:
        assert response.status == 404


async def test_refuses_with_the_status_the_spec_assigns(
    witness: StandaloneWitness, session: aiohttp.ClientSession
) -> None:
    assert (await witness.post(session, witness.log.request(0, 5)))[0] == 200
    stranger = TestLog(NoteSigner(generate_signer("example.test/log")[0]))
    other_log = TestLog(NoteSigner(generate_signer("other.test/log")[0]))
    fork = TestLog(witness.log.signer, salt=b"fork")
    fork.grow(5)
    assert (await witness.post(session, other_log.request(0, 3)))[0] == 404
    assert (await witness.post(session, stranger.request(0, 3)))[0] == 403
    assert (await witness.post(session, b"old 1\nnot a proof\n\nx\n"))[0] == 400
    status, media_type, body = await witness.post(session, witness.log.request(3, 9))
    assert (status, media_type, body) == (409, "text/x.tlog.size", "5\n")
    fork_request = fork.request(0, 9)
    forked = type(fork_request)(5, tuple(fork.tree.consistency_proof(5, 9)), fork_request.note)
    assert (await witness.post(session, forked))[0] == 422
    same_size_other_root = type(forked)(5, (), fork.grow(5))
    assert (await witness.post(session, same_size_other_root))[0] == 422
    # nothing refused moved the witness: it still holds size 5
    status, _, body = await witness.post(session, witness.log.request(0, 9))
    assert (status, body) == (409, "5\n")


async def test_state_survives_a_restart(
    witness: StandaloneWitness, session: aiohttp.ClientSession
) -> None:
    assert (await witness.post(session, witness.log.request(0, 7)))[0] == 200
    await witness.stop()
    await witness.start()
    status, _, body = await witness.post(session, witness.log.request(0, 8))
    assert (status, body) == (409, "7\n")
    assert (await witness.post(session, witness.log.request(7, 8)))[0] == 200


async def test_concurrent_requests_from_one_size_get_one_cosignature_and_never_roll_back(
    witness: StandaloneWitness, session: aiohttp.ClientSession
) -> None:
    """The spec's race: requests all checked against size N. Only one may be cosigned; had two
    been, the smaller one's write could have rolled the witness back."""
    assert (await witness.post(session, witness.log.request(0, 4)))[0] == 200
    witness.log.grow(40)
    requests = [witness.log.request(4, size) for size in range(5, 40)]
    results = await asyncio.gather(*(witness.post(session, r) for r in requests))
    winners = [
        r.note.split("\n")[1]
        for r, (status, _, _) in zip(requests, results, strict=True)
        if status == 200
    ]
    assert len(winners) == 1
    assert all(status == 409 for status, _, _ in results if status != 200)
    status, _, body = await witness.post(session, witness.log.request(0, 40))
    assert (status, body) == (409, f"{winners[0]}\n")


def race(
    states: list[WitnessState], log: TestLog, base: int, settings: WitnessSettings
) -> list[int]:
    """Eight requests from size ``base`` to sizes above it, through alternating connections,
    released together; the size each was cosigned at, or the status it was refused with."""
    barrier = threading.Barrier(8)
    outcomes: list[int] = []
    requests = [log.request(base, base + 1 + i) for i in range(8)]

    def submit(index: int) -> None:
        barrier.wait()
        try:
            states[index % 2].add_checkpoint(
                requests[index], log_keys=settings.log_keys, cosigner=settings.cosigner, now=1
            )
            outcomes.append(base + 1 + index)
        except WitnessRefusal as refusal:
            outcomes.append(-refusal.status)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_processes_sharing_the_state_file_cannot_both_cosign_from_one_size(
    tmp_path: Path,
) -> None:
    """Two connections to the same file (as two witness processes would have), racing threads
    released together: SQLite's write lock makes check-and-persist atomic across them."""
    standalone = standalone_witness(tmp_path / "w")
    settings = load_witness_settings(standalone.config)
    states = [WitnessState(settings.state_path) for _ in range(2)]
    log = standalone.log
    log.grow(60)
    states[0].add_checkpoint(
        log.request(0, 10), log_keys=settings.log_keys, cosigner=settings.cosigner, now=1
    )
    for base in (10, 20, 30, 40, 50):
        outcomes = race(states, log, base, settings)
        won = [size for size in outcomes if size > 0]
        assert len(won) == 1, outcomes
        assert sorted(outcomes)[:-1] == [-409] * 7
        latest = states[1].latest("example.test/log")
        assert latest is not None
        assert latest[0] == won[0]
        # the next round starts from size base + 10
        states[0].add_checkpoint(
            log.request(won[0], base + 10),
            log_keys=settings.log_keys,
            cosigner=settings.cosigner,
            now=1,
        )
    for state in states:
        state.close()


async def test_keygen_writes_a_private_key_once_and_prints_the_verifier_key(
    tmp_path: Path,
) -> None:
    out = tmp_path / "secrets" / "w1.skey"
    status, printed, _ = await run_axb(
        "witness", "keygen", "--name", "w.test/w1", "--out", str(out)
    )
    assert status == 0
    vkey = CosignatureVerifier(printed.strip())
    assert vkey.name == "w.test/w1"
    assert load_cosigner(out.read_text().strip()).vkey == vkey.vkey
    assert out.stat().st_mode & 0o077 == 0  # readable by its owner only
    status, _, err = await run_axb("witness", "keygen", "--name", "w.test/w1", "--out", str(out))
    assert status == 2
    assert "never overwritten" in err
