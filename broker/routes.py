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

from broker import handlers
from broker.audit import api, public
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
JWT_BODY = ("unsupported-media-type", "too-large")
AUDIT_REQUEST = ("invalid-token", "rate-limited", "store-unavailable", "registry-unavailable")
LOG_READ = ("log-unavailable",)

JWS_SCHEMA: dict[str, Any] = {
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"}
}


def query_parameter(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}


def json_response(description: str, properties: Mapping[str, str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


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
        "Record that a resident withdrew a consent (signed consent-withdrawal+jwt); later "
        "checks citing it are refused",
        json_response(
            "The withdrawal's log index and record digest",
            {"log_index": "integer", "record_digest": "string", "consent_id": "string"},
        ),
        problems=(*JWT_BODY, *GATE, *policy.WITHDRAWAL_REFUSALS, *LOG_READ),
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
        {"description": "signed note", "content": {"text/plain": {}}},
        problems=LOG_READ,
    ),
    Route(
        "GET",
        "/v1/log/key",
        public.get_log_key,
        "logKey",
        "The log's Ed25519 verifier key (name+hash+key); pin it out of band",
        {"description": "verifier key", "content": {"text/plain": {}}},
    ),
    Route(
        "GET",
        "/v1/log/proof/inclusion",
        public.get_inclusion_proof,
        "inclusionProof",
        "RFC 9162 inclusion proof of record `index` in the tree of `size`",
        json_response(
            "Proof (base64 hashes)",
            {"index": "integer", "tree_size": "integer", "leaf_hash": "string", "proof": "array"},
        ),
        problems=("bad-request", "invalid-proof-request", *LOG_READ),
        details={"parameters": [query_parameter("index"), query_parameter("size")]},
    ),
    Route(
        "GET",
        "/v1/log/proof/consistency",
        public.get_consistency_proof,
        "consistencyProof",
        "RFC 9162 consistency proof between tree sizes `from` and `to`",
        json_response(
            "Proof (base64 hashes)", {"from": "integer", "to": "integer", "proof": "array"}
        ),
        problems=("bad-request", "invalid-proof-request", *LOG_READ),
        details={"parameters": [query_parameter("from"), query_parameter("to")]},
    ),
    Route(
        "GET",
        "/v1/audit/records",
        api.get_records,
        "auditRecords",
        "Consent records, filtered and paginated (auditors; signed audit-request+jwt in "
        "Authorization: Bearer)",
        {"description": "Records and the next cursor"},
        problems=("bad-request", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                query_parameter(n, required=False)
                for n in (
                    "since",
                    "until",
                    "requester",
                    "purpose",
                    "check",
                    "outcome",
                    "lawful_basis",
                    "kind",
                    "after",
                    "limit",
                )
            ],
        },
    ),
    Route(
        "GET",
        "/v1/audit/records/{index}",
        api.get_record,
        "auditRecord",
        "One record with its inclusion proof and the checkpoint it is in",
        {"description": "Record, checkpoint and inclusion proof"},
        problems=("bad-request", "not-found", *AUDIT_REQUEST, *policy.AUDIT_REFUSALS, *LOG_READ),
        details={
            **AUDIT_SECURITY,
            "parameters": [
                {
                    "name": "index",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
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
        {"description": "The records about this person"},
        problems=(
            "bad-request",
            "too-large",
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
                            "properties": {
                                "family_name": {"type": "string"},
                                "date_of_birth": {"type": "string"},
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
        {"description": "application/x-ndjson lines"},
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
        "/v1/providers",
        handlers.get_providers,
        "providers",
        "Each provider's availability, circuit state, scheduled outages and latency percentiles",
        {"description": "provider status list"},
    ),
    Route("GET", "/healthz", handlers.get_healthz, "health", "Liveness", {"description": "alive"}),
    Route(
        "GET",
        "/readyz",
        handlers.get_readyz,
        "ready",
        "Readiness: registry fresh, stores reachable, consent log running",
        {"description": "ready"},
        other_responses={"503": {"description": "not ready"}},
    ),
    Route(
        "GET",
        "/openapi.json",
        handlers.get_openapi,
        "openapi",
        "This document",
        {"description": "OpenAPI 3.1"},
    ),
    Route(
        "GET",
        "/metrics",
        handlers.get_metrics,
        "metrics",
        "Prometheus metrics",
        {"description": "text exposition"},
    ),
)


def add_routes(app: web.Application, routes: tuple[Route, ...] = ROUTES) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
