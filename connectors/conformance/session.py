"""One conformance run's conversation with the provider: the checker plays the broker, builds
valid and hostile attribute requests, posts them, and decodes (without trusting) what comes
back. Every error response is kept for the hygiene checks."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp

from connectors.base import read_limited
from connectors.conformance.target import ConformanceTarget
from trust import jws, testing
from trust.batch import (
    AttributeBatchAnswer,
    AttributeBatchRequest,
    batch_of,
    batch_request_claims,
    parse_batch_response,
)
from trust.errors import InvalidMessage, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import Signer, SigningKey
from trust.messages import AttributeRequest, attribute_request_claims, new_jti, parse_subject

READ_LIMIT: Final = 64 * 1024  # far above any answer or problem document a provider sends


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP exchange with the provider, as seen by the checker."""

    label: str
    status: int
    content_type: str
    body: bytes
    elapsed_ms: float
    received_at: int


@dataclass(frozen=True, slots=True)
class Answer:
    """The provider's reply to one valid request, decoded but not trusted."""

    label: str
    exchange: Exchange
    request_jti: str
    attributes: tuple[str, ...]
    compact: jws.Compact | None = None
    claims: Mapping[str, Any] | None = None
    problem: str | None = None


Who = Literal["known", "unknown"]


class ConformanceSession:
    """One conformance run: the HTTP session, the requests it builds and what came back."""

    def __init__(self, target: ConformanceTarget, http: aiohttp.ClientSession) -> None:
        self.target = target
        self.http = http
        self.errors: list[Exchange] = []  # every 4xx/5xx seen, for the hygiene checks
        self.stranger = SigningKey.generate()  # a key no registry knows
        self._answers: dict[str, Answer] = {}
        self._batch: BatchReply | None = None
        self.known = parse_subject(dict(target.known), required=())
        self.unknown = parse_subject(dict(target.unknown), required=())

    # requests

    def request(self, who: Who = "known") -> AttributeRequest:
        """A fresh valid request, exactly as the broker's connector builds one."""
        target = self.target
        return AttributeRequest(
            broker=target.broker_id,
            provider=target.provider_id,
            jti=new_jti(),
            purpose=target.purpose,
            attributes=target.attributes,
            as_of=target.as_of or datetime.now(UTC).date(),
            subject=self.known if who == "known" else self.unknown,
            predicates=target.predicates,
        )

    def claims(self, who: Who = "known") -> dict[str, Any]:
        """Fresh claims of a valid request, exactly as the broker's connector builds them."""
        return attribute_request_claims(self.request(who), now=int(time.time()))

    def batch(self, people: Sequence[Who]) -> AttributeBatchRequest:
        """A fresh valid batch request, one item per person, as the broker coalesces them."""
        return batch_of([self.request(who) for who in people], jti=new_jti())

    def sign_batch(self, claims: Mapping[str, Any]) -> bytes:
        token = jws.sign(claims, self.target.broker_key, jws.ATTRIBUTE_BATCH_REQUEST)
        return token.encode("ascii")

    def header(self, *, key: Signer | None = None, **changes: Any) -> dict[str, Any]:
        """The header of a request signed by ``key`` (the broker's unless given), changed."""
        kid = (key or self.target.broker_key).kid
        return {"alg": jws.ALGORITHM, "kid": kid, "typ": jws.ATTRIBUTE_REQUEST.typ, **changes}

    def sign(
        self,
        claims: Mapping[str, Any] | bytes,
        *,
        key: Signer | None = None,
        **header_changes: Any,
    ) -> bytes:
        """ES256 over any header and payload (the broker's key unless ``key`` is given)."""
        signer = key or self.target.broker_key
        header = self.header(key=signer, **header_changes)
        return testing.forge(header, claims, signer).encode("ascii")

    def valid(self, who: Who = "known") -> tuple[bytes, dict[str, Any]]:
        claims = self.claims(who)
        token = jws.sign(claims, self.target.broker_key, jws.ATTRIBUTE_REQUEST)
        return token.encode("ascii"), claims

    # HTTP

    async def post(
        self,
        label: str,
        body: bytes,
        *,
        content_type: str = JWT_MEDIA_TYPE,
        url: str | None = None,
        limit: int = READ_LIMIT,
    ) -> Exchange:
        started = time.perf_counter()
        async with self.http.post(
            url or self.target.endpoint,
            data=body,
            headers={"Content-Type": content_type, "Accept": JWT_MEDIA_TYPE},
            allow_redirects=False,
        ) as response:
            payload = await read_limited(response.content, limit)
            exchange = Exchange(
                label=label,
                status=response.status,
                content_type=response.content_type,
                body=payload,
                elapsed_ms=(time.perf_counter() - started) * 1000,
                received_at=int(time.time()),
            )
        if exchange.status >= 400:
            self.errors.append(exchange)
        return exchange

    async def answer(self, label: Literal["known", "unknown", "second"]) -> Answer:
        """The reply to one valid request (sent once per run and remembered)."""
        if label not in self._answers:
            token, claims = self.valid("unknown" if label == "unknown" else "known")
            exchange = await self.post(f"{label} request", token)
            self._answers[label] = decode_answer(label, exchange, claims)
        return self._answers[label]

    async def answers(self) -> list[Answer]:
        return [await self.answer(label) for label in ("known", "unknown", "second")]

    async def post_batch(self, label: str, body: bytes) -> Exchange:
        assert self.target.batch_endpoint is not None
        return await self.post(
            label, body, url=self.target.batch_endpoint, limit=jws.MAX_BATCH_TOKEN_BYTES
        )

    async def batch_answer(self) -> BatchReply:
        """The reply to one valid batch (known, unknown, known again), sent once per run and
        judged exactly as the broker's connector judges it."""
        if self._batch is None:
            batch = self.batch(("known", "unknown", "known"))
            claims = batch_request_claims(batch, now=int(time.time()))
            exchange = await self.post_batch("batch request", self.sign_batch(claims))
            self._batch = judge_batch(self.target, batch, exchange)
        return self._batch


@dataclass(frozen=True, slots=True)
class BatchReply:
    """The reply to one valid batch: the bound answer, or why the broker would discard it."""

    request: AttributeBatchRequest
    exchange: Exchange
    answer: AttributeBatchAnswer | None = None
    problem: str | None = None


def judge_batch(
    target: ConformanceTarget, batch: AttributeBatchRequest, exchange: Exchange
) -> BatchReply:
    if exchange.status != 200 or exchange.content_type != JWT_MEDIA_TYPE:
        problem = f"HTTP {exchange.status} {exchange.content_type}, no batch answer"
        return BatchReply(batch, exchange, problem=problem)

    def provider_keys(kid: str) -> jws.TrustedKey | None:
        trusted = target.registry.key(kid)
        return trusted if trusted is not None and trusted.owner == target.provider_id else None

    try:
        verified = jws.verify(
            exchange.body,
            jws.ATTRIBUTE_BATCH_RESPONSE,
            keys=provider_keys,
            audience=target.broker_id,
            now=exchange.received_at,
        )
        return BatchReply(batch, exchange, parse_batch_response(verified, request=batch))
    except VerificationError as exc:
        return BatchReply(batch, exchange, problem=f"not verified: {exc.reason}")
    except InvalidMessage as exc:
        return BatchReply(batch, exchange, problem=f"not bound: {exc}")


def decode_answer(label: str, exchange: Exchange, request: Mapping[str, Any]) -> Answer:
    """Decode a reply exactly as the broker's connector would see it, trusting nothing yet."""

    def failed(problem: str) -> Answer:
        asked = tuple(request["attributes"])
        return Answer(label, exchange, request["jti"], asked, problem=problem)

    if exchange.status != 200:
        return failed(f"HTTP {exchange.status} {exchange.content_type}, no answer")
    if exchange.content_type != JWT_MEDIA_TYPE:
        return failed(f"answer is {exchange.content_type}, not {JWT_MEDIA_TYPE}")
    try:
        compact = jws.decode_compact(exchange.body)
    except VerificationError as exc:
        return failed(f"answer is not a strict compact JWS: {exc.reason}")
    try:
        claims = jws.parse_json_object(compact.payload)
    except ValueError as exc:
        return failed(f"answer payload is not a strict JSON object: {exc}")
    return Answer(
        label, exchange, request["jti"], tuple(request["attributes"]), compact, claims, None
    )
