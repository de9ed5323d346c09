"""The OpenAPI 3.1 description of the broker's HTTP API, built from the same tables the code
uses (the route table, problem types, refusal codes, outcomes), so the document cannot drift
from behaviour."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from broker.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, TYPE_PREFIX
from broker.routes import Route
from trust.messages import ASSURANCE_LEVELS, BAND_PATTERN, OUTCOMES, SUBJECT_FIELDS
from trust.registry import LAWFUL_BASES

STATUS_DESCRIPTIONS = {
    400: "Malformed request.",
    401: "Not verified (any reason, including replay): every failure looks the same.",
    403: "Refused by policy (a refused check is recorded, with its log_index).",
    404: "No such resource.",
    405: "Method not allowed.",
    408: "The request body did not arrive within the body timeout.",
    409: "Not yet: the bulk job has not ended.",
    413: "Body too large.",
    415: "Wrong media type or Content-Encoding.",
    422: "Subject fields missing for this check.",
    429: "Over the member's rate limit (see Retry-After).",
    500: "Internal error.",
    503: "A store, the consent log or the registry is unavailable: fail closed.",
}


def problem_responses(slugs: Iterable[str]) -> dict[str, Any]:
    """The problem responses of one operation: each status it can answer, with exactly the
    problem types it can answer with."""
    by_status: dict[int, list[str]] = {}
    for slug in slugs:
        by_status.setdefault(PROBLEM_TYPES[slug].status, []).append(slug)
    return {
        str(status): {
            "description": STATUS_DESCRIPTIONS[status]
            + " One of: "
            + ", ".join(TYPE_PREFIX + s for s in sorted(by_status[status])),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted(by_status)
    }


def operation(route: Route) -> dict[str, Any]:
    return {
        "operationId": route.operation_id,
        "summary": route.summary,
        **route.details,
        "responses": {
            route.ok_status: dict(route.ok),
            **route.other_responses,
            **problem_responses(route.all_problems),
        },
    }


NAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "description": "white space collapsed; a letter; no control or format characters",
}
# The forms trust.messages.normalise_subject_field accepts (it also removes spaces and
# upper-cases postcodes, NINOs and registrations before matching).
SUBJECT_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "family_name": NAME,
    "given_names": NAME,
    "date_of_birth": {"type": "string", "format": "date", "description": "YYYY-MM-DD exactly"},
    "postcode": {"type": "string", "pattern": "^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$"},
    "nino": {
        "type": "string",
        "pattern": "^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D]$",
        "description": "not prefixed BG, GB, NK, KN, TN, NT or ZZ",
    },
    "vehicle_registration": {"type": "string", "pattern": "^[A-Z0-9]{1,7}$"},
}


def member_envelope(issuer: str) -> dict[str, Any]:
    """The registered claims every member message carries (trust.messages)."""
    return {
        "iss": {"type": "string", "description": issuer},
        "aud": {"type": "string", "description": "the broker's member id, exactly"},
        "iat": {"type": "integer"},
        "exp": {"type": "integer", "description": "at most 300 s after iat"},
        "nbf": {"type": "integer"},
        "jti": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{22,128}$"},
    }


BROKER_ENVELOPE: dict[str, Any] = {
    "iss": {"type": "string"},
    "aud": {"type": "string", "description": "the council's member id"},
    "iat": {"type": "integer"},
    "exp": {"type": "integer"},
}
"""The registered claims of a message the broker signs for a council (before its ``jti``)."""

QUERY_CLAIMS: dict[str, Any] = {
    "type": "object",
    "description": "Payload of the eligibility query JWS (header: alg ES256, kid, "
    "typ eligibility-query+jwt; nothing else). Signed with the council's registered key.",
    "required": ["iss", "aud", "iat", "exp", "jti", "check", "purpose", "subject"],
    "additionalProperties": False,
    "properties": {
        **member_envelope("the council's member id"),
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
            "description": "with a credential, family_name and date_of_birth may be left out: "
            "the credential supplies them (and given_names), and a field given here must agree",
            "additionalProperties": False,
            "properties": {name: SUBJECT_FIELD_SCHEMAS[name] for name in SUBJECT_FIELDS},
        },
        "credential": {
            "type": "string",
            "maxLength": 8192,
            "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$",
            "description": "the resident's core identity credential (GOV.UK One Login's "
            "coreIdentityJWT shape), issued to the council's client id at a registered "
            "identity provider; required by purposes whose identity is 'credential'",
        },
    },
}

WITHDRAWAL_CLAIMS: dict[str, Any] = {
    "type": "object",
    "description": "Payload of the consent withdrawal JWS (header: alg ES256, kid, "
    "typ consent-withdrawal+jwt). Signed with a relying party's registered key.",
    "required": ["iss", "aud", "iat", "exp", "jti", "consent_id", "withdrawn_at"],
    "additionalProperties": False,
    "properties": {
        **member_envelope("the relying party's member id"),
        "consent_id": {"type": "string", "minLength": 1, "maxLength": 100},
        "withdrawn_at": {"type": "string", "format": "date-time", "description": "RFC 3339"},
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
        **BROKER_ENVELOPE,
        "jti": {"type": "string"},
        "query_jti": {"type": "string", "description": "binds the answer to the query"},
        "check": {"type": "string"},
        "check_version": {"type": "integer"},
        "as_of": {"type": "string", "format": "date"},
        "outcome": {
            "description": "one of the four outcomes or, for a check that declares bands, the "
            "name of the one band that applies (in place of yes)",
            "anyOf": [
                {"type": "string", "enum": list(OUTCOMES)},
                {"type": "string", "pattern": BAND_PATTERN},
            ],
        },
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


BULK_NOTICE_CLAIMS: dict[str, Any] = {
    "type": "object",
    "description": "Payload of the end-of-job notice JWS (typ bulk-notice+jwt), signed by a "
    "broker key published at /.well-known/jwks.json: the results manifest's claims, the counts "
    "per outcome and why a job failed or was cancelled.",
    "required": [
        "iss",
        "aud",
        "iat",
        "exp",
        "jti",
        "job",
        "manifest_jti",
        "status",
        "items",
        "results",
        "records",
        "sha256",
        "log_index_range",
        "counts",
        "reason",
    ],
    "properties": {
        **BROKER_ENVELOPE,
        "jti": {
            "type": "string",
            "description": "the job id and '.notice': the same on every "
            "attempt, so a repeat can be ignored",
        },
        "job": {"type": "string"},
        "manifest_jti": {
            "type": "string",
            "description": "the jti of the manifest that submitted the job",
        },
        "status": {"enum": ["completed", "failed", "cancelled"]},
        "items": {"type": "integer"},
        "results": {"type": "integer"},
        "records": {"type": "integer"},
        "sha256": {
            "type": "object",
            "properties": {"ndjson": {"type": "string"}, "csv": {"type": "string"}},
        },
        "log_index_range": {"type": ["array", "null"], "items": {"type": "integer"}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "reason": {"type": ["string", "null"]},
    },
}

BULK_NOTICE_WEBHOOK: dict[str, Any] = {
    "post": {
        "operationId": "bulkNotice",
        "summary": "The broker posts this to the bulk_callback the registry names for the "
        "council, once a job submitted with notify: true has ended; retried with backoff "
        "until a 2xx (redirects are not followed)",
        "requestBody": {
            "required": True,
            "content": {
                "application/jwt": {
                    "schema": {
                        "type": "string",
                        "description": "a compact JWS whose payload is a BulkNotice",
                    }
                }
            },
        },
        "responses": {
            "2XX": {"description": "Taken: the broker stops posting it"},
            "default": {"description": "Not taken: the broker posts it again later"},
        },
    }
}


def openapi_document(routes: Iterable[Route]) -> dict[str, Any]:
    """The document of ``routes``, the same table the router is built from."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ax-broker",
            "version": "1",
            "description": "Signed eligibility checks between councils and attribute providers, "
            "every query recorded in a consent log before it is answered.",
        },
        "paths": paths,
        "webhooks": {"bulkNotice": BULK_NOTICE_WEBHOOK},
        "components": {
            "securitySchemes": {
                "auditRequest": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWS, typ audit-request+jwt, claims htm/htu/body_sha256",
                },
                "bulkRequest": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWS, typ bulk-request+jwt, claims htm/htu/body_sha256",
                },
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
                        "row": {"type": "integer", "description": "invalid-items: 0 = file"},
                        "field": {"type": ["string", "null"]},
                    },
                },
                "JWKS": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                },
                "EligibilityQuery": QUERY_CLAIMS,
                "ConsentWithdrawal": WITHDRAWAL_CLAIMS,
                "EligibilityAnswer": ANSWER_CLAIMS,
                "BulkNotice": BULK_NOTICE_CLAIMS,
            },
        },
    }
