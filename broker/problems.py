"""The one place where errors become RFC 9457 ``application/problem+json`` responses.

Every verification failure looks the same to the caller (401, ``invalid-token``): which check
failed goes to the log, never to the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from aiohttp import web

from broker.errors import (
    BadRequest,
    LogUnavailable,
    Overloaded,
    RateLimited,
    Refused,
    Replayed,
    StoreUnavailable,
)
from connectors.errors import RequestRefused
from trust import credential, policy
from trust.bulk import InvalidItems
from trust.errors import (
    InvalidMessage,
    KeyUnavailable,
    PolicyRefusal,
    ProofRequestError,
    RegistryError,
    TrustError,
    VerificationError,
)

log = structlog.get_logger("broker.problems")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ax-broker:problem:"


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    status: int
    title: str


PROBLEM_TYPES: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType("invalid-token", 401, "The query could not be verified"),
        ProblemType("invalid-query", 400, "The query's claims are malformed"),
        ProblemType("bad-request", 400, "The request is malformed"),
        ProblemType("unsupported-media-type", 415, "Send application/jwt"),
        ProblemType("too-large", 413, "The request body is larger than 16 KiB"),
        ProblemType("request-timeout", 408, "The request body did not arrive in time"),
        ProblemType("not-found", 404, "No such resource"),
        ProblemType("method-not-allowed", 405, "Method not allowed"),
        ProblemType("rate-limited", 429, "Too many queries from this member"),
        ProblemType("overloaded", 503, "The broker is at capacity: retry after Retry-After"),
        ProblemType("store-unavailable", 503, "The replay store is unavailable"),
        ProblemType("log-unavailable", 503, "The consent log cannot commit"),
        ProblemType("registry-unavailable", 503, "No trust registry is in force"),
        ProblemType("key-unavailable", 503, "The broker's signing key cannot be reached"),
        ProblemType("internal-error", 500, "Internal error"),
        ProblemType(policy.MEMBER_SUSPENDED, 403, "The member is not active"),
        ProblemType(policy.ROLE_NOT_PERMITTED, 403, "The member's role does not allow this"),
        ProblemType(policy.UNKNOWN_CHECK, 403, "No such check in the registry"),
        ProblemType(
            policy.LOCAL_CHECK_OF_ANOTHER_COUNCIL, 403, "The check is another council's local one"
        ),
        ProblemType(policy.PURPOSE_NOT_PERMITTED, 403, "Purpose not permitted"),
        ProblemType(policy.CHECK_NOT_PERMITTED, 403, "Check not permitted for this purpose"),
        ProblemType(policy.CHECK_NOT_IN_FORCE, 403, "No version of the check is in force"),
        ProblemType(policy.LAWFUL_BASIS_MISSING, 403, "No lawful basis stated"),
        ProblemType(policy.LAWFUL_BASIS_NOT_PERMITTED, 403, "Lawful basis not permitted"),
        ProblemType(policy.CONSENT_REQUIRED, 403, "A consent reference is required"),
        ProblemType(policy.CONSENT_WITHDRAWN, 403, "The consent was withdrawn"),
        ProblemType(policy.ASSURANCE_TOO_LOW, 403, "Identity assurance too low"),
        ProblemType(policy.SUBJECT_FIELDS_MISSING, 422, "Subject fields missing for this check"),
        ProblemType(policy.NOT_AN_AUDITOR, 403, "Only auditors may read the consent log"),
        ProblemType(policy.SUBJECT_ACCESS_NOT_GRANTED, 403, "Subject access not granted"),
        ProblemType("invalid-proof-request", 400, "The proof request is out of range"),
        ProblemType(credential.CREDENTIAL_REQUIRED, 403, "An identity credential is required"),
        ProblemType(credential.CREDENTIAL_INVALID, 403, "The identity credential was refused"),
        ProblemType(credential.CREDENTIAL_VOT_TOO_LOW, 403, "The credential's vot is too low"),
        ProblemType(
            credential.SUBJECT_CONTRADICTS_CREDENTIAL, 403, "The query contradicts the credential"
        ),
        ProblemType("invalid-items", 400, "A bulk job's items file is refused: see row, field"),
        ProblemType("bulk-job-unfinished", 409, "The bulk job has not ended yet"),
        ProblemType(
            "bulk-callback-missing", 422, "A notice was asked for: no callback is registered"
        ),
    )
}


def _document(slug: str, detail: str | None, extra: dict[str, Any]) -> tuple[ProblemType, bytes]:
    kind = PROBLEM_TYPES.get(slug)
    if kind is None:  # a code without a type is our bug: still a problem document, never text
        log.error("problem_type_missing", slug=slug)
        kind, detail, extra = PROBLEM_TYPES["internal-error"], None, {}
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind.slug,
        "title": kind.title,
        "status": kind.status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return kind, orjson.dumps(body)


def problem(slug: str, detail: str | None = None, **extra: Any) -> web.Response:
    kind, body = _document(slug, detail, extra)
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra["retry_after"])
    return web.Response(
        body=body, status=kind.status, content_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def problem_for(error: Exception) -> tuple[web.Response, str]:
    """The response for an error, and the slug to log with it."""
    match error:
        case VerificationError() | Replayed():
            return problem("invalid-token"), "invalid-token"
        case InvalidItems(row=row, field=name):
            return problem("invalid-items", str(error), row=row, field=name), "invalid-items"
        case InvalidMessage():
            return problem("invalid-query", str(error)), "invalid-query"
        case Refused(refusal=refusal, log_index=index):
            return problem(refusal.code, refusal.detail, log_index=index), refusal.code
        case PolicyRefusal(code=code, detail=detail):
            return problem(code, detail), code
        case ProofRequestError():
            return problem("invalid-proof-request", str(error)), "invalid-proof-request"
        case BadRequest(slug=slug, detail=detail) | RequestRefused(slug=slug, detail=detail):
            return problem(slug, detail), slug
        case RateLimited(retry_after=seconds):
            return problem("rate-limited", retry_after=seconds), "rate-limited"
        case Overloaded(retry_after=seconds):
            return problem("overloaded", retry_after=seconds), "overloaded"
        case StoreUnavailable():
            return problem("store-unavailable"), "store-unavailable"
        case LogUnavailable():
            return problem("log-unavailable"), "log-unavailable"
        case KeyUnavailable():
            return problem("key-unavailable"), "key-unavailable"
        case RegistryError():
            return problem("registry-unavailable"), "registry-unavailable"
        case TrustError():
            return problem("invalid-token"), "invalid-token"
        case _:
            return problem("internal-error"), "internal-error"
