"""The audit API: auditors only, each request signed (``audit-request+jwt`` bound to method,
path+query and body) and passed through the gate: records with filters, one record with its
inclusion proof, subject access (needs the ``subject-access`` grant), and the export for
offline verification."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from broker.app_keys import GATE, REGISTRY, SETTINGS, STORES, TRANSPARENCY
from broker.audit.export import b64, export_lines, record_json
from broker.audit.params import count, int_param, time_param
from broker.bulk.handlers import audited_job
from broker.bulk.service import BULK
from broker.errors import BadRequest, Replayed
from broker.stores.consent_log import RecordFilter
from trust import jws, policy
from trust.errors import InvalidMessage, VerificationError
from trust.messages import AuditRequest, parse_audit_request
from trust.pseudonym import pseudonymise_identifiers
from trust.registry import Registry

MAX_PAGE = 1000
MAX_JOBS = 500


async def authenticate_audit(
    request: web.Request, body: bytes = b"", *, subject_access: bool = False
) -> str:
    """Pass the auditor's signed request through the gate; returns the auditor's member id."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise Replayed("no audit token")  # rendered as the same 401 as any failed verification
    token = header.removeprefix("Bearer ").strip().encode("ascii", "replace")

    def parse(verified: jws.Verified, _: float) -> AuditRequest:
        try:
            return parse_audit_request(
                verified, method=request.method, target=request.path_qs, body=body
            )
        except InvalidMessage as exc:  # bound to another request: as any failed verification
            raise VerificationError("audit request binding") from exc

    def authorize(registry: Registry, auditor: str) -> None:
        policy.authorize_audit(registry, auditor, subject_access=subject_access)

    passed = await request.app[GATE].admit(token, jws.AUDIT_REQUEST, parse, authorize=authorize)
    return passed.sender


async def get_records(request: web.Request) -> web.Response:
    await authenticate_audit(request)
    where = RecordFilter(
        since_ms=time_param(request, "since"),
        until_ms=time_param(request, "until"),
        requester=request.query.get("requester"),
        purpose=request.query.get("purpose"),
        check=request.query.get("check"),
        outcome=request.query.get("outcome"),
        lawful_basis=request.query.get("lawful_basis"),
        kind=request.query.get("kind"),
        identity_provider=request.query.get("identity_provider"),
    )
    limit = int_param(request, "limit", 100)
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest("bad-request", f"limit must be between 1 and {MAX_PAGE}")
    after = int_param(request, "after", 0) - 1 if "after" in request.query else -1
    found = await request.app[STORES].consent_log.find(where, after=after, limit=limit)
    body: dict[str, Any] = {"records": [record_json(r) for r in found]}
    if len(found) == limit:
        body["next"] = found[-1].index + 1
    return web.json_response(body)


async def get_identity_sources(request: web.Request) -> web.Response:
    """Where the identity of the checks in a period came from: how many were backed by a
    verified credential, from which identity provider, and their share of all checks."""
    await authenticate_audit(request)
    counts = await request.app[STORES].consent_log.identity_counts(
        since_ms=time_param(request, "since"), until_ms=time_param(request, "until")
    )
    checks = sum(counts.values())
    by_provider = {provider: n for provider, n in sorted(counts.items(), key=str) if provider}
    backed = sum(by_provider.values())
    return web.json_response(
        {
            "checks": checks,
            "credential_backed": backed,
            "share_credential_backed": round(backed / checks, 4) if checks else None,
            "by_identity_provider": by_provider,
        }
    )


async def get_jobs(request: web.Request) -> web.Response:
    """Bulk jobs, newest first, each with its consent records' log index range: what they
    checked and under which purpose, never a subject or a result."""
    await authenticate_audit(request)
    limit = int_param(request, "limit", 100)
    if not 1 <= limit <= MAX_JOBS:
        raise BadRequest("bad-request", f"limit must be between 1 and {MAX_JOBS}")
    jobs = await request.app[BULK].store.all_jobs(
        requester=request.query.get("requester"), limit=limit
    )
    return web.json_response({"jobs": [audited_job(job) for job in jobs]})


async def get_record(request: web.Request) -> web.Response:
    await authenticate_audit(request)
    stored = await request.app[STORES].consent_log.get(
        count(request.match_info["index"], "the record index")
    )
    if stored is None:
        raise BadRequest("not-found", "no record at that index", 404)
    transparency = request.app[TRANSPARENCY]
    cosigned = await transparency.latest_cosigned()  # a witnessed checkpoint, if one covers it
    if cosigned is not None and cosigned[0] > stored.index:
        size, note = cosigned
    else:
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
        if pseudonyms.person is not None:
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
