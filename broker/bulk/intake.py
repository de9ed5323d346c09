"""``POST /v1/bulk/jobs``: accept a job, or refuse it having started nothing.

The signed manifest (header ``Bulk-Manifest``) passes the gate like any member message (so a
replayed manifest is refused as any failed verification); the policy is decided once for the
job before a byte of the items is read. The items file (the body, ``application/x-ndjson`` or
``text/csv`` as the manifest says) is taken whole first, into a temporary file beyond 1 MiB
(memory stays bounded, and a slow store never holds the upload open past the body timeout),
then read through :class:`trust.bulk.ItemsReader` into the job store in batches, under the
intake's lease. A bad row, a digest or count that does not match, or a body over the size
limit discards what was stored: the job never existed.
"""

from __future__ import annotations

import secrets
import tempfile
from datetime import UTC, datetime

import orjson
import structlog
from aiohttp import web

from broker.app_keys import CLOCK, GATE, SETTINGS, STORES
from broker.bulk.service import BULK
from broker.errors import BadRequest
from broker.stores.consent_log.jobs import Job, ManifestReused
from trust import bulk, jws
from trust.errors import VerificationError

MANIFEST_HEADER = "Bulk-Manifest"
_BATCH_ROWS = 5000
_SPOOL_IN_MEMORY = 1024 * 1024  # a larger items file waits in a temporary file
_READ_BYTES = 256 * 1024


def _today(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


async def receive_job(request: web.Request) -> Job:
    app = request.app
    settings, service = app[SETTINGS], app[BULK]
    token = request.headers.get(MANIFEST_HEADER, "").strip()
    if not token:
        raise VerificationError("no bulk manifest")

    def parse(verified: jws.Verified, now: float) -> bulk.BulkManifest:
        return bulk.parse_manifest(
            verified, today=_today(now).date(), max_items=settings.bulk_max_items
        )

    passed = await app[GATE].admit(
        token.encode("ascii", "replace"),
        bulk.BULK_MANIFEST,
        parse,
        log_context=lambda m: {"requester": m.requester, "check": m.check, "purpose": m.purpose},
    )
    manifest, now = passed.message, passed.now
    media_type = bulk.MEDIA_TYPES[manifest.format]
    if request.content_type != media_type:
        raise BadRequest("unsupported-media-type", f"the manifest says {media_type}", 415)
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise BadRequest("unsupported-media-type", "send the items without Content-Encoding", 415)
    too_large = BadRequest(
        "too-large", f"an items file holds at most {settings.bulk_max_bytes} bytes", 413
    )
    if (request.content_length or 0) > settings.bulk_max_bytes:
        raise too_large
    shared = bulk.decide_job(passed.registry, manifest, now=int(now))  # 403 if refused
    member = passed.registry.members.get(manifest.requester)
    if manifest.notify and (member is None or member.bulk_callback is None):
        raise BadRequest(
            "bulk-callback-missing",
            "the manifest asks for a notice, and the registry names no bulk_callback for you",
            422,
        )
    reader = bulk.ItemsReader(
        manifest,
        required_fields=shared.required_fields,
        consent_required=shared.consent_required,
        today=_today(now).date(),
        max_items=settings.bulk_max_items,
    )
    store = service.store
    job_id = secrets.token_hex(16)
    lease_ms = int(settings.bulk_lease_s * 1000)
    now_ms = int(now * 1000)
    try:
        await store.create(
            job_id=job_id,
            requester=manifest.requester,
            manifest_jti=manifest.jti,
            manifest=bulk.manifest_json(manifest),
            items=manifest.items,
            owner=service.runner.owner,
            now_ms=now_ms,
            lease_until_ms=now_ms + lease_ms,
        )
    except ManifestReused:
        raise VerificationError("bulk manifest used before") from None
    structlog.contextvars.bind_contextvars(job=job_id)
    try:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            # Take the whole body first (the body timeout counts until it has arrived), then
            # read its rows at the pace of validation and the store.
            size = 0
            async for piece in request.content.iter_chunked(_READ_BYTES):
                size += len(piece)
                if size > settings.bulk_max_bytes:
                    raise too_large
                spool.write(piece)
            spool.seek(0)
            batch: list[bulk.BulkRow] = []
            while piece := spool.read(_READ_BYTES):
                batch += reader.feed(piece)
                if len(batch) >= _BATCH_ROWS:
                    await _store_rows(request, job_id, batch, lease_ms)
                    batch = []
        batch += reader.finish()
        await _store_rows(request, job_id, batch, lease_ms)
        start_index = await app[STORES].consent_log.size()
        job = await store.queue(job_id, start_index=start_index, now_ms=_now_ms(request))
    except BaseException:
        await store.discard(job_id)
        raise
    service.runner.wake()
    return job


def _now_ms(request: web.Request) -> int:
    return int(request.app[CLOCK]() * 1000)


async def _store_rows(
    request: web.Request, job_id: str, rows: list[bulk.BulkRow], lease_ms: int
) -> None:
    if not rows:
        return
    subjects = [
        (
            row.row,
            row.subject_key(),
            orjson.dumps(dict(row.subject.fields)).decode(),
            None if row.consent is None else orjson.dumps(row.consent.to_json()).decode(),
        )
        for row in rows
    ]
    await request.app[BULK].store.add_items(
        job_id,
        [(row.row, row.ref, key) for row, (_, key, _, _) in zip(rows, subjects, strict=True)],
        subjects,
        lease_until_ms=_now_ms(request) + lease_ms,
    )
