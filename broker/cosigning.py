"""The log as a witness client (C2SP tlog-witness): every new checkpoint goes to each witness
the registry names, with a consistency proof from the size that witness last cosigned.

It runs beside the log, never in a check: a check waits for its record's commit, not for a
checkpoint, and checkpoints wait for no witness. A 409 tells the size the witness holds; the
client retries once from there (another broker process may have been first). A witness that
is down, slow or refusing is logged and tried again at the next checkpoint: the log keeps
going. Each cosignature is verified against the witness's key from the registry before it is
stored beside the checkpoint it cosigns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
import structlog

from broker.transparency import TransparencyLog
from trust.cosignature import verified_cosignatures
from trust.errors import CheckpointError, ProofRequestError
from trust.registry import Registry
from trust.witness_policy import Witness
from trust.witnessing import AddCheckpoint

log = structlog.get_logger("broker.cosigning")
SIZE_MEDIA_TYPE = "text/x.tlog.size"
_MAX_RESPONSE = 64 * 1024


class WitnessClient:
    def __init__(
        self,
        transparency: TransparencyLog,
        registry: Callable[[], Registry],
        session: Callable[[], aiohttp.ClientSession],
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._log = transparency
        self._registry = registry
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._known: dict[str, int] = {}  # witness member id -> the size it last cosigned

    async def run(self, retry_s: float) -> None:
        """Submit each new checkpoint; retry the latest every ``retry_s`` for late witnesses."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._log.signed.wait(), timeout=retry_s)
            self._log.signed.clear()
            try:
                await self.submit_latest()
            except Exception as exc:  # the next round tries again; the log is unaffected
                log.warning("cosigning_failed", error=type(exc).__name__)

    async def submit_latest(self) -> int:
        """Send the latest checkpoint to every active witness; how many cosigned it."""
        latest = self._log.latest
        policy = self._registry().witness_policy
        if latest is None or policy is None:
            return 0
        size, note = latest
        witnesses = [w for w in policy.witnesses.values() if w.active]
        results = await asyncio.gather(*(self._submit(w, size, note) for w in witnesses))
        return sum(results)

    async def _submit(self, witness: Witness, size: int, note: str) -> bool:
        old = self._known.get(witness.member_id, 0)
        for _ in range(2):  # once from what we know, once from what a 409 told us
            if old > size:
                return False  # it holds a newer checkpoint already: the next one goes to it
            try:
                proof = [] if old == 0 else await self._log.consistency_proof(old, size)
                status, media_type, text = await self._post(
                    witness, AddCheckpoint(old, tuple(proof), note)
                )
            except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
                log.warning(
                    "witness_unreachable", witness=witness.member_id, error=type(exc).__name__
                )
                return False
            except ProofRequestError:
                return False
            if status == 200:
                return await self._keep(witness, size, note, text)
            if status == 409 and media_type == SIZE_MEDIA_TYPE and text.strip().isdigit():
                old = int(text.strip())
                self._known[witness.member_id] = old
                continue
            log.warning("witness_refused", witness=witness.member_id, status=status, size=size)
            return False
        return False

    async def _post(self, witness: Witness, request: AddCheckpoint) -> tuple[int, str, str]:
        async with self._session().post(
            f"{witness.url}/add-checkpoint", data=request.body(), timeout=self._timeout
        ) as response:
            body = await response.content.read(_MAX_RESPONSE)
            return response.status, response.content_type, body.decode("utf-8")

    async def _keep(self, witness: Witness, size: int, note: str, lines: str) -> bool:
        try:
            found = verified_cosignatures(note + lines, [witness.verifier], now=int(self._clock()))
        except CheckpointError as exc:
            log.warning("witness_cosignature_refused", witness=witness.member_id, reason=str(exc))
            return False
        cosignature = found.get(witness.name)
        if cosignature is None:
            log.warning("witness_cosignature_missing", witness=witness.member_id, size=size)
            return False
        await self._log.add_cosignature(size, witness.member_id, cosignature.line)
        self._known[witness.member_id] = size
        log.info("checkpoint_cosigned", witness=witness.member_id, size=size)
        return True
