"""One conformance run's conversation with the provider: the checker plays the broker, builds
valid and hostile attribute requests, posts them, and decodes (without trusting) what comes
back. Every error response is kept for the hygiene checks."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp

from connectors.base import read_limited
from connectors.conformance.target import ConformanceTarget
from trust import jws, testing
from trust.errors import VerificationError
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
        self.known = parse_subject(dict(target.known), required=())
        self.unknown = parse_subject(dict(target.unknown), required=())

    # requests

    def claims(self, who: Who = "known") -> dict[str, Any]:
        """Fresh claims of a valid request, exactly as the broker's connector builds them."""
        target = self.target
        request = AttributeRequest(
            broker=target.broker_id,
            provider=target.provider_id,
            jti=new_jti(),
            purpose=target.purpose,
            attributes=target.attributes,
            as_of=target.as_of or datetime.now(UTC).date(),
            subject=self.known if who == "known" else self.unknown,
            predicates=target.predicates,
        )
        return attribute_request_claims(request, now=int(time.time()))

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
        self, label: str, body: bytes, *, content_type: str = JWT_MEDIA_TYPE
    ) -> Exchange:
        started = time.perf_counter()
        async with self.http.post(
            self.target.endpoint,
            data=body,
            headers={"Content-Type": content_type, "Accept": JWT_MEDIA_TYPE},
            allow_redirects=False,
        ) as response:
            payload = await read_limited(response.content, READ_LIMIT)
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
