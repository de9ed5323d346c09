"""The route table, the problem types and the refusal codes agree: every refusal code and every
error kind renders as a known problem type, every problem type is reachable from some route,
and the OpenAPI document lists for each route exactly the problems that route declares."""

from __future__ import annotations

import orjson
import pytest

from broker.errors import (
    BadRequest,
    LogGap,
    LogUnavailable,
    Overloaded,
    RateLimited,
    Refused,
    Replayed,
    SettingsError,
    StoreUnavailable,
)
from broker.openapi import openapi_document
from broker.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, TYPE_PREFIX, problem, problem_for
from broker.routes import ROUTES
from connectors.errors import RequestRefused
from trust import policy
from trust.errors import (
    InvalidMessage,
    PolicyRefusal,
    ProofRequestError,
    RegistryError,
    VerificationError,
)

DOCUMENT = openapi_document(ROUTES)


def test_every_refusal_code_has_a_problem_type() -> None:
    missing = [code for code in policy.REFUSAL_CODES if code not in PROBLEM_TYPES]
    assert not missing


def test_every_refusal_code_policy_defines_belongs_to_a_decision() -> None:
    defined = {
        value
        for name, value in vars(policy).items()
        if name.isupper() and isinstance(value, str) and name != "SUBJECT_ACCESS_GRANT"
    }
    assert defined == set(policy.REFUSAL_CODES)


def test_every_problem_type_is_reachable_from_a_route() -> None:
    declared = {slug for route in ROUTES for slug in route.all_problems}
    assert set(PROBLEM_TYPES) - declared == set()


def test_every_declared_problem_is_a_problem_type() -> None:
    for route in ROUTES:
        unknown = set(route.all_problems) - set(PROBLEM_TYPES)
        assert not unknown, f"{route.method} {route.path} declares {unknown}"


def test_the_document_lists_each_route_with_exactly_its_problems() -> None:
    for route in ROUTES:
        responses = DOCUMENT["paths"][route.path][route.method.lower()]["responses"]
        listed = {
            slug.removeprefix(TYPE_PREFIX)
            for status, response in responses.items()
            if status != "200" and "One of: " in response["description"]
            for slug in response["description"].split("One of: ")[1].split(", ")
        }
        assert listed == set(route.all_problems), f"{route.method} {route.path}"
        for status, response in responses.items():
            if "One of: " in response["description"]:
                for slug in response["description"].split("One of: ")[1].split(", "):
                    assert PROBLEM_TYPES[slug.removeprefix(TYPE_PREFIX)].status == int(status)


def test_a_check_does_not_advertise_audit_refusals() -> None:
    responses = DOCUMENT["paths"]["/v1/checks"]["post"]["responses"]
    text = orjson.dumps(responses).decode()
    assert "not-an-auditor" not in text
    assert "subject-access-not-granted" not in text
    assert "invalid-proof-request" not in text
    assert policy.ASSURANCE_TOO_LOW in text


def test_the_document_has_one_operation_per_route() -> None:
    operations = [
        (path, method.upper()) for path, item in DOCUMENT["paths"].items() for method in item
    ]
    assert sorted(operations) == sorted((r.path, r.method) for r in ROUTES)
    assert len({r.operation_id for r in ROUTES}) == len(ROUTES)


ERRORS = [
    VerificationError("bad signature"),
    Replayed("jti seen before"),
    InvalidMessage("as_of is not a date"),
    *(PolicyRefusal(code, "refused") for code in policy.REFUSAL_CODES),
    Refused(PolicyRefusal(policy.UNKNOWN_CHECK, "no such check"), 7),
    ProofRequestError("size beyond the log"),
    BadRequest("bad-request", "limit out of range"),
    BadRequest("not-found", "no record", 404),
    RequestRefused(415, "unsupported-media-type", "send application/jwt"),
    RequestRefused(413, "too-large", "too large"),
    RateLimited(retry_after=1),
    Overloaded(retry_after=1),
    StoreUnavailable("redis unreachable"),
    LogUnavailable("commit failed"),
    LogGap("indices not contiguous"),
    RegistryError("expired"),
    SettingsError("not a setting a request can cause"),
    KeyError("a raw bug"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_kind_renders_as_a_problem_document(error: Exception) -> None:
    response, slug = problem_for(error)
    assert slug in PROBLEM_TYPES
    assert response.content_type == PROBLEM_MEDIA_TYPE
    assert response.status == PROBLEM_TYPES[slug].status
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    assert body["type"] == TYPE_PREFIX + slug


def test_a_log_gap_is_503_log_unavailable_not_a_500() -> None:
    response, slug = problem_for(LogGap("indices not contiguous"))
    assert (response.status, slug) == (503, "log-unavailable")


def test_a_code_without_a_type_still_renders_a_problem_document() -> None:
    response = problem("no-such-problem-type", "detail")
    assert response.content_type == PROBLEM_MEDIA_TYPE
    assert response.status == 500
