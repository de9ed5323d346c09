"""The export format ``axb audit verify`` reads: a header line, every record up to a size,
every checkpoint, and a consistency proof between each pair of consecutive checkpoints."""

from __future__ import annotations

import base64
import itertools
from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson

from broker.stores.consent_log import StoredRecord

EXPORT_CHUNK = 5000


class ExportSource(Protocol):
    """What an export reads: :class:`~broker.transparency.TransparencyLog` is one."""

    @property
    def origin(self) -> str: ...

    async def records(self, start: int, stop: int) -> list[StoredRecord]: ...

    async def checkpoints(self) -> list[tuple[int, str]]: ...

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]: ...


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def record_json(stored: StoredRecord) -> dict[str, Any]:
    """A record as the audit API and the export show it; a pruned one keeps its digest."""
    entry: dict[str, Any] = {"log_index": stored.index, "digest": b64(stored.digest)}
    if stored.body is None or stored.salt is None:
        entry["pruned"] = True
    else:
        entry["salt"] = b64(stored.salt)
        entry["body"] = orjson.loads(stored.body)
    return entry


async def export_lines(log: ExportSource, size: int) -> AsyncIterator[bytes]:
    """The export of ``log`` up to ``size`` records, one JSON line at a time."""
    yield orjson.dumps({"type": "log", "origin": log.origin, "size": size}) + b"\n"
    for start in range(0, size, EXPORT_CHUNK):
        for stored in await log.records(start, min(size, start + EXPORT_CHUNK)):
            yield orjson.dumps({"type": "record", **record_json(stored)}) + b"\n"
    sizes = []
    for checkpoint_size, note in await log.checkpoints():
        if checkpoint_size <= size:
            sizes.append(checkpoint_size)
            yield orjson.dumps({"type": "checkpoint", "note": note}) + b"\n"
    for older, newer in itertools.pairwise(s for s in sizes if s > 0):
        proof = await log.consistency_proof(older, newer)
        line = {"type": "consistency", "from": older, "to": newer, "proof": [b64(h) for h in proof]}
        yield orjson.dumps(line) + b"\n"
