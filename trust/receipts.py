"""A council's receipt: proof that the consent record behind a signed answer is in the log.

Every answer carries, under the broker's signature, ``log_index`` and ``record_digest``: the
index its consent record was committed at and that record's salted digest. The log's leaf at
that index is ``leaf_hash(leaf_input(record_digest))``. An RFC 9162 inclusion proof from that
leaf to the root of a checkpoint signed by the log's key — pinned by the council, never taken
from the server — shows that the log holds exactly that record at that index.

Keep the answer and the proven checkpoint note. If the operator later drops or rewrites the
record, no checkpoint that is consistent with the one you hold can hide it; an auditor holding
the export can also check that record ``log_index`` there has ``record_digest``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trust.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from trust.errors import CheckpointError, LogProofError, TrustError
from trust.merkle import leaf_hash, verify_inclusion
from trust.messages import EligibilityAnswer, encode_digest
from trust.records import leaf_input
from trust.witness_policy import WitnessPolicy, require_quorum


class ReceiptNotProven(TrustError):
    """The log did not prove the receipt: a checkpoint not signed by the log's key, or an
    inclusion proof that does not lead from the answer's digest to the checkpoint's root."""


class ReceiptNotCovered(ReceiptNotProven):
    """The checkpoint is older than the record: ask again after the next checkpoint."""


class ReceiptNotWitnessed(ReceiptNotProven):
    """The checkpoint lacks the cosignatures the scheme's witness policy requires: not yet
    proven (the witnesses may still cosign it, or they refused a forked log)."""


@dataclass(frozen=True, slots=True)
class ProvenReceipt:
    """The record at ``index`` with ``record_digest`` is leaf ``index`` of ``checkpoint``."""

    index: int
    record_digest: bytes
    checkpoint: Checkpoint
    note: str  # the signed checkpoint, worth keeping beside the answer


def receipt_leaf(record_digest: bytes) -> bytes:
    """The Merkle leaf hash the log holds for a record with this digest."""
    return leaf_hash(leaf_input(record_digest))


def open_log_checkpoint(note: str, verifier: NoteVerifier) -> Checkpoint:
    """A checkpoint signed by the pinned log key (whose name is the log's origin)."""
    try:
        return open_checkpoint(note, verifier, verifier.name)
    except CheckpointError as exc:
        raise ReceiptNotProven(f"checkpoint refused: {exc}") from exc


def prove_receipt(
    index: int,
    record_digest: bytes,
    *,
    note: str,
    verifier: NoteVerifier,
    proof: Sequence[bytes],
    policy: WitnessPolicy | None = None,
    now: int = 0,
) -> ProvenReceipt:
    """Check an inclusion ``proof`` of the receipt in the signed checkpoint ``note``; under a
    witness ``policy``, the checkpoint must also carry a quorum of cosignatures (as of
    ``now``, POSIX seconds)."""
    checkpoint = open_log_checkpoint(note, verifier)
    if policy is not None:
        try:
            require_quorum(note, verifier, policy, now=now)
        except CheckpointError as exc:
            raise ReceiptNotWitnessed(f"checkpoint not witnessed: {exc}") from exc
    if checkpoint.size <= index:
        raise ReceiptNotCovered(
            f"the latest checkpoint covers {checkpoint.size} records, not yet record {index}"
        )
    try:
        verify_inclusion(
            receipt_leaf(record_digest), index, checkpoint.size, proof, checkpoint.root_hash
        )
    except LogProofError as exc:
        raise ReceiptNotProven(f"record {index} is not in the log as answered: {exc}") from exc
    return ProvenReceipt(index, record_digest, checkpoint, note)


def compare_with_record(answer: EligibilityAnswer, record: Mapping[str, Any]) -> list[str]:
    """What differs between a verified answer's receipt and the log's record at its index, as
    the audit API serves it (an empty list: the record is the one the answer was given on)."""
    index = answer.log_index
    if record.get("log_index") != index:
        return [f"the log served record {record.get('log_index')!r}, not record {index}"]
    problems = []
    if record.get("digest") != encode_digest(answer.record_digest):
        problems.append(
            f"record {index} has another digest than the answer's receipt: "
            "the record was changed after the answer was given"
        )
    body = record.get("body")
    if isinstance(body, Mapping):
        expected = {
            "query_jti": answer.query_jti,
            "requester": answer.requester,
            "check": answer.check,
            "outcome": answer.outcome,
        }
        for name, value in expected.items():
            if body.get(name) != value:
                problems.append(
                    f"record {index} says {name} {body.get(name)!r}, the answer {value!r}"
                )
    return problems
