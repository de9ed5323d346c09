"""The one route table: the router is built from it and so is the OpenAPI document.

Each route declares the problem types it can return (RFC 9457 slugs of
:data:`broker.problems.PROBLEM_TYPES`); the document lists exactly those, by status, and a test
checks that every problem type is reachable from some route and every refusal code has a type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker import discovery, handlers
from broker.audit import api, public
from broker.audit.api import MAX_PAGE
from broker.bulk import handlers as bulk
from broker.resident import api as resident_api
from trust import policy
from trust.jws import JWT_MEDIA_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What any route can answer: a wrong method on its path, or a fault of the broker's own.
ANY_ROUTE = ("method-not-allowed", "internal-error")
# A signed member message through the gate, with the registry in force and the replay store.
GATE = (
    "invalid-token",
    "invalid-query",
    "rate-limited",
    "store-unavailable",
    "registry-unavailable",
)
JWT_BODY = ("unsupported-media-type", "too-large", "request-timeout")
AUDIT_REQUEST = ("invalid-token", "rate-limited", "store-unavailable", "registry-unavailable")
# Reading the log may sign a checkpoint; a check signs its answer: both need the signing keys.
LOG_READ = ("log-unavailable", "key-unavailable")

JWS_SCHEMA: dict[str, Any] = {
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"}
}


# A count as the audit and log endpoints read it (broker.audit.params: 1 to 15 ASCII digits).
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 10**15 - 1}
# A moment as the audit filters read it: an ISO 8601 date or date-time, UTC if no zone.
MOMENT: dict[str, Any] = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
BASE64_HASHES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}


def query_parameter(
    name: str, *, required: bool = True, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": dict(schema or {"type": "string"}),
    }


def object_schema(properties: Mapping[str, Any], *optional: str) -> dict[str, Any]:
    """An object with exactly ``properties``, each required unless named in ``optional``."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": dict(properties),
    }


def json_response(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def text_response(description: str, media_type: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media_type: {}}}


# A consent record as the audit API shows it (broker.audit.export.record_json): a pruned one
# keeps its index and digest and says so.
RECORD: dict[str, Any] = object_schema(
    {
        "log_index": {"type": "integer", "minimum": 0},
        "digest": {"type": "string"},
        "salt": {"type": "string"},
        "body": {"type": "object"},
        "pruned": {"const": True},
    },
    "salt",
    "body",
    "pruned",
)
READINESS: dict[str, Any] = object_schema(
    {
        "status": {"enum": ["ready", "not-ready"]},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "registry_seq": {"type": "integer"},
    }
)
PROVIDER_STATUS: dict[str, Any] = object_schema(
    {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "availability": {"enum": ["available", "suspended", "scheduled-outage", "unavailable"]},
        "attributes": {"type": "array", "items": {"type": "string"}},
        "timeout_ms": {"type": "integer"},
        "outages": {"type": "array", "items": {"type": "object"}},
        "circuit": object_schema(
            {"state": {"type": "string"}, "consecutive_failures": {"type": "integer"}}
        ),
        "latency_ms": {"type": "object"},
        "calls": {"type": "object", "additionalProperties": {"type": "integer"}},
        "in_flight": {"type": "integer"},
        "max_concurrency": {"type": "integer"},
    }
)
SUBJECT_ACCESS_ENTRY: dict[str, Any] = object_schema(
    {
        "log_index": {"type": "integer", "minimum": 0},
        "pruned": {"const": True},
        "when": {"type": "string"},
        "who": {"type": "string"},
        "who_name": {"type": ["string", "null"]},
        "purpose": {"type": "string"},
        "check": {"type": "string"},
        "lawful_basis": {"type": "string"},
        "outcome": {"type": "string"},
    },
    *("pruned", "when", "who", "who_name", "purpose", "check", "lawful_basis", "outcome"),
)

CHECK_VERSION: dict[str, Any] = object_schema(
    {
        "version": {"type": "integer", "minimum": 1},
        "effective_from": {"type": "string", "format": "date"},
        "effective_to": {"type": ["string", "null"], "format": "date"},
        "scope": {"enum": ["local", "national"]},
        "min_assurance": {"type": ["string", "null"]},
        "bands": {"type": ["array", "null"], "items": {"type": "string"}},
    }
)
MEMBER_CHECKS: dict[str, Any] = object_schema(
    {
        "member": {"type": "string"},
        "active": {"type": "boolean"},
        "registry_seq": {"type": "integer"},
        "checks": {
            "type": "array",
            "items": object_schema(
                {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "owner": {"type": ["string", "null"]},
                    "purposes": {"type": "array", "items": {"type": "string"}},
                    "versions": {"type": "array", "items": CHECK_VERSION},
                }
            ),
        },
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    """One operation: where it is, what handles it, how the document describes it."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    ok: Mapping[str, Any]  # the 200 response object
    problems: tuple[str, ...] = ()  # on top of ANY_ROUTE
    details: Mapping[str, Any] = field(default_factory=dict)  # parameters, requestBody, ...
    other_responses: Mapping[str, Any] = field(default_factory=dict)  # non-problem answers
    ok_status: str = "200"  # the status of ``ok`` (202 for a job accepted to run later)
    router_path: str | None = None  # the router's path where it needs a pattern OpenAPI lacks

    @property
    def all_problems(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.problems, *ANY_ROUTE)))


AUDIT_SECURITY: dict[str, Any] = {"security": [{"auditRequest": []}]}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/checks",
        handlers.post_check,
        "check",
        "Ask one named check about one resident; get a signed outcome",
        {
            "description": "Signed answer (compact JWS); see EligibilityAnswer",
            "content": {JWT_MEDIA_TYPE: JWS_SCHEMA},
        },
        problems=("overloaded", *JWT_BODY, *GATE, *policy.CHECK_REFUSALS, *LOG_READ),
        details={"requestBody": {"required": True, "content": {JWT_MEDIA_TYPE: JWS_SCHEMA}}},
    ),
    Route(
        "POST",
        "/v1/consents/withdrawals",
        handlers.post_withdrawal,
        "withdrawConsent",
        "Record that a resident withdrew a consent (signed consent-withdrawal+jwt; see "
        "ConsentWithdrawal); later checks citing it are refused",
        json_response(
            "The withdrawal's log index and record digest",
            object_schema(
                {
                    "log_index": {"type": "integer", "minimum": 0},
                    "record_digest": {"type": "string"},
                    "consent_id": {"type": "string"},
                }
            ),
        ),
        problems=(*JWT_BODY, *GATE, *policy.WITHDRAWAL_REFUSALS, *LOG_READ),
        details={"requestBody": {"required": True, "content": {JWT_MEDIA_TYPE: JWS_SCHEMA}}},
    ),
    Route(
        "POST",
        "/v1/resident/checks",
        resident_api.post_resident_checks,
        "residentChecks",
        "Who checked this resident's data (signed resident-access+jwt from a council portal, "
        "carrying the resident's core identity credential issued to that council)",
        json_response(
            "Every check of the person the credential names, newest first",
            object_schema(
                {
                    "records": {
                        "type": "array",
                        "items": object_schema(
                            {
                                "log_index": COUNT,
                                "when": {"type": "string"},
                                "who": {"type": "string"},
                                "who_name": {"type": ["string", "null"]},
                                "purpose": {"type": "string"},
                                "purpose_description": {"type": ["string", "null"]},
                                "check": {"type": "string"},
                                "check_description": {"type": ["string", "null"]},
                                "lawful_basis": {"type": ["string", "null"]},
                                "outcome": {"type": "string"},
                            }
                        ),
                    }
                }
            ),
        ),
        problems=(*JWT_BODY, *GATE, *policy.RESIDENT_ACCESS_REFUSALS, *LOG_READ),
        details={"requestBody": {"required": True, "content": {JWT_MEDIA_TYPE: JWS_SCHEMA}}},
    ),
    Route(
        "GET",
        "/.well-known/jwks.json",
        handlers.get_jwks,
        "jwks",
        "The broker's public signing keys (kid = RFC 7638 thumbprint)",
        {
            "description": "JWK Set",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JWKS"}}},
        },
    ),
    Route(
        "GET",
        "/v1/log/checkpoint",
        public.get_checkpoint,
        "checkpoint",
        "The latest signed checkpoint (C2SP tlog-checkpoint signed note)",
        text_response("signed note"),
        problems=LOG_READ,
    ),
    Route(
        "GET",
        "/v1/log/checkpoint/cosigned",
        public.get_cosigned_checkpoint,
        "cosignedCheckpoint",
        "The largest checkpoint the witnesses cosigned, with their cosignature lines "
        "(C2SP tlog-cosignature); 404 until a witness has cosigned one",
        text_response("signed note with cosignatures"),
        problems=("not-found", *LOG_READ),
    ),
    Route(
        "GET",
        "/v1/log/key",
        public.get_log_key,
        "logKey",
        "The log's Ed25519 verifier key (name+hash+key); pin it out of band",
        text_response("verifier key"),
    ),
    Route(
        "GET",
        "/v1/log/proof/inclusion",
        public.get_inclusion_proof,
        "inclusionProof",
        "RFC 9162 inclusion proof of record `index` in the tree of `size`",
        json_response(
            "Proof (base64 hashes)",
            object_schema(
                {
                    "index": COUNT,
                    "tree_size": COUNT,
                    "leaf_hash": {"type": "string"},
                    "proof": BASE64_HASHES,
                }
            ),
        ),
        problems=("bad-request", "invalid-proof-request", *LOG_READ),
        details={
            "parameters": [
                query_parameter("index", schema=COUNT),
                query_parameter("size", schema=COUNT),
            ]
        },
    ),
    Route(
        "GET",
        "/v1/log/proof/consistency",
        public.get_consistency_proof,
        "consistencyProof",
        "RFC 9162 consistency proof between tree sizes `from` and `to`",
        json_response(
            "Proof (base64 hashes)",
            object_schema({"from": COUNT, "to": COUNT, "proof": BASE64_HASHES}),
        ),
        problems=("bad-request", "invalid-proof-request", *LOG_READ),
        details={
            "parameters": [
                query_parameter("from", schema=COUNT),
                query_parameter("to", schema=COUNT),
            ]
        },
    ),
    Route(
        "GET",
        "/v1/log/tile/{tile}",
        public.get_tile,
        "logTile",
        "The log's tree as C2SP tlog-tiles, read-only, for anyone to mirror: `tile` is "
        "`<L>/<N>[.p/<W>]` (a hash tile) or `entries/<N>[.p/<W>]` (an entry bundle), with "
        "`<N>` in x-prefixed groups of three digits; 404 until the tree has it",
        {"description": "Tile bytes", "content": {"application/octet-stream": {}}},
        problems=("not-found", "invalid-proof-request", *LOG_READ),
        details={
            "parameters": [
                {
                    "name": "tile",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "the tile path after tile/, slashes included",
                }
            ]
        },
        router_path="/v1/log/tile/{tile:.+}",
    ),
    Route(
        "GET",
        "/v1/audit/records",
        api.get_records,
        "auditRecords",
        "Consent records, filtered and paginated (auditors; signed audit-request+jwt in "
        "Authorization: Bearer)",
        json_response(
            "Records and, when the page is full, the next cursor (pass it as `after`)",
            object_schema({"records": {"type": "array", "items": RECORD}, "next": COUNT}, "next"),
        ),
        problems=("bad-request", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                query_parameter("since", required=False, schema=MOMENT),
                query_parameter("until", required=False, schema=MOMENT),
                *(
                    query_parameter(n, required=False)
                    for n in (
                        "requester",
                        "purpose",
                        "check",
                        "outcome",
                        "lawful_basis",
                        "kind",
                        "identity_provider",
                    )
                ),
                query_parameter("after", required=False, schema=COUNT),
                query_parameter(
                    "limit", required=False, schema={**COUNT, "minimum": 1, "maximum": MAX_PAGE}
                ),
            ],
        },
    ),
    Route(
        "GET",
        "/v1/audit/identity-sources",
        api.get_identity_sources,
        "auditIdentitySources",
        "How many checks in a period had their identity from a verified credential, by "
        "identity provider, and their share of all checks (auditors)",
        json_response(
            "Counts of check records",
            object_schema(
                {
                    "checks": COUNT,
                    "credential_backed": COUNT,
                    "share_credential_backed": {"type": ["number", "null"]},
                    "by_identity_provider": {
                        "type": "object",
                        "additionalProperties": COUNT,
                    },
                }
            ),
        ),
        problems=("bad-request", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                query_parameter("since", required=False, schema=MOMENT),
                query_parameter("until", required=False, schema=MOMENT),
            ],
        },
    ),
    Route(
        "GET",
        "/v1/audit/records/{index}",
        api.get_record,
        "auditRecord",
        "One record with its inclusion proof and the checkpoint it is in",
        json_response(
            "Record, checkpoint and inclusion proof",
            object_schema(
                {
                    "record": RECORD,
                    "checkpoint": {"type": "string"},
                    "tree_size": COUNT,
                    "inclusion_proof": BASE64_HASHES,
                }
            ),
        ),
        problems=("bad-request", "not-found", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                {
                    "name": "index",
                    "in": "path",
                    "required": True,
                    "schema": COUNT,
                }
            ],
        },
    ),
    Route(
        "POST",
        "/v1/audit/subject-access",
        api.post_subject_access,
        "subjectAccess",
        "Who checked this resident's data, when and why (needs the subject-access grant); "
        "identifiers in, pseudonyms computed by the broker",
        json_response(
            "The records about this person, found under each pseudonym key in force",
            object_schema(
                {
                    "records": {"type": "array", "items": SUBJECT_ACCESS_ENTRY},
                    "pseudonym_keys": {"type": "integer", "minimum": 1},
                }
            ),
        ),
        problems=(
            "bad-request",
            "too-large",
            "request-timeout",
            *AUDIT_REQUEST,
            *policy.SUBJECT_ACCESS_REFUSALS,
            *LOG_READ,
        ),
        details={
            **AUDIT_SECURITY,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["family_name", "date_of_birth"],
                            "additionalProperties": False,
                            "properties": {
                                "family_name": {"type": "string"},
                                "date_of_birth": {"type": "string", "format": "date"},
                                "nino": {"type": "string"},
                            },
                        }
                    }
                },
            },
        },
    ),
    Route(
        "GET",
        "/v1/audit/export",
        api.get_export,
        "auditExport",
        "JSONL export of every record and checkpoint, for axb audit verify",
        text_response(
            "One JSON object a line: the log, each record, each checkpoint, each consistency "
            "proof between them",
            "application/x-ndjson",
        ),
        problems=(*AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details=AUDIT_SECURITY,
    ),
    Route(
        "GET",
        "/v1/registry",
        handlers.get_registry,
        "registry",
        "The signed trust registry in force (typ trust-registry+jwt)",
        {"description": "compact JWS", "content": {JWT_MEDIA_TYPE: JWS_SCHEMA}},
    ),
    Route(
        "GET",
        "/v1/members/{member}/checks",
        discovery.get_member_checks,
        "memberChecks",
        "The checks a council may ask, from the registry in force: per check its purposes and "
        "the versions that answer this council (local or national, dates, assurance, bands)",
        json_response("the council's checks", MEMBER_CHECKS),
        problems=("not-found",),
        details={
            "parameters": [
                {"name": "member", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        },
    ),
    Route(
        "GET",
        "/v1/providers",
        handlers.get_providers,
        "providers",
        "Each provider's availability, circuit state, scheduled outages and latency percentiles",
        json_response(
            "provider status list",
            object_schema(
                {
                    "providers": {"type": "array", "items": PROVIDER_STATUS},
                    "registry_seq": {"type": "integer"},
                }
            ),
        ),
    ),
    Route(
        "GET",
        "/healthz",
        handlers.get_healthz,
        "health",
        "Liveness",
        json_response("alive", object_schema({"status": {"const": "ok"}})),
    ),
    Route(
        "GET",
        "/readyz",
        handlers.get_readyz,
        "ready",
        "Readiness: registry fresh, stores reachable, consent log running",
        json_response("ready", READINESS),
        other_responses={"503": json_response("not ready: the checks say which", READINESS)},
    ),
    Route(
        "GET",
        "/openapi.json",
        handlers.get_openapi,
        "openapi",
        "This document",
        json_response(
            "OpenAPI 3.1",
            object_schema({"openapi": {"const": "3.1.0"}, "paths": {"type": "object"}}),
        ),
    ),
    Route(
        "GET",
        "/metrics",
        handlers.get_metrics,
        "metrics",
        "Prometheus metrics",
        text_response("Prometheus text exposition"),
    ),
)


# A council's signed request about one of its bulk jobs (bulk-request+jwt, Bearer).
BULK_SECURITY: dict[str, Any] = {"security": [{"bulkRequest": []}]}
BULK_REQUEST = (
    "invalid-token",
    "rate-limited",
    "store-unavailable",
    "registry-unavailable",
    policy.MEMBER_SUSPENDED,
    policy.ROLE_NOT_PERMITTED,
    "not-found",
    *LOG_READ,
)
BULK_ENDED = ("bulk-job-unfinished",)
JOB_ID: dict[str, Any] = {
    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
}
COUNTS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": "integer", "minimum": 0},
}
JOB_FIELDS: dict[str, Any] = {
    "id": {"type": "string"},
    "status": {"enum": ["queued", "running", "completed", "failed", "cancelled"]},
    "reason": {"type": ["string", "null"]},
    "check": {"type": "string"},
    "purpose": {"type": "string"},
    "as_of": {"type": "string", "format": "date"},
    "items": {"type": "integer"},
    "processed": {"type": "integer"},
    "progress": {"type": "number", "minimum": 0, "maximum": 1},
    "counts": COUNTS,
    "subjects": {"type": "integer"},
    "records": {"type": "integer"},
    "log_index_range": {"type": ["array", "null"], "items": {"type": "integer"}},
    "created_at": {"type": "string"},
    "finished_at": {"type": ["string", "null"]},
    "results_deleted": {"type": "boolean"},
    "notify": {"type": "boolean"},
    "notice": {
        "type": ["object", "null"],
        "description": "The end-of-job notice once the job has ended (null: none asked for, "
        "or not ended yet)",
        "properties": {
            "state": {"enum": ["pending", "delivered", "gave-up"]},
            "attempts": {"type": "integer"},
        },
    },
}
BULK_JOB: dict[str, Any] = object_schema(
    {**JOB_FIELDS, "links": {"type": "object", "additionalProperties": {"type": "string"}}}
)
AUDITED_JOB: dict[str, Any] = object_schema(
    {**JOB_FIELDS, "requester": {"type": "string"}, "lawful_basis": {"type": ["string", "null"]}}
)
ITEMS_BODY: dict[str, Any] = {
    "required": True,
    "description": "The items file the manifest's items_sha256 names: NDJSON, one "
    '{"ref", "subject", "consent"?} a line, or CSV with a header row (ref, subject fields, '
    "consent_id, consent_given_at, consent_method, consent_notice_url, consent_notice_digest)",
    "content": {"application/x-ndjson": {}, "text/csv": {}},
}
BULK_ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/bulk/jobs",
        bulk.post_job,
        "bulkSubmit",
        "Submit a bulk job: a signed bulk-manifest+jwt in the Bulk-Manifest header, the items "
        "file as the body; every row is checked before the job is accepted",
        json_response("Accepted: the job, to poll at links.self", BULK_JOB),
        problems=(
            "invalid-items",
            "bulk-callback-missing",
            "unsupported-media-type",
            "too-large",
            "request-timeout",
            *GATE,
            *policy.CHECK_REFUSALS,
            *LOG_READ,
        ),
        details={
            "parameters": [
                {
                    "name": "Bulk-Manifest",
                    "in": "header",
                    "required": True,
                    "schema": JWS_SCHEMA["schema"],
                }
            ],
            "requestBody": ITEMS_BODY,
        },
        ok_status="202",
    ),
    Route(
        "GET",
        "/v1/bulk/jobs/{job_id}",
        bulk.get_job,
        "bulkStatus",
        "A job's status: counts per outcome and progress (the council's own jobs only)",
        json_response("The job", BULK_JOB),
        problems=BULK_REQUEST,
        details={**BULK_SECURITY, **JOB_ID},
    ),
    Route(
        "DELETE",
        "/v1/bulk/jobs/{job_id}",
        bulk.delete_job,
        "bulkCancel",
        "Cancel a job: at once if queued, at its next chunk if running",
        json_response("The job", BULK_JOB),
        problems=BULK_REQUEST,
        details={**BULK_SECURITY, **JOB_ID},
    ),
    Route(
        "GET",
        "/v1/bulk/jobs/{job_id}/results",
        bulk.get_results,
        "bulkResults",
        "An ended job's results as NDJSON: one {ref, outcome} a row, in row order",
        text_response("results", "application/x-ndjson"),
        problems=(*BULK_REQUEST, *BULK_ENDED),
        details={**BULK_SECURITY, **JOB_ID},
    ),
    Route(
        "GET",
        "/v1/bulk/jobs/{job_id}/results.csv",
        bulk.get_results_csv,
        "bulkResultsCsv",
        "An ended job's results as CSV (ref,outcome), safe to open in a spreadsheet",
        text_response("results", "text/csv"),
        problems=(*BULK_REQUEST, *BULK_ENDED),
        details={**BULK_SECURITY, **JOB_ID},
    ),
    Route(
        "GET",
        "/v1/bulk/jobs/{job_id}/manifest",
        bulk.get_results_manifest,
        "bulkResultsManifest",
        "The signed results manifest (bulk-results+jwt): job, both files' SHA-256, the log "
        "index range of the job's consent records",
        {"description": "compact JWS", "content": {JWT_MEDIA_TYPE: JWS_SCHEMA}},
        problems=(*BULK_REQUEST, *BULK_ENDED),
        details={**BULK_SECURITY, **JOB_ID},
    ),
)
ROUTES += BULK_ROUTES
ROUTES += (
    Route(
        "GET",
        "/v1/audit/jobs",
        api.get_jobs,
        "auditJobs",
        "Bulk jobs of every council (or one requester's), newest first, each with its consent "
        "records' log index range (auditors; no subjects, no results)",
        json_response("Jobs", object_schema({"jobs": {"type": "array", "items": AUDITED_JOB}})),
        problems=("bad-request", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                query_parameter("requester", required=False),
                query_parameter(
                    "limit", required=False, schema={**COUNT, "minimum": 1, "maximum": 500}
                ),
            ],
        },
    ),
)


def add_routes(app: web.Application, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        app.router.add_route(route.method, route.router_path or route.path, route.handler)
