"""The OpenAPI 3.1 description of the broker's HTTP API, built from the same tables the code
uses (problem types, refusal codes, outcomes), so the document cannot drift from behaviour."""

from __future__ import annotations

from typing import Any

from broker.problems import PROBLEM_TYPES, TYPE_PREFIX
from trust.jws import JWT_MEDIA_TYPE
from trust.messages import ASSURANCE_LEVELS, OUTCOMES, SUBJECT_FIELDS
from trust.registry import LAWFUL_BASES

_PROBLEM = "application/problem+json"


def _problem_response(description: str, slugs: list[str]) -> dict[str, Any]:
    return {
        "description": description + " One of: " + ", ".join(TYPE_PREFIX + s for s in slugs),
        "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _by_status(status: int) -> list[str]:
    return sorted(slug for slug, kind in PROBLEM_TYPES.items() if kind.status == status)


QUERY_CLAIMS: dict[str, Any] = {
    "type": "object",
    "description": "Payload of the eligibility query JWS (header: alg ES256, kid, "
    "typ eligibility-query+jwt; nothing else). Signed with the council's registered key.",
    "required": ["iss", "aud", "iat", "exp", "jti", "check", "purpose", "subject"],
    "additionalProperties": False,
    "properties": {
        "iss": {"type": "string", "description": "the council's member id"},
        "aud": {"type": "string", "description": "the broker's member id, exactly"},
        "iat": {"type": "integer"},
        "exp": {"type": "integer", "description": "at most 300 s after iat"},
        "nbf": {"type": "integer"},
        "jti": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{22,128}$"},
        "check": {"type": "string", "examples": ["blue-badge-automatic"]},
        "purpose": {"type": "string", "examples": ["blue-badge-application"]},
        "lawful_basis": {"type": "string", "enum": sorted(LAWFUL_BASES)},
        "consent": {
            "type": "object",
            "required": ["id", "given_at", "method", "notice_url", "notice_digest"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "given_at": {"type": "string", "format": "date-time"},
                "method": {"type": "string"},
                "notice_url": {"type": "string", "format": "uri"},
                "notice_digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
            },
        },
        "as_of": {"type": "string", "format": "date", "description": "default: today"},
        "assurance": {"type": "string", "enum": list(ASSURANCE_LEVELS)},
        "subject": {
            "type": "object",
            "required": ["family_name", "date_of_birth"],
            "additionalProperties": False,
            "properties": {name: {"type": "string"} for name in SUBJECT_FIELDS},
        },
    },
}

ANSWER_CLAIMS: dict[str, Any] = {
    "type": "object",
    "description": "Payload of the eligibility answer JWS (typ eligibility-response+jwt), "
    "signed by a broker key published at /.well-known/jwks.json.",
    "required": [
        "iss",
        "aud",
        "iat",
        "exp",
        "jti",
        "query_jti",
        "check",
        "check_version",
        "as_of",
        "outcome",
        "log_index",
        "record_digest",
    ],
    "properties": {
        "iss": {"type": "string"},
        "aud": {"type": "string", "description": "the council's member id"},
        "iat": {"type": "integer"},
        "exp": {"type": "integer"},
        "jti": {"type": "string"},
        "query_jti": {"type": "string", "description": "binds the answer to the query"},
        "check": {"type": "string"},
        "check_version": {"type": "integer"},
        "as_of": {"type": "string", "format": "date"},
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "log_index": {"type": "integer", "description": "the consent record's index: a receipt"},
        "record_digest": {
            "type": "string",
            "pattern": "^[A-Za-z0-9+/]{43}=$",
            "description": "base64 SHA-256 of the record's salt and canonical body: the "
            "log's leaf at log_index is built from it, so an inclusion proof against a signed "
            "checkpoint proves the receipt",
        },
    },
}


def _query(name: str, *, required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": "string"}}


def _json(description: str, properties: dict[str, str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _audit_responses(description: str) -> dict[str, Any]:
    return {
        "200": {"description": description},
        "400": _problem_response("Malformed request.", _by_status(400)),
        "401": _problem_response("Not verified or replayed.", _by_status(401)),
        "403": _problem_response("Not an auditor, or no subject-access grant.", _by_status(403)),
    }


def openapi_document() -> dict[str, Any]:
    jwt_body = {
        "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"}
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ax-broker",
            "version": "1",
            "description": "Signed eligibility checks between councils and attribute providers, "
            "every query recorded in a consent log before it is answered.",
        },
        "paths": {
            "/v1/checks": {
                "post": {
                    "operationId": "check",
                    "summary": "Ask one named check about one resident; get a signed outcome",
                    "requestBody": {"required": True, "content": {JWT_MEDIA_TYPE: jwt_body}},
                    "responses": {
                        "200": {
                            "description": "Signed answer (compact JWS); see EligibilityAnswer",
                            "content": {JWT_MEDIA_TYPE: jwt_body},
                        },
                        "400": _problem_response("Malformed query claims.", _by_status(400)),
                        "401": _problem_response(
                            "Not verified (any reason, including replay).", _by_status(401)
                        ),
                        "403": _problem_response(
                            "Refused by policy; recorded, with log_index.", _by_status(403)
                        ),
                        "413": _problem_response("Body over 16 KiB.", _by_status(413)),
                        "415": _problem_response("Not application/jwt.", _by_status(415)),
                        "422": _problem_response("Subject fields missing.", _by_status(422)),
                        "429": _problem_response("Member over its rate limit.", _by_status(429)),
                        "503": _problem_response(
                            "A store or the registry is unavailable: fail closed.",
                            _by_status(503),
                        ),
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "operationId": "jwks",
                    "summary": "The broker's public signing keys (kid = RFC 7638 thumbprint)",
                    "responses": {
                        "200": {
                            "description": "JWK Set",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/JWKS"}
                                }
                            },
                        }
                    },
                }
            },
            "/v1/consents/withdrawals": {
                "post": {
                    "operationId": "withdrawConsent",
                    "summary": "Record that a resident withdrew a consent (signed "
                    "consent-withdrawal+jwt); later checks citing it are refused",
                    "requestBody": {"required": True, "content": {JWT_MEDIA_TYPE: jwt_body}},
                    "responses": {
                        "200": _json(
                            "The withdrawal's log index and record digest",
                            {
                                "log_index": "integer",
                                "record_digest": "string",
                                "consent_id": "string",
                            },
                        ),
                        "401": _problem_response("Not verified.", _by_status(401)),
                        "403": _problem_response("Not a relying party.", _by_status(403)),
                    },
                }
            },
            "/v1/log/checkpoint": {
                "get": {
                    "operationId": "checkpoint",
                    "summary": "The latest signed checkpoint (C2SP tlog-checkpoint signed note)",
                    "responses": {
                        "200": {"description": "signed note", "content": {"text/plain": {}}}
                    },
                }
            },
            "/v1/log/key": {
                "get": {
                    "operationId": "logKey",
                    "summary": "The log's Ed25519 verifier key (name+hash+key); pin it out of band",
                    "responses": {
                        "200": {"description": "verifier key", "content": {"text/plain": {}}}
                    },
                }
            },
            "/v1/log/proof/inclusion": {
                "get": {
                    "operationId": "inclusionProof",
                    "summary": "RFC 9162 inclusion proof of record `index` in the tree of `size`",
                    "parameters": [_query("index"), _query("size")],
                    "responses": {
                        "200": _json(
                            "Proof (base64 hashes)",
                            {
                                "index": "integer",
                                "tree_size": "integer",
                                "leaf_hash": "string",
                                "proof": "array",
                            },
                        ),
                        "400": _problem_response("Out of range.", _by_status(400)),
                    },
                }
            },
            "/v1/log/proof/consistency": {
                "get": {
                    "operationId": "consistencyProof",
                    "summary": "RFC 9162 consistency proof between tree sizes `from` and `to`",
                    "parameters": [_query("from"), _query("to")],
                    "responses": {
                        "200": _json(
                            "Proof (base64 hashes)",
                            {"from": "integer", "to": "integer", "proof": "array"},
                        ),
                        "400": _problem_response("Out of range.", _by_status(400)),
                    },
                }
            },
            "/v1/audit/records": {
                "get": {
                    "operationId": "auditRecords",
                    "summary": "Consent records, filtered and paginated (auditors; signed "
                    "audit-request+jwt in Authorization: Bearer)",
                    "security": [{"auditRequest": []}],
                    "parameters": [
                        _query(n, required=False)
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
                    "responses": _audit_responses("Records and the next cursor"),
                }
            },
            "/v1/audit/records/{index}": {
                "get": {
                    "operationId": "auditRecord",
                    "summary": "One record with its inclusion proof and the checkpoint it is in",
                    "security": [{"auditRequest": []}],
                    "parameters": [
                        {
                            "name": "index",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": _audit_responses("Record, checkpoint and inclusion proof"),
                }
            },
            "/v1/audit/subject-access": {
                "post": {
                    "operationId": "subjectAccess",
                    "summary": "Who checked this resident's data, when and why (needs the "
                    "subject-access grant); identifiers in, pseudonyms computed by the broker",
                    "security": [{"auditRequest": []}],
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
                    "responses": _audit_responses("The records about this person"),
                }
            },
            "/v1/audit/export": {
                "get": {
                    "operationId": "auditExport",
                    "summary": "JSONL export of every record and checkpoint, for axb audit verify",
                    "security": [{"auditRequest": []}],
                    "responses": _audit_responses("application/x-ndjson lines"),
                }
            },
            "/v1/registry": {
                "get": {
                    "operationId": "registry",
                    "summary": "The signed trust registry in force (typ trust-registry+jwt)",
                    "responses": {
                        "200": {"description": "compact JWS", "content": {JWT_MEDIA_TYPE: jwt_body}}
                    },
                }
            },
            "/v1/providers": {
                "get": {
                    "operationId": "providers",
                    "summary": "Each provider's availability, circuit state, scheduled outages "
                    "and latency percentiles",
                    "responses": {"200": {"description": "provider status list"}},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness",
                    "responses": {"200": {"description": "alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: registry fresh, stores reachable, consent log running",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "auditRequest": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWS, typ audit-request+jwt, claims htm/htu/body_sha256",
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "enum": [TYPE_PREFIX + s for s in PROBLEM_TYPES],
                        },
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "log_index": {"type": "integer"},
                        "retry_after": {"type": "integer"},
                    },
                },
                "JWKS": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                },
                "EligibilityQuery": QUERY_CLAIMS,
                "EligibilityAnswer": ANSWER_CLAIMS,
            },
        },
    }
