"""The batched attribute request and answer: one signature over up to N items.

A batch request (``typ`` attribute-batch-request+jwt, the same JWS profile as a single
request, up to 1 MiB) asks one provider the same attributes, for the same purpose and date,
about several subjects. Each item carries its own ``id`` (at least 128 bits; the broker uses
the jti the item would have had as a single request) and its own minimised subject. ``N`` is
what the provider declares in the registry (``max_batch``, default 1: no batching).

The answer (``typ`` attribute-batch-response+jwt) is bound to the batch's ``jti`` and binds
each item's result to its item ``id``. An item the provider did not answer is *missing* (its
check gets ``undetermined``); an item it answered twice or one that was never asked makes
the whole answer invalid, for a provider that confuses items cannot be trusted with any of
them. An item the provider could not look up it answers ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from trust.errors import InvalidMessage
from trust.jws import JTI_PATTERN, Verified
from trust.messages import (
    REGISTERED_CLAIMS,
    AttributeAnswer,
    AttributeRequest,
    Subject,
    attribute_request_claims,
    parse_provider_result,
    parse_request_envelope,
    parse_subject,
    provider_result_claims,
)

MAX_BATCH_ITEMS = 1000
_REQUEST_MEMBERS = REGISTERED_CLAIMS | {"purpose", "attributes", "as_of", "items"}
_ANSWER_MEMBERS = REGISTERED_CLAIMS | {"request", "items"}
_REQUEST_ITEM_MEMBERS = frozenset({"id", "subject"})
_ANSWER_ITEM_MEMBERS = frozenset({"id", "result", "attributes"})


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One subject in a batch. Never logged: the subject's ``repr`` shows field names only."""

    id: str
    subject: Subject


@dataclass(frozen=True, slots=True)
class AttributeBatchRequest:
    """The broker asks one provider the same attributes about several subjects."""

    broker: str
    provider: str
    jti: str
    purpose: str
    attributes: tuple[str, ...]
    as_of: date
    items: tuple[BatchItem, ...]

    def item_requests(self) -> tuple[AttributeRequest, ...]:
        """Each item as the single request it stands for (its ``jti`` is the item id)."""
        return tuple(
            AttributeRequest(
                self.broker,
                self.provider,
                item.id,
                self.purpose,
                self.attributes,
                self.as_of,
                item.subject,
            )
            for item in self.items
        )


def batch_key(request: AttributeRequest) -> tuple[str, str, str, tuple[str, ...], date]:
    """Requests with equal keys can travel in one batch."""
    return (request.broker, request.provider, request.purpose, request.attributes, request.as_of)


def batch_of(requests: Sequence[AttributeRequest], *, jti: str) -> AttributeBatchRequest:
    """One batch of single requests that share a :func:`batch_key` and have distinct jtis."""
    if not 0 < len(requests) <= MAX_BATCH_ITEMS:
        raise ValueError(f"a batch has 1..{MAX_BATCH_ITEMS} items")
    first = requests[0]
    if any(batch_key(r) != batch_key(first) for r in requests):
        raise ValueError("the requests of one batch must share provider, purpose, attributes")
    if len({r.jti for r in requests}) != len(requests):
        raise ValueError("two requests of one batch share a jti")
    return AttributeBatchRequest(
        broker=first.broker,
        provider=first.provider,
        jti=jti,
        purpose=first.purpose,
        attributes=first.attributes,
        as_of=first.as_of,
        items=tuple(BatchItem(r.jti, r.subject) for r in requests),
    )


def batch_request_claims(
    batch: AttributeBatchRequest, *, now: int, lifetime: int = 60
) -> dict[str, Any]:
    """A single request's claims, with ``items`` in place of its one ``subject``."""
    envelope = AttributeRequest(
        batch.broker,
        batch.provider,
        batch.jti,
        batch.purpose,
        batch.attributes,
        batch.as_of,
        Subject({}),
    )
    claims = attribute_request_claims(envelope, now=now, lifetime=lifetime)
    del claims["subject"]
    claims["items"] = [
        {"id": item.id, "subject": dict(item.subject.fields)} for item in batch.items
    ]
    return claims


def _item_id(value: Any) -> str:
    if not isinstance(value, str) or JTI_PATTERN.fullmatch(value) is None:
        raise InvalidMessage("an item id must be at least 128 bits of base64url")
    return value


def _items(value: Any, *, max_items: int) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not 0 < len(value) <= max_items:
        raise InvalidMessage(f"items must be a list of 1..{max_items} objects")
    if not all(isinstance(item, dict) for item in value):
        raise InvalidMessage("items must be objects")
    return value


def parse_batch_request(
    verified: Verified, *, provider: str, max_items: int
) -> AttributeBatchRequest:
    """Shape-check a verified batch request: at most ``max_items`` items (what the provider
    declared), distinct item ids, each subject well formed."""
    claims = verified.claims
    unknown = set(claims) - _REQUEST_MEMBERS
    if unknown:
        raise InvalidMessage(f"batch request has unknown members: {sorted(unknown)}")
    items: list[BatchItem] = []
    for raw in _items(claims.get("items"), max_items=max_items):
        if set(raw) != _REQUEST_ITEM_MEMBERS:
            raise InvalidMessage("a batch item has exactly id and subject")
        items.append(BatchItem(_item_id(raw["id"]), parse_subject(raw["subject"], required=())))
    if len({item.id for item in items}) != len(items):
        raise InvalidMessage("two batch items share an id")
    envelope = parse_request_envelope(verified, provider=provider)
    return AttributeBatchRequest(
        envelope.broker,
        envelope.provider,
        envelope.jti,
        envelope.purpose,
        envelope.attributes,
        envelope.as_of,
        tuple(items),
    )


@dataclass(frozen=True, slots=True)
class AttributeBatchAnswer:
    """A provider's signed answer to one batch: an answer per item id it answered, and the
    ids it left out (``missing``: those checks are undetermined)."""

    provider: str
    jti: str
    request_jti: str
    answers: Mapping[str, AttributeAnswer]
    missing: frozenset[str]


def batch_response_claims(
    *,
    provider: str,
    jti: str,
    request_jti: str,
    answers: Sequence[AttributeAnswer],
    broker: str,
    now: int,
    lifetime: int = 60,
) -> dict[str, Any]:
    """The claims of a batch answer; each answer's ``request_jti`` is its item id."""
    return {
        "iss": provider,
        "aud": broker,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti,
        "request": request_jti,
        "items": [{"id": a.request_jti, **provider_result_claims(a)} for a in answers],
    }


def parse_batch_response(
    verified: Verified, *, request: AttributeBatchRequest
) -> AttributeBatchAnswer:
    """Bind a verified batch answer to ``request``: the batch's jti, only item ids asked,
    each at most once, each result shaped as a single answer's (exactly the attributes asked,
    booleans, only on a match). Items left out are reported as ``missing``."""
    claims = verified.claims
    unknown = set(claims) - _ANSWER_MEMBERS
    if unknown:
        raise InvalidMessage(f"batch answer has unknown members: {sorted(unknown)}")
    if claims.get("request") != request.jti:
        raise InvalidMessage("batch answer is not bound to this batch")
    asked = {item.id for item in request.items}
    answers: dict[str, AttributeAnswer] = {}
    for raw in _items(claims.get("items"), max_items=len(request.items)):
        if not set(raw) <= _ANSWER_ITEM_MEMBERS or "id" not in raw:
            raise InvalidMessage("a batch answer item has id, result and attributes only")
        item_id = raw["id"]
        if item_id not in asked:
            raise InvalidMessage("batch answer names an item that was not asked")
        if item_id in answers:
            raise InvalidMessage("batch answer answers one item twice")
        result, attributes, _ = parse_provider_result(raw, request.attributes)
        answers[item_id] = AttributeAnswer(
            verified.issuer, verified.jti, item_id, result, attributes
        )
    return AttributeBatchAnswer(
        provider=verified.issuer,
        jti=verified.jti,
        request_jti=request.jti,
        answers=answers,
        missing=frozenset(asked - set(answers)),
    )
