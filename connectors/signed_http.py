"""The signed-HTTP connector: the broker's side of the provider API.

The broker signs an ``attribute-request+jwt`` with its own key and POSTs it as
``application/jwt``. The answer must be an ``attribute-response+jwt`` signed by a key the
registry gives *this* provider, addressed to the broker and bound to the request's ``jti``;
anything else is discarded with a loggable reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from connectors.base import read_limited
from connectors.errors import ProviderFault
from connectors.tracing import outgoing_headers
from trust import jws
from trust.errors import InvalidMessage, VerificationError
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import SigningKey
from trust.messages import (
    AttributeAnswer,
    AttributeRequest,
    attribute_request_claims,
    parse_attribute_response,
)
from trust.registry import Registry


class SignedHttpConnector:
    def __init__(
        self,
        *,
        provider_id: str,
        session: aiohttp.ClientSession,
        broker_key: SigningKey,
        registry: Callable[[], Registry],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider_id = provider_id
        self._session = session
        self._key = broker_key
        self._registry = registry
        self._clock = clock

    def _endpoint(self, registry: Registry) -> str:
        member = registry.members.get(self.provider_id)
        if member is None or member.provider is None:
            raise ProviderFault("provider-not-registered")
        return member.provider.endpoint

    async def fetch(self, request: AttributeRequest) -> AttributeAnswer:
        registry = self._registry()
        endpoint = self._endpoint(registry)
        token = jws.sign(
            attribute_request_claims(request, now=int(self._clock())),
            self._key,
            jws.ATTRIBUTE_REQUEST,
        )
        try:
            async with self._session.post(
                endpoint,
                data=token,
                headers={
                    "Content-Type": JWT_MEDIA_TYPE,
                    "Accept": JWT_MEDIA_TYPE,
                    **outgoing_headers(),
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
                body = await read_limited(response.content, jws.MAX_TOKEN_BYTES)
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderFault("provider-unreachable") from exc
        if len(body) > jws.MAX_TOKEN_BYTES:
            raise ProviderFault("provider-answer-oversized")
        return self.verify_answer(body, request, registry)

    def verify_answer(
        self, body: bytes, request: AttributeRequest, registry: Registry
    ) -> AttributeAnswer:
        def provider_keys(kid: str) -> jws.TrustedKey | None:
            trusted = registry.key(kid)
            return trusted if trusted is not None and trusted.owner == self.provider_id else None

        try:
            verified = jws.verify(
                body,
                jws.ATTRIBUTE_RESPONSE,
                keys=provider_keys,
                audience=request.broker,
                now=int(self._clock()),
            )
            return parse_attribute_response(verified, request=request)
        except VerificationError as exc:
            raise ProviderFault(f"answer-not-verified: {exc.reason}") from exc
        except InvalidMessage as exc:
            raise ProviderFault(f"answer-invalid: {exc}") from exc
