"""Witness cosignatures verify with an independent implementation: Go's
golang.org/x/mod/sumdb/note opens the checkpoint note, and the Go program in
tests/interop/cosigcheck checks each cosignature/v1 line as C2SP tlog-cosignature defines it
(on crypto/ed25519). It refuses a tampered one."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.go import go_check
from tests.support.witnesses import StandaloneWitness, standalone_witness
from trust.checkpoint import NoteSigner, generate_signer


@pytest.fixture
async def two_witnesses(tmp_path: Path) -> AsyncIterator[list[StandaloneWitness]]:
    log = NoteSigner(generate_signer("example.test/log")[0])
    witnesses = [
        standalone_witness(tmp_path / name, log=log, name=f"witness.test/{name}")
        for name in ("w1", "w2")
    ]
    for witness in witnesses:
        await witness.start()
    yield witnesses
    for witness in witnesses:
        await witness.stop()


def tamper(line: str, offset: int) -> str:
    """The cosignature line with one bit of its decoded bytes flipped at ``offset``."""
    prefix, _, encoded = line.rstrip("\n").rpartition(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[offset] ^= 1
    return f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


async def test_go_verifies_the_witnesses_cosignatures_and_refuses_a_tampered_one(
    two_witnesses: list[StandaloneWitness],
) -> None:
    log = two_witnesses[0].log
    notes = []
    async with aiohttp.ClientSession() as session:
        for old, size in ((0, 3), (3, 11)):
            request = log.request(old, size)
            lines = [await w.post(session, request) for w in two_witnesses]
            assert [status for status, _, _ in lines] == [200, 200]
            notes.append(request.note + "".join(text for _, _, text in lines))
    payload = {
        "log_vkey": log.signer.vkey,
        "witness_vkeys": [w.vkey for w in two_witnesses],
        "notes": notes,
    }
    result = go_check("cosigcheck", payload)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "ok 3 witness.test/w1 witness.test/w2",
        "ok 11 witness.test/w1 witness.test/w2",
    ]

    # not a rubber stamp: a flipped bit in the signature, in the timestamp, or another body
    body, _, signatures = notes[1].partition("\n\n")
    log_line, w1_line, w2_line = signatures.splitlines(keepends=True)
    body3, _, signatures3 = notes[0].partition("\n\n")
    tampered = [
        f"{body}\n\n{log_line}{tamper(w1_line, 20)}{w2_line}",  # the Ed25519 signature
        f"{body}\n\n{log_line}{w1_line}{tamper(w2_line, 11)}",  # the signed timestamp
        f"{body3}\n\n{signatures3.splitlines(keepends=True)[0]}{w1_line}",  # another checkpoint
    ]
    refused = go_check("cosigcheck", {**payload, "notes": tampered})
    assert refused.returncode == 1
    assert [line.rpartition("+")[0] for line in refused.stdout.splitlines()] == [
        "FAIL note: invalid signature for key witness.test/w1",
        "FAIL note: invalid signature for key witness.test/w2",
        "FAIL note: invalid signature for key witness.test/w1",
    ]
