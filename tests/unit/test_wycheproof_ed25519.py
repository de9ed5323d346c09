"""Project Wycheproof Ed25519 vectors against the primitive behind checkpoint signatures.

``trust.checkpoint.verify_ed25519`` is what :class:`~trust.checkpoint.NoteVerifier` calls, so
these vectors exercise exactly the code that decides whether a checkpoint is signed.

The vectors are vendored in ``tests/vectors/wycheproof`` (Apache 2.0; source and licence in
its README). A missing file is a failure, never a skip: a green run must mean the vectors were
actually checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from trust.checkpoint import NoteVerifier, verifier_key, verify_ed25519

ED25519_FILE = "ed25519_test.json"


def vectors_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"


@cache
def load_vectors() -> Mapping[str, Any] | None:
    path = vectors_dir() / ED25519_FILE
    if not path.is_file():
        return None
    document: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def ed25519_cases() -> list[Any]:
    document = load_vectors()
    if document is None:
        # One failing case in place of the vectors, so a missing file fails and never skips.
        return [pytest.param(None, None, id=f"{ED25519_FILE}-MISSING")]
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}")
        for group in document["testGroups"]
        for test in group["tests"]
    ]


@pytest.mark.parametrize(("group", "test"), ed25519_cases())
def test_ed25519_vector(group: Mapping[str, Any] | None, test: Mapping[str, Any] | None) -> None:
    if group is None or test is None:
        pytest.fail(f"Wycheproof vectors not found: {vectors_dir() / ED25519_FILE}")
    public_key = bytes.fromhex(group["publicKey"]["pk"])
    message = bytes.fromhex(test["msg"])
    signature = bytes.fromhex(test["sig"])
    accepted = verify_ed25519(public_key, message, signature)
    if test["result"] == "valid":
        assert accepted, f"tc{test['tcId']} valid signature refused: {test['comment']}"
    elif test["result"] == "invalid":
        assert not accepted, f"tc{test['tcId']} invalid signature accepted: {test['comment']}"
    # "acceptable" (none in the current file) may go either way; stricter is fine.
    # The note verifier built from the same key reaches the same verdict.
    verifier = NoteVerifier(verifier_key("wycheproof", public_key))
    assert verifier.verify(message, signature) is accepted


def test_the_vectors_cover_both_verdicts() -> None:
    document = load_vectors()
    assert document is not None, f"Wycheproof vectors not found: {vectors_dir()}"
    results = [t["result"] for g in document["testGroups"] for t in g["tests"]]
    assert results.count("valid") > 0
    assert results.count("invalid") > 0
    assert len(results) == document["numberOfTests"]
