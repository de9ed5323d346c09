"""The audit API and the public log endpoints.

Public (anyone may verify the log): ``GET /v1/log/checkpoint``, ``/v1/log/key``,
``/v1/log/proof/inclusion``, ``/v1/log/proof/consistency``.

Auditors only, each request signed (``audit-request+jwt`` bound to method, path+query and body,
replay-protected): records with filters, one record with its inclusion proof, subject access
(needs the ``subject-access`` grant), export for offline verification. Councils record consent
withdrawals with a signed ``consent-withdrawal+jwt``.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from broker.app_keys import REGISTRY, SETTINGS, STORES, TRANSPARENCY
from broker.errors import BadRequest, Replayed
from broker.stores.admission import admit_or_refuse
from broker.stores.consent_log import RecordFilter, StoredRecord
from broker.transparency import TransparencyLog
from connectors.base import read_jwt_body
from trust import jws, policy
from trust.errors import InvalidMessage, ProofRequestError, VerificationError
from trust.messages import parse_audit_request, parse_withdrawal
from trust.pseudonym import pseudonymise_identifiers
from trust.records import WithdrawalRecord
from trust.registry import Registry

MAX_PAGE = 1000
EXPORT_CHUNK = 5000


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def record_json(stored: StoredRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {"log_index": stored.index, "digest": b64(stored.digest)}
    if stored.body is None or stored.salt is None:
        entry["pruned"] = True
    else:
        entry["salt"] = b64(stored.salt)
        entry["body"] = orjson.loads(stored.body)
    return entry


_COUNT = re.compile(r"[0-9]{1,15}")


def _count(raw: str, name: str) -> int:
    """A non-negative integer in ASCII digits (``str.isdigit`` also accepts ``²``)."""
    if not _COUNT.fullmatch(raw):
        raise BadRequest("bad-request", f"{name} must be a non-negative integer")
    return int(raw)


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest("bad-request", f"query parameter {name!r} is required")
        return default
    return _count(raw, name)


def _time_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest("bad-request", f"{name} must be an ISO 8601 date or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def verify_member_message(
    app: web.Application, token: bytes, profile: jws.Profile, registry: Registry, now: float
) -> jws.Verified:
    """A message from a scheme member to this broker, verified against the registry."""
    settings = app[SETTINGS]
    return jws.verify(
        token,
        profile,
        keys=registry.key,
        audience=settings.broker_id,
        now=int(now),
        leeway=settings.leeway_s,
    )


async def authenticate_audit(
    request: web.Request, body: bytes = b"", *, subject_access: bool = False
) -> str:
    """Verify the auditor's signed request; returns the auditor's member id."""
    app = request.app
    settings = app[SETTINGS]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Replayed("no audit token")  # rendered as the same 401 as any failed verification
    token = header.removeprefix("Bearer ").strip().encode("ascii", "replace")
    now = time.time()
    registry = app[REGISTRY].current()
    verified = verify_member_message(app, token, jws.AUDIT_REQUEST, registry, now)
    try:
        audit = parse_audit_request(
            verified, method=request.method, target=request.path_qs, body=body
        )
    except InvalidMessage as exc:  # bound to another request: as any failed verification
        raise VerificationError("audit request binding") from exc
    await admit_or_refuse(
        app[STORES].admission,
        audit.auditor,
        audit.jti,
        expires_at=audit.expires_at + settings.leeway_s,
        now=now,
        limit=settings.rate_limit_per_second,
    )
    policy.authorize_audit(registry, audit.auditor, subject_access=subject_access)
    return audit.auditor


async def get_records(request: web.Request) -> web.Response:
    await authenticate_audit(request)
    where = RecordFilter(
        since_ms=_time_param(request, "since"),
        until_ms=_time_param(request, "until"),
        requester=request.query.get("requester"),
        purpose=request.query.get("purpose"),
        check=request.query.get("check"),
        outcome=request.query.get("outcome"),
        lawful_basis=request.query.get("lawful_basis"),
        kind=request.query.get("kind"),
    )
    limit = _int_param(request, "limit", 100)
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest("bad-request", f"limit must be between 1 and {MAX_PAGE}")
    after = _int_param(request, "after", 0) - 1 if "after" in request.query else -1
    found = await request.app[STORES].consent_log.find(where, after=after, limit=limit)
    body: dict[str, Any] = {"records": [record_json(r) for r in found]}
    if len(found) == limit:
        body["next"] = found[-1].index + 1
    return web.json_response(body)


async def get_record(request: web.Request) -> web.Response:
    await authenticate_audit(request)
    stored = await request.app[STORES].consent_log.get(
        _count(request.match_info["index"], "the record index")
    )
    if stored is None:
        raise BadRequest("not-found", "no record at that index", 404)
    transparency = request.app[TRANSPARENCY]
    size, note = await transparency.checkpoint()
    proof = await transparency.inclusion_proof(stored.index, size)
    return web.json_response(
        {
            "record": record_json(stored),
            "checkpoint": note,
            "tree_size": size,
            "inclusion_proof": [b64(h) for h in proof],
        }
    )


async def post_subject_access(request: web.Request) -> web.Response:
    body = await request.read()
    await authenticate_audit(request, body, subject_access=True)
    try:
        identifiers = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("bad-request", "the body must be a JSON object") from exc
    if (
        not isinstance(identifiers, dict)
        or not {"family_name", "date_of_birth"} <= set(identifiers)
        or not set(identifiers) <= {"family_name", "date_of_birth", "nino"}
    ):
        raise BadRequest("bad-request", "send family_name, date_of_birth and optionally nino")
    settings = request.app[SETTINGS]
    persons, ninos = [], []
    for key in (settings.pseudonym_key, *settings.previous_pseudonym_keys):
        try:
            pseudonyms = pseudonymise_identifiers(
                identifiers["family_name"],
                identifiers["date_of_birth"],
                identifiers.get("nino"),
                key,
            )
        except InvalidMessage as exc:
            raise BadRequest("bad-request", str(exc)) from exc
        persons.append(pseudonyms.person)
        if pseudonyms.nino is not None:
            ninos.append(pseudonyms.nino)
    found = await request.app[STORES].consent_log.by_subject(persons, ninos)
    registry = request.app[REGISTRY].snapshot
    entries: list[dict[str, Any]] = []
    for stored in found:
        if stored.body is None:
            entries.append({"log_index": stored.index, "pruned": True})
            continue
        record = orjson.loads(stored.body)
        member = registry.members.get(record["requester"])
        entries.append(
            {
                "log_index": stored.index,
                "when": record["recorded_at"],
                "who": record["requester"],
                "who_name": None if member is None else member.name,
                "purpose": record["purpose"],
                "check": record["check"],
                "lawful_basis": record["lawful_basis"],
                "outcome": record["outcome"],
            }
        )
    return web.json_response({"records": entries, "pseudonym_keys": len(persons)})


async def get_export(request: web.Request) -> web.StreamResponse:
    await authenticate_audit(request)
    transparency = request.app[TRANSPARENCY]
    size, _ = await transparency.checkpoint()
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for line in export_lines(transparency, size):
        await response.write(line)
    await response.write_eof()
    return response


async def export_lines(transparency: TransparencyLog, size: int) -> AsyncIterator[bytes]:
    """The export format: a header line, every record up to ``size``, every checkpoint, and a
    consistency proof between each pair of consecutive checkpoints."""
    store = transparency.store
    yield orjson.dumps({"type": "log", "origin": transparency.origin, "size": size}) + b"\n"
    for start in range(0, size, EXPORT_CHUNK):
        for stored in await store.entries(start, min(size, start + EXPORT_CHUNK)):
            yield orjson.dumps({"type": "record", **record_json(stored)}) + b"\n"
    sizes = []
    for checkpoint_size, note in await store.checkpoints():
        if checkpoint_size <= size:
            sizes.append(checkpoint_size)
            yield orjson.dumps({"type": "checkpoint", "note": note}) + b"\n"
    await transparency.sync()
    for older, newer in itertools.pairwise(s for s in sizes if s > 0):
        proof = transparency.tree.consistency_proof(older, newer)
        line = {"type": "consistency", "from": older, "to": newer, "proof": [b64(h) for h in proof]}
        yield orjson.dumps(line) + b"\n"


async def get_checkpoint(request: web.Request) -> web.Response:
    _, note = await request.app[TRANSPARENCY].on_demand()
    return web.Response(text=note, content_type="text/plain")


async def get_log_key(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[SETTINGS].log_signer.vkey + "\n", content_type="text/plain"
    )


async def get_inclusion_proof(request: web.Request) -> web.Response:
    index, size = _int_param(request, "index"), _int_param(request, "size")
    transparency = request.app[TRANSPARENCY]
    await transparency.sync()
    if size > transparency.tree.size:
        raise ProofRequestError(f"size {size} is beyond the log's size {transparency.tree.size}")
    proof = await transparency.inclusion_proof(index, size)
    return web.json_response(
        {
            "index": index,
            "tree_size": size,
            "leaf_hash": b64(transparency.tree.leaf(index)),
            "proof": [b64(h) for h in proof],
        }
    )


async def get_consistency_proof(request: web.Request) -> web.Response:
    old, new = _int_param(request, "from"), _int_param(request, "to")
    transparency = request.app[TRANSPARENCY]
    await transparency.sync()
    if new > transparency.tree.size:
        raise ProofRequestError(f"size {new} is beyond the log's size {transparency.tree.size}")
    proof = await transparency.consistency_proof(old, new)
    return web.json_response({"from": old, "to": new, "proof": [b64(h) for h in proof]})


async def post_withdrawal(request: web.Request) -> web.Response:
    body = await read_jwt_body(request)
    app = request.app
    settings = app[SETTINGS]
    now = time.time()
    registry = app[REGISTRY].current()
    verified = verify_member_message(app, body, jws.CONSENT_WITHDRAWAL, registry, now)
    withdrawal = parse_withdrawal(verified)
    await admit_or_refuse(
        app[STORES].admission,
        withdrawal.requester,
        withdrawal.jti,
        expires_at=withdrawal.expires_at + settings.leeway_s,
        now=now,
        limit=settings.rate_limit_per_second,
    )
    policy.authorize_withdrawal(registry, withdrawal.requester)
    record = WithdrawalRecord(
        recorded_at_ms=int(time.time() * 1000),
        requester=withdrawal.requester,
        consent_id=withdrawal.consent_id,
        withdrawn_at=withdrawal.withdrawn_at,
        request_jti=withdrawal.jti,
    )
    appended = await app[STORES].consent_log.append(record)
    app[TRANSPARENCY].appended()
    return web.json_response(
        {
            "log_index": appended.index,
            "record_digest": b64(appended.digest),
            "consent_id": withdrawal.consent_id,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/log/checkpoint", get_checkpoint)
    app.router.add_get("/v1/log/key", get_log_key)
    app.router.add_get("/v1/log/proof/inclusion", get_inclusion_proof)
    app.router.add_get("/v1/log/proof/consistency", get_consistency_proof)
    app.router.add_get("/v1/audit/records", get_records)
    app.router.add_get("/v1/audit/records/{index}", get_record)
    app.router.add_post("/v1/audit/subject-access", post_subject_access)
    app.router.add_get("/v1/audit/export", get_export)
    app.router.add_post("/v1/consents/withdrawals", post_withdrawal)
