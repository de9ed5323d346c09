"""Offline verification of a consent-log export, trusting only the log's public key.

Rebuilds the Merkle tree from the exported records, checks every checkpoint's signature, that
each checkpoint's root matches the records, that consecutive checkpoints are consistent
(RFC 9162 proofs), and that each record matches its committed digest. It names what is wrong:
a modified, deleted, inserted or reordered record, a forged or rolled-back checkpoint, a fork.
Pruned records (body and salt deleted after the retention period) are reported as pruned.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from trust.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from trust.errors import CheckpointError, LogProofError
from trust.keys import b64_decode_or_none
from trust.merkle import MerkleTree, leaf_hash, verify_consistency, verify_inclusion
from trust.records import canonical_json, leaf_input, record_digest
from trust.witness_policy import WitnessPolicy, open_witnessed_checkpoint, require_quorum


@dataclass
class VerifyReport:
    records: int = 0
    pruned: list[tuple[int, int]] = field(default_factory=list)
    checkpoints: int = 0
    verified_size: int = 0
    problems: list[str] = field(default_factory=list)
    # under a witness policy: checkpoints that verify but lack a quorum (not yet proven)
    unwitnessed: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append(text)

    def mark_pruned(self, index: int) -> None:
        if self.pruned and self.pruned[-1][1] == index - 1:
            self.pruned[-1] = (self.pruned[-1][0], index)
        else:
            self.pruned.append((index, index))


def _check_record(line_no: int, item: dict[str, Any], report: VerifyReport) -> bytes | None:
    """The record's digest if it stands on its own, else None (with the problem reported)."""
    index = item["log_index"]
    digest = b64_decode_or_none(item.get("digest"))
    if digest is None or len(digest) != 32:
        report.problem(f"line {line_no}: record {index} has no valid digest (modified)")
        return None
    if item.get("pruned") is True:
        report.mark_pruned(index)
        return digest
    salt, body = b64_decode_or_none(item.get("salt")), item.get("body")
    if salt is None or not isinstance(body, dict):
        report.problem(f"line {line_no}: record {index} lacks its salt or body (modified)")
        return digest
    if body.get("log_index") != index:
        report.problem(
            f"line {line_no}: record {index} carries log_index {body.get('log_index')} "
            "(moved or inserted)"
        )
    try:
        canonical = canonical_json(body)
    except TypeError:
        report.problem(f"line {line_no}: record {index} is not canonical JSON (modified)")
        return digest
    if record_digest(salt, canonical) != digest:
        report.problem(f"line {line_no}: record {index} does not match its digest (modified)")
    return digest


def verify_export(
    lines: Iterable[bytes],
    verifier: NoteVerifier,
    *,
    held: Iterable[str] = (),
    policy: WitnessPolicy | None = None,
    now: int = 0,
) -> VerifyReport:
    """Verify an export. ``held`` are checkpoint notes the auditor kept from earlier: the
    export must extend each of them, or the log was rolled back or forked. Under a witness
    ``policy`` a checkpoint without a quorum of cosignatures proves nothing yet: it is listed
    in ``unwitnessed`` and ``verified_size`` stops at the largest witnessed one."""
    report = VerifyReport()
    digests: dict[int, bytes] = {}
    notes: list[tuple[int, str]] = []
    proofs: dict[tuple[int, int], list[bytes] | None] = {}
    header: dict[str, Any] | None = None
    last_index = -1
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            report.problem(f"line {line_no}: not valid JSON (damaged or modified)")
            continue
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "log" and header is None:
            header = item
        elif kind == "record" and type(item.get("log_index")) is int and item["log_index"] >= 0:
            index = item["log_index"]
            report.records += 1
            if index in digests:
                report.problem(f"line {line_no}: record {index} appears twice (inserted)")
                continue
            if index < last_index:
                report.problem(
                    f"line {line_no}: record {index} comes after record {last_index} (reordered)"
                )
            last_index = max(last_index, index)
            digest = _check_record(line_no, item, report)
            if digest is not None:
                digests[index] = digest
        elif kind == "checkpoint" and isinstance(item.get("note"), str):
            notes.append((line_no, item["note"]))
        elif (
            kind == "consistency" and type(item.get("from")) is int and type(item.get("to")) is int
        ):
            hashes = [b64_decode_or_none(h) for h in item.get("proof", [])]
            valid = all(h is not None and len(h) == 32 for h in hashes)
            proofs[(item["from"], item["to"])] = [h for h in hashes if h] if valid else None
        else:
            report.problem(f"line {line_no}: not a log, record or checkpoint line (modified)")
    if header is None or not isinstance(header.get("origin"), str):
        report.problem("the export has no header line naming the log's origin")
        return report
    origin = header["origin"]
    size = header.get("size")
    if type(size) is not int or size < 0:
        report.problem("the header's size is not a non-negative integer")
        return report
    for index in sorted(set(range(size)) - set(digests)):
        report.problem(f"record {index} is missing (deleted)")
    for index in sorted(i for i in digests if i >= size):
        report.problem(f"record {index} is beyond the log's size {size} (inserted)")
    tree = MerkleTree()
    for index in range(size):
        if index not in digests:
            break
        tree.append(leaf_hash(leaf_input(digests[index])))
    witnessing = None if policy is None else (policy, now)
    _verify_checkpoints(notes, proofs, verifier, origin, tree, size, report, witnessing)
    for note in held:
        try:
            kept = open_checkpoint(note, verifier, origin)
        except CheckpointError as exc:
            report.problem(f"a checkpoint you hold does not verify: {exc}")
            continue
        if kept.size > size:
            report.problem(
                f"rolled back: you hold a checkpoint of size {kept.size}, the export has {size}"
            )
        elif kept.size <= tree.size and tree.root(kept.size) != kept.root_hash:
            report.problem(
                f"fork: the records do not extend the checkpoint of size {kept.size} you hold"
            )
    return report


def _verify_checkpoints(
    notes: list[tuple[int, str]],
    proofs: dict[tuple[int, int], list[bytes] | None],
    verifier: NoteVerifier,
    origin: str,
    tree: MerkleTree,
    size: int,
    report: VerifyReport,
    witnessing: tuple[WitnessPolicy, int] | None = None,
) -> None:
    opened: list[Checkpoint] = []
    for line_no, note in notes:
        try:
            checkpoint = open_checkpoint(note, verifier, origin)
        except CheckpointError as exc:
            report.problem(
                f"line {line_no}: checkpoint not signed by the log's key (forged): {exc}"
            )
            continue
        report.checkpoints += 1
        if opened and checkpoint.size < opened[-1].size:
            report.problem(
                f"line {line_no}: checkpoint of size {checkpoint.size} follows one of size "
                f"{opened[-1].size} (rolled back)"
            )
        same = [c for c in opened if c.size == checkpoint.size]
        if any(c.root_hash != checkpoint.root_hash for c in same):
            report.problem(
                f"fork: two signed checkpoints of size {checkpoint.size} with different roots"
            )
        opened.append(checkpoint)
        if checkpoint.size > size:
            report.problem(
                f"line {line_no}: checkpoint of size {checkpoint.size} is beyond the export's "
                f"{size} records (records deleted or the export truncated)"
            )
        elif checkpoint.size > tree.size:
            report.problem(
                f"line {line_no}: checkpoint of size {checkpoint.size} cannot be checked: "
                f"records are missing below it"
            )
        elif tree.root(checkpoint.size) != checkpoint.root_hash:
            report.problem(
                f"line {line_no}: checkpoint of size {checkpoint.size} does not match the "
                "records (a record before it was modified, inserted, deleted or reordered)"
            )
        elif _witnessed(line_no, note, verifier, witnessing, report):
            report.verified_size = max(report.verified_size, checkpoint.size)
    # Consecutive checkpoints must be consistent by the log's own proofs, which depend only on
    # the signed roots: a log rewritten between two checkpoints cannot produce one.
    by_size = sorted({c.size: c for c in opened if c.size > 0}.values(), key=lambda c: c.size)
    for older, newer in itertools.pairwise(by_size):
        proof = proofs.get((older.size, newer.size))
        if proof is None:
            report.problem(
                f"no valid consistency proof between checkpoints {older.size} and {newer.size}"
            )
            continue
        try:
            verify_consistency(older.size, newer.size, older.root_hash, newer.root_hash, proof)
        except LogProofError:
            report.problem(
                f"checkpoints of sizes {older.size} and {newer.size} are not consistent "
                "(the log was rewritten between them: a fork)"
            )
    covered = max((c.size for c in opened), default=0)
    if covered < size:
        report.problem(
            f"records {covered} to {size - 1} are not covered by any signed checkpoint "
            "(inserted after the log's last checkpoint)"
        )
    if not opened:
        report.problem("the export carries no checkpoint signed by the log's key")


def _witnessed(
    line_no: int,
    note: str,
    verifier: NoteVerifier,
    witnessing: tuple[WitnessPolicy, int] | None,
    report: VerifyReport,
) -> bool:
    """Whether a checkpoint that verifies also has the policy's quorum (no policy: yes)."""
    if witnessing is None:
        return True
    policy, now = witnessing
    try:
        witnessed = open_witnessed_checkpoint(note, verifier, policy, now=now)
    except CheckpointError as exc:
        report.problem(f"line {line_no}: a cosignature does not verify (forged): {exc}")
        return False
    if not witnessed.quorum:
        report.unwitnessed.append(witnessed.size)
    return witnessed.quorum


def verify_record(
    item: dict[str, Any],
    note: str,
    proof: Iterable[Any],
    verifier: NoteVerifier,
    *,
    policy: WitnessPolicy | None = None,
    now: int = 0,
) -> VerifyReport:
    """Verify one record as the audit API serves it (``GET /v1/audit/records/{i}``): its body
    against its digest, the checkpoint's signature by the pinned log key, and the inclusion
    proof from its leaf to that checkpoint's root. ``verified_size`` is the checkpoint's size
    when everything holds."""
    report = VerifyReport(records=1)
    index = item.get("log_index")
    if type(index) is not int or index < 0:
        report.problem("the record has no valid log_index")
        return report
    digest = _check_record(1, item, report)
    try:
        checkpoint = open_checkpoint(note, verifier, verifier.name)
    except CheckpointError as exc:
        report.problem(f"checkpoint not signed by the log's key (forged): {exc}")
        return report
    report.checkpoints = 1
    hashes = [b64_decode_or_none(h) for h in proof]
    if digest is None or None in hashes:
        report.problem(f"record {index}: the inclusion proof is malformed")
        return report
    try:
        verify_inclusion(
            leaf_hash(leaf_input(digest)),
            index,
            checkpoint.size,
            [h for h in hashes if h is not None],
            checkpoint.root_hash,
        )
    except LogProofError as exc:
        report.problem(f"record {index} is not in the log's checkpoint: {exc}")
    if policy is not None:
        try:
            require_quorum(note, verifier, policy, now=now)
        except CheckpointError as exc:
            report.problem(f"not yet proven: {exc}")
    if report.ok:
        report.verified_size = checkpoint.size
    return report
