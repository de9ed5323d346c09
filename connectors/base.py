"""The interface the broker calls, one object per provider, and the one error root."""

from __future__ import annotations

from typing import Protocol

from aiohttp import StreamReader

from trust.messages import AttributeAnswer, AttributeRequest


class ConnectorError(Exception):
    """Root of connector failures. The broker turns every one into ``undetermined``.

    ``reason`` is a short slug safe to log: it never holds personal data or tokens.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Connector(Protocol):
    """Asks one provider for attributes. Returns a verified answer bound to ``request`` or
    raises :class:`ConnectorError`; never returns anything unverified. The caller bounds the
    time with its own deadline (cancellation)."""

    async def fetch(self, request: AttributeRequest) -> AttributeAnswer: ...


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
