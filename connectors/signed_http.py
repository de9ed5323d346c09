"""The signed-HTTP connector: the broker's side of the provider API.

The broker signs an ``attribute-request+jwt`` with its own key and POSTs it as
``application/jwt``. The answer must be an ``attribute-response+jwt`` signed by a key the
registry gives *this* provider, addressed to the broker and bound to the request's ``jti``;
anything else is discarded with a loggable reason. A provider that declares ``max_batch``
gets several checks' requests as one ``attribute-batch-request+jwt`` (:mod:`trust.batch`) at
its ``batch_endpoint``, and its one answer is bound item by item.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import aiohttp

from connectors.base import ItemResult, fetch_each, read_limited
from connectors.errors import ProviderFault
from connectors.tracing import provider_span
from trust import jws
from trust.batch import batch_of, batch_request_claims, parse_batch_response
from trust.errors import InvalidMessage, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import Signer
from trust.messages import (
    AttributeAnswer,
    AttributeRequest,
    attribute_request_claims,
    new_jti,
    parse_attribute_response,
)
from trust.registry import ProviderInfo, Registry

_NO_BATCH_ENDPOINT = frozenset({"provider-refused-404", "provider-refused-405"})


class SignedHttpConnector:
    def __init__(
        self,
        *,
        provider_id: str,
        session: aiohttp.ClientSession,
        broker_key: Signer,
        registry: Callable[[], Registry],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider_id = provider_id
        self._session = session
        self._key = broker_key
        self._registry = registry
        self._clock = clock

    def _provider(self, registry: Registry) -> ProviderInfo:
        member = registry.members.get(self.provider_id)
        if member is None or member.provider is None:
            raise ProviderFault("provider-not-registered")
        return member.provider

    async def fetch(self, request: AttributeRequest) -> AttributeAnswer:
        registry = self._registry()
        token = jws.sign(
            attribute_request_claims(request, now=int(self._clock())),
            self._key,
            jws.ATTRIBUTE_REQUEST,
        )
        body = await self._post(self._provider(registry).endpoint, token, jws.MAX_TOKEN_BYTES)
        return self.verify_answer(body, request, registry)

    async def fetch_batch(self, requests: Sequence[AttributeRequest]) -> list[ItemResult]:
        """One signed batch request for all of ``requests``, one answer verified for all; a
        provider that declared no batches gets the single requests."""
        registry = self._registry()
        provider = self._provider(registry)
        if provider.batch_endpoint is None or len(requests) > provider.max_batch:
            return await fetch_each(self, requests)
        batch = batch_of(requests, jti=new_jti())
        token = jws.sign(
            batch_request_claims(batch, now=int(self._clock())),
            self._key,
            jws.ATTRIBUTE_BATCH_REQUEST,
        )
        try:
            body = await self._post(provider.batch_endpoint, token, jws.MAX_BATCH_TOKEN_BYTES)
        except ProviderFault as fault:
            if fault.reason not in _NO_BATCH_ENDPOINT:
                raise
            # the registry says batches, the endpoint has none (a provider rolled back, a
            # proxy in front of it): ask item by item rather than fail every check in it
            return await fetch_each(self, requests)
        verified = self._verified(body, jws.ATTRIBUTE_BATCH_RESPONSE, batch.broker, registry)
        try:
            answer = parse_batch_response(verified, request=batch)
        except InvalidMessage as exc:
            raise ProviderFault(f"answer-invalid: {exc}") from exc
        missing = ProviderFault("batch-item-missing")
        return [answer.answers.get(r.jti, missing) for r in requests]

    async def _post(self, endpoint: str, token: str, limit: int) -> bytes:
        with provider_span(endpoint) as trace_headers:
            return await self._exchange(endpoint, token, limit, trace_headers)

    async def _exchange(
        self, endpoint: str, token: str, limit: int, trace_headers: dict[str, str]
    ) -> bytes:
        try:
            async with self._session.post(
                endpoint,
                data=token,
                headers={
                    "Content-Type": JWT_MEDIA_TYPE,
                    "Accept": JWT_MEDIA_TYPE,
                    **trace_headers,
                },
                allow_redirects=False,
            ) as response:
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    # the provider refused the request as the broker sent it: the broker's
                    # fault, logged as such, never held against the provider's circuit
                    raise ProviderFault(f"provider-refused-{response.status}")
                if response.status != 200:
                    raise ProviderFault(f"provider-http-{response.status}")
                if response.content_type != JWT_MEDIA_TYPE:
                    raise ProviderFault("provider-wrong-content-type")
                body = await read_limited(response.content, limit)
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderFault("provider-unreachable") from exc
        if len(body) > limit:
            raise ProviderFault("provider-answer-oversized")
        return body

    def _verified(
        self, body: bytes, profile: jws.Profile, audience: str, registry: Registry
    ) -> jws.Verified:
        def provider_keys(kid: str) -> jws.TrustedKey | None:
            trusted = registry.key(kid)
            return trusted if trusted is not None and trusted.owner == self.provider_id else None

        try:
            return jws.verify(
                body, profile, keys=provider_keys, audience=audience, now=int(self._clock())
            )
        except VerificationError as exc:
            raise ProviderFault(f"answer-not-verified: {exc.reason}") from exc

    def verify_answer(
        self, body: bytes, request: AttributeRequest, registry: Registry
    ) -> AttributeAnswer:
        verified = self._verified(body, jws.ATTRIBUTE_RESPONSE, request.broker, registry)
        try:
            return parse_attribute_response(verified, request=request)
        except InvalidMessage as exc:
            raise ProviderFault(f"answer-invalid: {exc}") from exc
