"""The batched attribute request and answer (``trust.batch``): one signature over many items,
each answer bound to its item, and every way a hostile answer confuses items refused."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pytest

from trust import jws
from trust.batch import (
    AttributeBatchRequest,
    batch_of,
    batch_request_claims,
    batch_response_claims,
    parse_batch_request,
    parse_batch_response,
)
from trust.errors import InvalidMessage, RegistryError, VerificationError
from trust.keys import SigningKey
from trust.messages import AttributeAnswer, AttributeRequest, Subject, new_jti
from trust.registry import _parse_provider

BROKER, PROVIDER = "broker-dev", "dwp-reference"
ATTRIBUTES = ("pip-moving-around-8-plus", "registered-blind")
BROKER_KEY, PROVIDER_KEY = SigningKey.generate(), SigningKey.generate()
KEYS = {
    BROKER_KEY.kid: jws.TrustedKey(BROKER, BROKER_KEY.verifying_key),
    PROVIDER_KEY.kid: jws.TrustedKey(PROVIDER, PROVIDER_KEY.verifying_key),
}


def request(family_name: str = "Smith") -> AttributeRequest:
    subject = Subject({"family_name": family_name, "date_of_birth": "1980-02-03"})
    return AttributeRequest(
        BROKER, PROVIDER, new_jti(), "blue-badge-application", ATTRIBUTES, date(2026, 1, 5), subject
    )


def signed_batch(count: int) -> tuple[AttributeBatchRequest, str]:
    batch = batch_of([request(f"Person {i}") for i in range(count)], jti=new_jti())
    claims = batch_request_claims(batch, now=int(time.time()))
    return batch, jws.sign(claims, BROKER_KEY, jws.ATTRIBUTE_BATCH_REQUEST)


def verify(token: str, profile: jws.Profile, audience: str) -> jws.Verified:
    return jws.verify(token, profile, keys=KEYS.get, audience=audience, now=int(time.time()))


def verified_answer(claims: dict[str, Any]) -> jws.Verified:
    token = jws.sign(claims, PROVIDER_KEY, jws.ATTRIBUTE_BATCH_RESPONSE)
    return verify(token, jws.ATTRIBUTE_BATCH_RESPONSE, BROKER)


def answers_for(batch: AttributeBatchRequest) -> list[AttributeAnswer]:
    results: list[AttributeAnswer] = []
    for n, item in enumerate(batch.items):
        if n % 3 == 0:
            results.append(
                AttributeAnswer(PROVIDER, "", item.id, "match", dict.fromkeys(ATTRIBUTES, n == 3))
            )
        else:
            results.append(
                AttributeAnswer(
                    PROVIDER, "", item.id, "no-match" if n % 3 == 1 else "unavailable", {}
                )
            )
    return results


def answer_claims(batch: AttributeBatchRequest, answers: list[AttributeAnswer]) -> dict[str, Any]:
    return batch_response_claims(
        provider=PROVIDER,
        jti=new_jti(),
        request_jti=batch.jti,
        answers=answers,
        broker=BROKER,
        now=int(time.time()),
    )


def test_a_batch_of_250_is_one_signature_over_every_item_and_its_minimised_subject() -> None:
    batch, token = signed_batch(250)
    assert len(token) > jws.MAX_TOKEN_BYTES  # beyond a single message's 16 KiB
    parsed = parse_batch_request(
        verify(token, jws.ATTRIBUTE_BATCH_REQUEST, PROVIDER), provider=PROVIDER, max_items=250
    )
    assert parsed == batch
    assert [r.subject for r in parsed.item_requests()] == [i.subject for i in batch.items]
    assert {r.jti for r in parsed.item_requests()} == {i.id for i in batch.items}


def test_a_single_profile_still_refuses_a_token_over_16_kib() -> None:
    _, token = signed_batch(250)
    with pytest.raises(VerificationError) as refused:
        jws.decode_compact(token)
    assert refused.value.reason == "token larger than 16 KiB"
    with pytest.raises(VerificationError) as refused:  # never accepted as a single request
        verify(token, jws.ATTRIBUTE_REQUEST, PROVIDER)
    assert refused.value.reason == "token larger than 16 KiB"


def test_a_batch_of_more_items_than_the_provider_declared_is_refused() -> None:
    _, token = signed_batch(11)
    verified = verify(token, jws.ATTRIBUTE_BATCH_REQUEST, PROVIDER)
    with pytest.raises(InvalidMessage, match=r"1\.\.10"):
        parse_batch_request(verified, provider=PROVIDER, max_items=10)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda items: [items[0], items[0]], "share an id"),
        (lambda items: [{**items[0], "id": "short"}], "128 bits"),
        (lambda items: [{**items[0], "why": "x"}], "exactly id and subject"),
        (lambda items: [{**items[0], "subject": {"family_name": "\u202e"}}], "family_name"),
        (lambda items: [], "1..10"),
    ],
    ids=["duplicate-id", "short-id", "extra-member", "bad-subject", "empty"],
)
def test_a_malformed_batch_request_is_refused(change: Any, message: str) -> None:
    batch, _ = signed_batch(2)
    claims = batch_request_claims(batch, now=int(time.time()))
    claims["items"] = change(claims["items"])
    token = jws.sign(claims, BROKER_KEY, jws.ATTRIBUTE_BATCH_REQUEST)
    verified = verify(token, jws.ATTRIBUTE_BATCH_REQUEST, PROVIDER)
    with pytest.raises(InvalidMessage, match=message):
        parse_batch_request(verified, provider=PROVIDER, max_items=10)


def test_each_item_answer_is_bound_to_its_item_id() -> None:
    batch, _ = signed_batch(6)
    answers = answers_for(batch)
    parsed = parse_batch_response(verified_answer(answer_claims(batch, answers)), request=batch)
    assert parsed.missing == frozenset()
    for sent in answers:
        got = parsed.answers[sent.request_jti]
        assert (got.result, dict(got.attributes)) == (sent.result, dict(sent.attributes))
    assert parsed.answers[batch.items[3].id].attributes == dict.fromkeys(ATTRIBUTES, True)
    assert parsed.answers[batch.items[0].id].attributes == dict.fromkeys(ATTRIBUTES, False)


def test_items_left_out_are_reported_missing_and_the_rest_kept() -> None:
    batch, _ = signed_batch(5)
    answers = answers_for(batch)
    parsed = parse_batch_response(verified_answer(answer_claims(batch, answers[:2])), request=batch)
    assert parsed.missing == {item.id for item in batch.items[2:]}
    assert set(parsed.answers) == {item.id for item in batch.items[:2]}


def _extra(batch: AttributeBatchRequest, answers: list[AttributeAnswer]) -> list[AttributeAnswer]:
    return [*answers[:-1], AttributeAnswer(PROVIDER, "", new_jti(), "no-match", {})]


def _twice(batch: AttributeBatchRequest, answers: list[AttributeAnswer]) -> list[AttributeAnswer]:
    return [answers[0], answers[0], *answers[2:]]


def _more(batch: AttributeBatchRequest, answers: list[AttributeAnswer]) -> list[AttributeAnswer]:
    return [*answers, answers[0]]


@pytest.mark.parametrize(
    ("tamper", "message"),
    [(_extra, "not asked"), (_twice, "twice"), (_more, "1..3")],
    ids=["an-item-never-asked", "one-item-answered-twice", "more-items-than-asked"],
)
def test_an_answer_that_confuses_items_is_refused_whole(tamper: Any, message: str) -> None:
    batch, _ = signed_batch(3)
    claims = answer_claims(batch, tamper(batch, answers_for(batch)))
    with pytest.raises(InvalidMessage, match=message):
        parse_batch_response(verified_answer(claims), request=batch)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"request": new_jti()}, "not bound to this batch"),
        ({"debug": "x"}, "unknown members"),
    ],
)
def test_an_answer_unbound_or_with_extra_claims_is_refused(
    change: dict[str, Any], message: str
) -> None:
    batch, _ = signed_batch(3)
    claims = {**answer_claims(batch, answers_for(batch)), **change}
    with pytest.raises(InvalidMessage, match=message):
        parse_batch_response(verified_answer(claims), request=batch)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"result": "match", "attributes": {"registered-blind": True}}, "differ from those"),
        ({"result": "match", "attributes": dict.fromkeys(ATTRIBUTES, 1)}, "must be bool"),
        ({"result": "no-match", "attributes": {}}, "only a match"),
        ({"result": "probably"}, "result is not"),
        ({"result": "no-match", "note": "x"}, "id, result and attributes only"),
    ],
)
def test_an_item_shaped_unlike_a_single_answer_is_refused(
    item: dict[str, Any], message: str
) -> None:
    batch, _ = signed_batch(2)
    claims = answer_claims(batch, answers_for(batch))
    claims["items"][0] = {"id": batch.items[0].id, **item}
    with pytest.raises(InvalidMessage, match=message):
        parse_batch_response(verified_answer(claims), request=batch)


def test_requests_that_differ_in_what_they_ask_are_not_one_batch() -> None:
    one, other = request(), request()
    other = AttributeRequest(
        one.broker, one.provider, other.jti, one.purpose, ATTRIBUTES[:1], one.as_of, one.subject
    )
    with pytest.raises(ValueError, match="share provider"):
        batch_of([one, other], jti=new_jti())
    with pytest.raises(ValueError, match="share a jti"):
        batch_of([one, one], jti=new_jti())


PROVIDER_DOC: dict[str, Any] = {
    "endpoint": "https://dwp.example/v1/attributes",
    "timeout_ms": 2000,
    "attributes": [{"name": "a", "description": "d", "matching": {"required": ["nino"]}}],
}


def test_a_provider_declares_no_batches_unless_it_says_so() -> None:
    info = _parse_provider("dwp", PROVIDER_DOC)
    assert (info.max_batch, info.batch_endpoint) == (1, None)
    batching = {"max_batch": 250, "batch_endpoint": "https://dwp.example/v1/attributes/batch"}
    info = _parse_provider("dwp", {**PROVIDER_DOC, **batching})
    assert (info.max_batch, info.batch_endpoint) == (250, batching["batch_endpoint"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_batch": 0}, "max_batch must be"),
        ({"max_batch": 1001, "batch_endpoint": "https://x.example/b"}, "max_batch must be"),
        ({"max_batch": True}, "max_batch must be"),
        ({"max_batch": 5}, "batch_endpoint must be a non-empty"),
        ({"max_batch": 5, "batch_endpoint": "http://x.example/b"}, "must be https"),
        ({"batch_endpoint": "https://x.example/b"}, "needs max_batch > 1"),
    ],
)
def test_bad_batch_declarations_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        _parse_provider("dwp", {**PROVIDER_DOC, **changes})
