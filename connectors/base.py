"""The interface the broker calls, one object per provider, and the one error root."""

from __future__ import annotations

from typing import Protocol

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
