"""The one gate every signed message from a scheme member passes: verify, admit, authorise.

1. **verify** the compact JWS against the registry snapshot in force (key of ``iss``, ``typ``,
   ``aud`` = this broker, lifetime, leeway) — any failure is a bare 401;
2. **parse** its claims into the message type (malformed claims: 400, nothing used up);
3. **admit** its ``jti`` once and count it against the member's rate limit, in the shared store
   (a replay is refused as any failed verification; over the rate, 429 without using the jti).
   If the store forgot its state less than a token lifetime ago, the jti must also be absent
   from the consent log, which records every admitted check and withdrawal;
4. **authorise** the member for what the message asks, where the caller's rule is a pure
   function of the registry (checks decide later, in the pipeline, because their refusals are
   recorded).

Checks, audit requests and consent withdrawals all pass here; nothing else verifies a member's
message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from broker.errors import RateLimited, Replayed
from broker.stores.admission import AdmissionStore
from connectors.registry_source import RegistrySource
from trust import jws
from trust.registry import Registry

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Passed(Generic[M]):
    """A message through the gate: the parsed message, who sent it, the registry snapshot it
    was verified against (use it for the rest of the request) and the time it was checked."""

    message: M
    sender: str
    registry: Registry
    now: float


class Gate:
    def __init__(
        self,
        *,
        broker_id: str,
        leeway_s: int,
        default_rate_limit: int,
        registry: RegistrySource,
        admission: AdmissionStore,
        seen_before: Callable[..., Awaitable[bool]],
        forget_window_s: int,
        clock: Callable[[], float],
    ) -> None:
        """``seen_before(member, jti, since_ms=...)`` proves a jti's first use when the
        admission store has forgotten (the consent log's ``seen_query``)."""
        self._broker_id = broker_id
        self._leeway_s = leeway_s
        self._default_rate_limit = default_rate_limit
        self._registry = registry
        self._admission = admission
        self._seen_before = seen_before
        self._forget_window_s = forget_window_s
        self._clock = clock

    async def admit(
        self,
        token: bytes,
        profile: jws.Profile,
        parse: Callable[[jws.Verified, float], M],
        *,
        log_context: Callable[[M], Mapping[str, str]] | None = None,
        authorize: Callable[[Registry, str], None] | None = None,
    ) -> Passed[M]:
        """Verify ``token`` as ``profile``, ``parse`` it, admit its ``jti``, ``authorize`` its
        sender. Raises ``VerificationError`` or ``Replayed`` (401), ``InvalidMessage`` (400),
        ``RateLimited`` (429), ``StoreUnavailable`` (503) or ``PolicyRefusal`` (403)."""
        now = self._clock()
        registry = self._registry.current()  # one snapshot for the whole request
        verified = jws.verify(
            token,
            profile,
            keys=registry.key,
            audience=self._broker_id,
            now=int(now),
            leeway=self._leeway_s,
        )
        message = parse(verified, now)
        if log_context is not None:
            structlog.contextvars.bind_contextvars(**log_context(message))
        sender = verified.issuer
        limit = registry.members[sender].rate_limit_per_second or self._default_rate_limit
        admitted = await self._admission.admit(
            sender,
            verified.jti,
            expires_at=verified.expires_at + self._leeway_s,
            now=now,
            limit=limit,
        )
        if admitted == "ok-unproven":  # the store forgot lately: the log has every used jti
            since_ms = int((now - self._forget_window_s) * 1000) - 60_000
            if await self._seen_before(sender, verified.jti, since_ms=since_ms):
                admitted = "replayed"
        if admitted == "replayed":
            raise Replayed("jti seen before")
        if admitted == "rate-limited":
            raise RateLimited(retry_after=1)
        if authorize is not None:
            authorize(registry, sender)
        return Passed(message, sender, registry, now)
