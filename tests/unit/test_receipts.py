"""A council's receipt: the signed answer's (log_index, record_digest) proven against a signed
checkpoint. Attacked with a rewritten log re-signed by the right key, a checkpoint signed by
another key, a stale checkpoint, and mangled proofs and answers."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import date
from typing import Any

import orjson
import pytest

from trust import jws
from trust.checkpoint import Checkpoint, NoteSigner, NoteVerifier, generate_signer, sign_checkpoint
from trust.errors import InvalidMessage, TrustError, VerificationError
from trust.jws import Verified
from trust.keys import SigningKey, b64url_encode
from trust.merkle import MerkleTree
from trust.messages import EligibilityAnswer, answer_claims, new_jti, parse_answer
from trust.receipts import (
    ReceiptNotCovered,
    ReceiptNotProven,
    compare_with_record,
    prove_receipt,
    receipt_leaf,
)

ORIGIN = "axb.test/consent-log"


def digest(n: int) -> bytes:
    return hashlib.sha256(f"record {n}".encode()).digest()


class Log:
    """A log of ``size`` records, its signer and a verifier pinned by the council."""

    def __init__(self, size: int, *, origin: str = ORIGIN) -> None:
        skey, vkey = generate_signer(origin)
        self.signer, self.verifier = NoteSigner(skey), NoteVerifier(vkey)
        self.digests = [digest(n) for n in range(size)]
        self.tree = MerkleTree(receipt_leaf(d) for d in self.digests)

    def note(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        return sign_checkpoint(
            Checkpoint(self.signer.name, size, self.tree.root(size)), self.signer
        )

    def proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self.tree.inclusion_proof(index, self.tree.size if size is None else size)


@pytest.mark.parametrize(("index", "size"), [(0, 1), (0, 7), (3, 7), (6, 7), (100, 1000)])
def test_a_receipt_is_proven_against_a_signed_checkpoint(index: int, size: int) -> None:
    log = Log(size)
    receipt = prove_receipt(
        index, digest(index), note=log.note(), verifier=log.verifier, proof=log.proof(index)
    )
    assert (receipt.index, receipt.record_digest) == (index, digest(index))
    assert receipt.checkpoint.size == size
    assert receipt.checkpoint.root_hash == log.tree.root()
    assert receipt.note == log.note()


def test_a_rewritten_record_fails_even_under_the_right_key() -> None:
    """The operator replaces record 3 and re-signs: the council's signed digest exposes it."""
    log = Log(8)
    log.digests[3] = hashlib.sha256(b"a kinder record").digest()
    log.tree = MerkleTree(receipt_leaf(d) for d in log.digests)
    with pytest.raises(ReceiptNotProven, match="record 3 is not in the log as answered"):
        prove_receipt(3, digest(3), note=log.note(), verifier=log.verifier, proof=log.proof(3))


def test_a_dropped_record_fails() -> None:
    """Record 3 deleted and the rest moved up: index 3 now holds record 4."""
    log = Log(8)
    del log.digests[3]
    log.tree = MerkleTree(receipt_leaf(d) for d in log.digests)
    with pytest.raises(ReceiptNotProven):
        prove_receipt(3, digest(3), note=log.note(), verifier=log.verifier, proof=log.proof(3))


def test_the_wrong_index_or_digest_fails() -> None:
    log = Log(8)
    with pytest.raises(ReceiptNotProven):
        prove_receipt(4, digest(3), note=log.note(), verifier=log.verifier, proof=log.proof(3))
    with pytest.raises(ReceiptNotProven):
        prove_receipt(3, digest(4), note=log.note(), verifier=log.verifier, proof=log.proof(3))


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    log, impostor = Log(8), Log(8)
    with pytest.raises(ReceiptNotProven, match="checkpoint refused"):
        prove_receipt(3, digest(3), note=impostor.note(), verifier=log.verifier, proof=log.proof(3))


def test_a_checkpoint_of_another_log_is_refused() -> None:
    """Same key material is never shared across logs, but the origin is checked anyway."""
    other = Log(8, origin="axb.test/another-log")
    pinned = Log(8)
    with pytest.raises(ReceiptNotProven):
        prove_receipt(3, digest(3), note=other.note(), verifier=pinned.verifier, proof=[])


def test_a_checkpoint_older_than_the_record_is_not_covered_yet() -> None:
    log = Log(8)
    with pytest.raises(ReceiptNotCovered, match="not yet record 5"):
        prove_receipt(5, digest(5), note=log.note(5), verifier=log.verifier, proof=[])
    # ...and it is proven against the next checkpoint
    prove_receipt(5, digest(5), note=log.note(6), verifier=log.verifier, proof=log.proof(5, 6))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[:-1],
        lambda p: [*p, p[0]],
        lambda p: [p[1], p[0], *p[2:]],
        lambda p: [bytes(32), *p[1:]],
        lambda p: [p[0][:31], *p[1:]],
        lambda p: [],
    ],
    ids=["short", "long", "swapped", "zeroed", "truncated-hash", "empty"],
)
def test_mangled_proofs_are_refused(mangle: Any) -> None:
    log = Log(8)
    with pytest.raises(ReceiptNotProven):
        prove_receipt(
            3, digest(3), note=log.note(), verifier=log.verifier, proof=mangle(log.proof(3))
        )


def test_receipt_errors_belong_to_the_trust_root() -> None:
    assert issubclass(ReceiptNotCovered, ReceiptNotProven)
    assert issubclass(ReceiptNotProven, TrustError)


# --- the answer carries the receipt --------------------------------------------------------


def answer(**changes: Any) -> Verified:
    claims = answer_claims(
        EligibilityAnswer(
            broker="axb-broker",
            requester="council-a",
            jti="answer-jti",
            query_jti="query-jti",
            check="blue-badge-automatic",
            check_version=1,
            as_of=date(2026, 11, 27),
            outcome="yes",
            log_index=11,
            record_digest=digest(11),
        ),
        now=1_800_000_000,
    )
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return Verified("axb-broker", "kid", "answer-jti", claims["iat"], claims["exp"], claims)


def test_the_answer_round_trips_its_receipt() -> None:
    parsed = parse_answer(answer(), requester="council-a")
    assert (parsed.log_index, parsed.record_digest) == (11, digest(11))
    assert answer().claims["record_digest"] == base64.b64encode(digest(11)).decode()


GOOD = base64.b64encode(digest(11)).decode()
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# the last character before "=" carries two unused bits: setting one decodes to the same bytes
NON_CANONICAL = GOOD[:42] + _ALPHABET[_ALPHABET.index(GOOD[42]) ^ 1] + "="


def test_the_non_canonical_digest_decodes_to_the_same_bytes() -> None:
    """So refusing it is a real check, not a decoding failure."""
    assert NON_CANONICAL != GOOD
    assert base64.b64decode(NON_CANONICAL) == digest(11)


@pytest.mark.parametrize(
    "value",
    [
        None,  # missing
        "",
        GOOD[:-1],  # padding dropped
        GOOD[:-2] + "==",  # 31 bytes
        base64.b64encode(digest(11) + b"\x00").decode(),  # 33 bytes
        b64url_encode(digest(11)),  # base64url, not the log's base64
        NON_CANONICAL,
        GOOD[:10] + "\n" + GOOD[10:],
        GOOD[:10] + "é" + GOOD[11:],
        digest(11).hex(),
        11,
        [GOOD],
    ],
)
def test_an_answer_without_a_well_formed_record_digest_is_refused(value: Any) -> None:
    with pytest.raises(InvalidMessage, match="record_digest"):
        parse_answer(answer(record_digest=value), requester="council-a")


# --- an auditor checks a council's answer against the log ----------------------------------


def record_for_answer(**changes: Any) -> dict[str, Any]:
    record = {
        "log_index": 11,
        "digest": base64.b64encode(digest(11)).decode(),
        "salt": "c2FsdA==",
        "body": {
            "log_index": 11,
            "query_jti": "query-jti",
            "requester": "council-a",
            "check": "blue-badge-automatic",
            "outcome": "yes",
        },
    }
    record.update(changes)
    return record


def parsed_answer() -> EligibilityAnswer:
    return parse_answer(answer(), requester="council-a")


def test_the_record_an_answer_was_given_on_matches() -> None:
    assert compare_with_record(parsed_answer(), record_for_answer()) == []
    # a pruned record: the digest alone still ties it to the answer
    pruned = {"log_index": 11, "digest": record_for_answer()["digest"], "pruned": True}
    assert compare_with_record(parsed_answer(), pruned) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"log_index": 12}, "not record 11"),
        ({"digest": base64.b64encode(digest(12)).decode()}, "changed after the answer"),
        (
            {
                "body": {
                    "log_index": 11,
                    "query_jti": "query-jti",
                    "requester": "council-a",
                    "check": "blue-badge-automatic",
                    "outcome": "no",
                }
            },
            "says outcome 'no'",
        ),
        (
            {
                "body": {
                    "log_index": 11,
                    "query_jti": "another",
                    "requester": "council-a",
                    "check": "blue-badge-automatic",
                    "outcome": "yes",
                }
            },
            "says query_jti",
        ),
        (
            {
                "body": {
                    "log_index": 11,
                    "query_jti": "query-jti",
                    "requester": "council-b",
                    "check": "blue-badge-automatic",
                    "outcome": "yes",
                }
            },
            "says requester",
        ),
    ],
)
def test_a_record_that_is_not_the_answers_is_named(changes: dict[str, Any], expected: str) -> None:
    problems = compare_with_record(parsed_answer(), record_for_answer(**changes))
    assert any(expected in p for p in problems), problems


def test_an_expired_answer_verifies_as_issued_and_a_forged_one_does_not() -> None:
    broker_key, council_key = SigningKey.generate(), SigningKey.generate()
    issued = dataclasses.replace(parsed_answer(), jti=new_jti())
    claims = answer_claims(issued, now=1_700_000_000)  # long expired
    token = jws.sign(claims, broker_key, jws.ELIGIBILITY_RESPONSE)

    def broker_keys(kid: str) -> jws.TrustedKey | None:
        key = broker_key.verifying_key
        return jws.TrustedKey("axb-broker", key) if kid == key.kid else None

    verified = jws.verify_as_issued(token, jws.ELIGIBILITY_RESPONSE, keys=broker_keys)
    assert verified.claims["record_digest"] == claims["record_digest"]
    with pytest.raises(VerificationError):  # it has expired for any other purpose
        jws.verify(
            token,
            jws.ELIGIBILITY_RESPONSE,
            keys=broker_keys,
            audience="council-a",
            now=1_800_000_000,
        )
    forged = jws.sign(claims, council_key, jws.ELIGIBILITY_RESPONSE)
    with pytest.raises(VerificationError):
        jws.verify_as_issued(forged, jws.ELIGIBILITY_RESPONSE, keys=broker_keys)
    header, _, signature = token.split(".")
    edited = dict(claims, outcome="no")
    swapped = ".".join([header, b64url_encode(orjson.dumps(edited)), signature])
    with pytest.raises(VerificationError):
        jws.verify_as_issued(swapped, jws.ELIGIBILITY_RESPONSE, keys=broker_keys)
    for broken in ("", "a.b", token.replace(".", "!", 1)):
        with pytest.raises(VerificationError):
            jws.verify_as_issued(broken, jws.ELIGIBILITY_RESPONSE, keys=broker_keys)
