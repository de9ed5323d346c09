"""The provider kit: what an attribute provider runs to answer the broker.

A provider writes one async lookup function. The kit serves ``POST /v1/attributes`` around it:
it verifies the broker's signed request (registry keys of an active broker member, ``typ``,
exact ``aud``, lifetime, replay), refuses attributes or subject fields the provider did not
declare, runs the lookup under the provider's declared timeout, and signs an answer bound to
the request. A lookup that fails or runs late becomes a signed ``unavailable``, never a guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from aiohttp import web

from connectors.base import read_jwt_body
from connectors.errors import RequestRefused
from trust import jws
from trust.errors import InvalidMessage, KeyUnavailable, RegistryError, VerificationError
from trust.keys import Signer
from trust.messages import (
    AttributeAnswer,
    AttributeRequest,
    Subject,
    attribute_response_claims,
    new_jti,
    parse_attribute_request,
)
from trust.parameters import Predicate, check_bindings
from trust.registry import AttributeSpec, Registry, provider_fields
from trust.replay import ReplayCache, ReplayCacheFull

log = structlog.get_logger("connectors.provider_kit")


@dataclass(frozen=True, slots=True)
class LookupRequest:
    """What a provider's lookup sees: the attributes asked, the declared fields, the date, and
    the predicates asked (answer each under ``str(predicate)``)."""

    attributes: tuple[str, ...]
    subject: Subject
    as_of: date
    purpose: str
    predicates: tuple[Predicate, ...] = ()


# ``None`` means nobody matched; otherwise one boolean per attribute and per predicate asked.
Lookup = Callable[[LookupRequest], Awaitable[Mapping[str, bool] | None]]


def _boolean(value: object) -> bool:
    """A lookup's answer for one attribute: a boolean, nothing else (an amount or a band from a
    lookup is a bug, answered as ``unavailable``, never coerced into a yes)."""
    if type(value) is not bool:
        raise TypeError("a lookup answers each attribute with a boolean")
    return value


def _problem(error: RequestRefused) -> web.Response:
    body = {
        "type": f"urn:ax-broker:problem:{error.slug}",
        "title": error.slug.replace("-", " "),
        "status": error.status,
        "detail": error.detail,
    }
    return web.json_response(body, status=error.status, content_type="application/problem+json")


class ProviderKit:
    def __init__(
        self,
        *,
        provider_id: str,
        key: Signer,
        registry: Callable[[], Registry],
        lookup: Lookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider_id = provider_id
        self._key = key
        self._registry = registry
        self._lookup = lookup
        self._clock = clock
        self._replay = ReplayCache()
        self.answered = 0

    def _broker_keys(self, registry: Registry) -> jws.KeyLookup:
        def lookup(kid: str) -> jws.TrustedKey | None:
            trusted = registry.key(kid)
            if trusted is None:
                return None
            member = registry.members[trusted.owner]
            return trusted if member.active and "broker" in member.roles else None

        return lookup

    def _verify(self, body: bytes, registry: Registry, now: int) -> AttributeRequest:
        try:
            verified = jws.verify(
                body,
                jws.ATTRIBUTE_REQUEST,
                keys=self._broker_keys(registry),
                audience=self.provider_id,
                now=now,
            )
        except VerificationError as exc:
            log.info("request_refused", reason=exc.reason)
            raise RequestRefused(401, "invalid-token", "the request could not be verified") from exc
        try:
            request = parse_attribute_request(verified, provider=self.provider_id)
        except InvalidMessage as exc:
            raise RequestRefused(400, "invalid-request", str(exc)) from exc
        member = registry.members.get(self.provider_id)
        offered = member.provider.attributes if member and member.provider else {}
        asked = [*request.attributes, *(p.attribute for p in request.predicates)]
        unknown = [name for name in asked if name not in offered]
        if unknown:
            raise RequestRefused(400, "unknown-attribute", f"not offered here: {unknown}")
        for name in request.attributes:
            if offered[name].parameters:
                raise RequestRefused(400, "invalid-parameters", f"{name} takes parameters")
        self._check_predicates(request, offered)
        declared = {f for name in asked for f in provider_fields(offered[name])}
        extra = set(request.subject.fields) - declared
        if extra:
            raise RequestRefused(400, "undeclared-fields", f"fields not declared: {sorted(extra)}")
        try:
            first = self._replay.first_use(
                f"{verified.issuer}:{verified.jti}", expires_at=verified.expires_at + 30, now=now
            )
        except ReplayCacheFull as exc:
            raise RequestRefused(503, "busy", "replay cache full") from exc
        if not first:
            raise RequestRefused(401, "invalid-token", "the request could not be verified")
        return request

    def _check_predicates(
        self, request: AttributeRequest, offered: Mapping[str, AttributeSpec]
    ) -> None:
        """Each predicate binds exactly the parameters declared, each within its schema."""
        for predicate in request.predicates:
            try:
                check_bindings(
                    offered[predicate.attribute].parameters, predicate.parameters, str(predicate)
                )
            except ValueError as exc:
                raise RequestRefused(400, "invalid-parameters", str(exc)) from exc

    def _timeout(self, registry: Registry) -> float:
        member = registry.members.get(self.provider_id)
        return member.provider.timeout_ms / 1000 if member and member.provider else 1.0

    def _current_registry(self) -> Registry:
        try:
            return self._registry()
        except RegistryError as exc:  # stale registry: fail closed, as a clean problem
            raise RequestRefused(
                503, "registry-unavailable", "no trust registry is in force"
            ) from exc

    async def answer(self, body: bytes) -> str:
        """Verify one request and return the signed answer (raises ``RequestRefused``)."""
        registry = self._current_registry()
        now = int(self._clock())
        request = self._verify(body, registry, now)
        lookup_request = LookupRequest(
            request.attributes, request.subject, request.as_of, request.purpose, request.predicates
        )
        try:
            async with asyncio.timeout(self._timeout(registry)):
                found = await self._lookup(lookup_request)
            if found is None:
                answer = AttributeAnswer(self.provider_id, new_jti(), request.jti, "no-match", {})
            else:
                values = {name: _boolean(found[name]) for name in request.attributes}
                held = tuple(_boolean(found[str(p)]) for p in request.predicates)
                answer = AttributeAnswer(
                    self.provider_id, new_jti(), request.jti, "match", values, held
                )
        except Exception as exc:  # the provider's own failure: a clean signed "unavailable"
            log.warning("lookup_failed", error=type(exc).__name__)
            answer = AttributeAnswer(self.provider_id, new_jti(), request.jti, "unavailable", {})
        self.answered += 1
        claims = attribute_response_claims(answer, broker=request.broker, now=int(self._clock()))
        try:
            return jws.sign(claims, self._key, jws.ATTRIBUTE_RESPONSE)
        except KeyUnavailable as exc:  # its token went away: refuse, never sign otherwise
            raise RequestRefused(503, "key-unavailable", "the signing key is unavailable") from exc

    async def handle_attributes(self, request: web.Request) -> web.Response:
        try:
            token = await self.answer(await read_jwt_body(request))
        except RequestRefused as error:
            return _problem(error)
        return web.Response(text=token, content_type=jws.JWT_MEDIA_TYPE)

    async def handle_status(self, request: web.Request) -> web.Response:
        try:
            registry = self._current_registry()
        except RequestRefused as error:
            return _problem(error)
        member = registry.members.get(self.provider_id)
        body: dict[str, Any] = {
            "provider": self.provider_id,
            "status": "up" if member is not None and member.active else "suspended",
            "registry_seq": registry.seq,
            "answered": self.answered,
            "attributes": sorted(member.provider.attributes) if member and member.provider else [],
        }
        return web.json_response(body)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_provider_app(kit: ProviderKit) -> web.Application:
    app = web.Application(client_max_size=jws.MAX_TOKEN_BYTES + 1024)
    app.router.add_post("/v1/attributes", kit.handle_attributes)
    app.router.add_get("/v1/status", kit.handle_status)
    app.router.add_get("/healthz", _healthz)
    return app
