"""The interface the broker calls, one object per provider, and the bounded body readers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import StreamReader, web

from connectors.errors import ProviderFault, RequestRefused
from trust.jws import JWT_MEDIA_TYPE, MAX_TOKEN_BYTES
from trust.messages import AttributeAnswer, AttributeRequest

# One item of a batch: its verified answer, or why it has none (its check is undetermined).
ItemResult = AttributeAnswer | ProviderFault


class Connector(Protocol):
    """Asks one provider for attributes. Returns a verified answer bound to ``request`` or
    raises :class:`~connectors.errors.ProviderFault`; never returns anything unverified. The
    caller bounds the time with its own deadline (cancellation)."""

    async def fetch(self, request: AttributeRequest) -> AttributeAnswer: ...

    async def fetch_batch(self, requests: Sequence[AttributeRequest]) -> list[ItemResult]:
        """One result per request, in order, for requests that share a
        :func:`trust.batch.batch_key`. A fault of the whole batch raises ``ProviderFault``.
        By default: the single fetches, concurrently."""
        return await fetch_each(self, requests)


async def fetch_each(
    connector: Connector, requests: Sequence[AttributeRequest]
) -> list[ItemResult]:
    """A batch as single fetches, concurrently: what a provider without batches gets."""
    results = await asyncio.gather(*(connector.fetch(r) for r in requests), return_exceptions=True)
    out: list[ItemResult] = []
    for result in results:
        if isinstance(result, AttributeAnswer | ProviderFault):
            out.append(result)
        elif isinstance(result, Exception):  # a connector bug must not break the others
            out.append(ProviderFault(f"connector-bug:{type(result).__name__}"))
        else:
            raise result
    return out


async def read_limited(stream: StreamReader, limit: int) -> bytes:
    """Read a body to its end, but never more than ``limit + 1`` bytes.

    One ``stream.read(n)`` returns only what has arrived so far; a body split by TLS, a proxy
    or the network must be read in a loop. A result longer than ``limit`` means: too large.
    """
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


async def read_jwt_body(request: web.Request, limit: int = MAX_TOKEN_BYTES) -> bytes:
    """The body of a request that must carry one compact JWS: ``application/jwt``, no
    ``Content-Encoding`` (a compact JWS is a few hundred bytes: compression only adds bombs and
    errors), at most ``limit`` bytes however it is split. Raises :class:`RequestRefused`."""
    if request.content_type != JWT_MEDIA_TYPE:
        raise RequestRefused(415, "unsupported-media-type", f"send {JWT_MEDIA_TYPE}")
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise RequestRefused(
            415, "unsupported-media-type", "send the body without Content-Encoding"
        )
    too_large = RequestRefused(413, "too-large", f"the body is larger than {limit // 1024} KiB")
    if (request.content_length or 0) > limit:
        raise too_large
    body = await read_limited(request.content, limit)
    if len(body) > limit:
        raise too_large
    return body.strip()


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of a provider's own HTTP API, as its adapter reads it: the status, the JSON
    body (``None`` if empty or not JSON) and the ``Retry-After`` header. Never logged."""

    status: int
    payload: Any
    retry_after: str | None


def retry_after_seconds(value: str | None, default: float) -> float:
    """A ``Retry-After`` in delta-seconds, else ``default`` (an HTTP-date is not trusted)."""
    if value is not None and value.strip().isdigit():
        return float(int(value.strip()))
    return default
