"""What a witness decides, as a pure function: C2SP ``tlog-witness`` ``add-checkpoint``.

A request body is ``old <size>\\n``, up to 63 base64 consistency-proof lines, a blank line and
the signed checkpoint. :func:`judge` takes the parsed request, the log keys the witness trusts
(by origin) and the latest checkpoint it cosigned for that origin, and either returns the
checkpoint to cosign or raises :class:`WitnessRefusal` with the spec's status: 400 malformed,
404 unknown origin, 403 no valid signature by the log's key, 409 when ``old`` is not the size
it last cosigned (with that size), 422 a proof that does not verify or a different root for a
size it already cosigned. The caller must read the latest state, judge and persist in one
transaction (the spec's rollback race), which :mod:`broker.witness.state` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from trust.checkpoint import Checkpoint, NoteVerifier, open_note, parse_checkpoint
from trust.errors import CheckpointError, LogProofError, TrustError
from trust.keys import b64_decode_or_none, b64_encode
from trust.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency

__all__ = ["AddCheckpoint", "WitnessRefusal", "judge", "parse_add_checkpoint"]

MAX_PROOF_LINES: Final = 63
MAX_BODY_BYTES: Final = 64 * 1024
_OLD: Final = re.compile(r"old (0|[1-9][0-9]{0,19})")


class WitnessRefusal(TrustError):
    """The witness will not cosign. ``status`` is the HTTP status the spec assigns; for 409,
    ``latest_size`` is the size the witness last cosigned."""

    def __init__(self, status: int, detail: str, *, latest_size: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.latest_size = latest_size


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: str

    @property
    def origin(self) -> str:
        return self.note.partition("\n")[0]

    def body(self) -> bytes:
        """The request body, as a log sends it."""
        lines = [f"old {self.old_size}", *(b64_encode(h) for h in self.proof)]
        return ("".join(f"{line}\n" for line in lines) + "\n" + self.note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly; raises ``WitnessRefusal(400)``."""
    if len(body) > MAX_BODY_BYTES:
        raise WitnessRefusal(400, "request body too large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, "request body is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep or not note:
        raise WitnessRefusal(400, "no blank line before the checkpoint")
    lines = head.split("\n")
    match = _OLD.fullmatch(lines[0])
    if match is None:
        raise WitnessRefusal(400, "the first line must be 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        decoded = b64_decode_or_none(line)
        if decoded is None or len(decoded) != HASH_SIZE:
            raise WitnessRefusal(400, "a consistency proof line is not one base64 hash")
        proof.append(decoded)
    return AddCheckpoint(int(match.group(1)), tuple(proof), note)


def judge(
    request: AddCheckpoint,
    *,
    log_keys: Mapping[str, NoteVerifier],
    latest: tuple[int, bytes] | None,
) -> tuple[Checkpoint, str]:
    """The checkpoint to cosign and its body text, or ``WitnessRefusal``.

    ``latest`` is ``(size, root hash)`` of the last checkpoint cosigned for the request's
    origin, or ``None`` if the witness never cosigned one (the spec's size zero).
    """
    verifier = log_keys.get(request.origin)
    if verifier is None:
        raise WitnessRefusal(404, "unknown log origin")
    try:
        text = open_note(request.note, verifier)
    except CheckpointError as exc:
        raise WitnessRefusal(403, f"checkpoint not signed by the log's key: {exc}") from exc
    try:
        checkpoint = parse_checkpoint(text)
    except CheckpointError as exc:
        raise WitnessRefusal(400, f"malformed checkpoint: {exc}") from exc
    if request.old_size > checkpoint.size:
        raise WitnessRefusal(400, "old size is larger than the checkpoint's size")
    latest_size, latest_root = latest if latest is not None else (0, EMPTY_ROOT)
    if request.old_size != latest_size:
        raise WitnessRefusal(
            409, f"the latest cosigned size is {latest_size}", latest_size=latest_size
        )
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
        raise WitnessRefusal(422, "a checkpoint of size 0 must have the empty root")
    if request.old_size == 0 and request.proof:
        raise WitnessRefusal(422, "no consistency proof is needed from size 0")
    if request.old_size == 0:
        return checkpoint, text
    try:
        verify_consistency(
            latest_size, checkpoint.size, latest_root, checkpoint.root_hash, request.proof
        )
    except LogProofError as exc:
        detail = f"not consistent with the latest cosigned checkpoint: {exc}"
        raise WitnessRefusal(422, detail) from exc
    return checkpoint, text
