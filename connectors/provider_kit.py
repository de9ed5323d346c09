"""The provider kit: what an attribute provider runs to answer the broker.

A provider writes one async lookup function. The kit serves ``POST /v1/attributes`` around it:
it verifies the broker's signed request (registry keys of an active broker member, ``typ``,
exact ``aud``, lifetime, replay), refuses attributes or subject fields the provider did not
declare, runs the lookup under the provider's declared timeout, and signs an answer bound to
the request. A lookup that fails or runs late becomes a signed ``unavailable``, never a guess.

A provider that declares ``max_batch`` (and its ``batch_endpoint``) in the registry is also
served ``POST /v1/attributes/batch``: one signed request for up to ``max_batch`` subjects
(:mod:`trust.batch`), answered by one signed answer item by item. It may give the kit a batch
lookup (one call for all items: one database query); without one the kit runs the single
lookup for each item concurrently. Items whose lookup failed are answered ``unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from aiohttp import web

from connectors.base import read_jwt_body
from connectors.errors import RequestRefused
from trust import jws
from trust.batch import AttributeBatchRequest, batch_response_claims, parse_batch_request
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
Found = Mapping[str, bool] | None
Lookup = Callable[[LookupRequest], Awaitable[Found]]
BATCH_PATH = "/v1/attributes/batch"


@dataclass(frozen=True, slots=True)
class BatchLookupRequest:
    """What a provider's batch lookup sees: the attributes asked, each item's declared fields
    by item id, the date."""

    attributes: tuple[str, ...]
    subjects: Mapping[str, Subject]
    as_of: date
    purpose: str


# What was found for each item id; an item id left out is answered "unavailable".
BatchLookup = Callable[[BatchLookupRequest], Awaitable[Mapping[str, Found]]]


def _answer_of(
    provider: str, request_jti: str, attributes: Sequence[str], found: Found
) -> AttributeAnswer:
    if found is None:
        return AttributeAnswer(provider, new_jti(), request_jti, "no-match", {})
    try:
        values = {name: _boolean(found[name]) for name in attributes}
    except (KeyError, TypeError):  # a lookup's bug answers this item "unavailable"
        return AttributeAnswer(provider, request_jti, request_jti, "unavailable", {})
    return AttributeAnswer(provider, new_jti(), request_jti, "match", values)


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
        batch_lookup: BatchLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider_id = provider_id
        self._key = key
        self._registry = registry
        self._lookup = lookup
        self._batch_lookup = batch_lookup
        self._clock = clock
        self._replay = ReplayCache()
        self.answered = 0  # items answered, single or in batches
        self.batches_answered = 0

    def _broker_keys(self, registry: Registry) -> jws.KeyLookup:
        def lookup(kid: str) -> jws.TrustedKey | None:
            trusted = registry.key(kid)
            if trusted is None:
                return None
            member = registry.members[trusted.owner]
            return trusted if member.active and "broker" in member.roles else None

        return lookup

    def _verified(
        self, body: bytes, profile: jws.Profile, registry: Registry, now: int
    ) -> jws.Verified:
        try:
            return jws.verify(
                body, profile, keys=self._broker_keys(registry), audience=self.provider_id, now=now
            )
        except VerificationError as exc:
            log.info("request_refused", reason=exc.reason)
            raise RequestRefused(401, "invalid-token", "the request could not be verified") from exc

    def _check_asked(
        self,
        registry: Registry,
        attributes: Sequence[str],
        subjects: Iterable[Subject],
        predicates: Sequence[Predicate] = (),
    ) -> None:
        """Only attributes this provider offers (yes/no ones without parameters, predicates
        within their schemas), only subject fields it declared for them."""
        member = registry.members.get(self.provider_id)
        offered = member.provider.attributes if member and member.provider else {}
        asked = [*attributes, *(p.attribute for p in predicates)]
        unknown = [name for name in asked if name not in offered]
        if unknown:
            raise RequestRefused(400, "unknown-attribute", f"not offered here: {unknown}")
        for name in attributes:
            if offered[name].parameters:
                raise RequestRefused(400, "invalid-parameters", f"{name} takes parameters")
        self._check_predicates(predicates, offered)
        declared = {f for name in asked for f in provider_fields(offered[name])}
        for subject in subjects:
            extra = set(subject.fields) - declared
            if extra:
                raise RequestRefused(
                    400, "undeclared-fields", f"fields not declared: {sorted(extra)}"
                )

    def _use_up(self, verified: jws.Verified, now: int) -> None:
        try:
            first = self._replay.first_use(
                f"{verified.issuer}:{verified.jti}", expires_at=verified.expires_at + 30, now=now
            )
        except ReplayCacheFull as exc:
            raise RequestRefused(503, "busy", "replay cache full") from exc
        if not first:
            raise RequestRefused(401, "invalid-token", "the request could not be verified")

    def _verify(self, body: bytes, registry: Registry, now: int) -> AttributeRequest:
        verified = self._verified(body, jws.ATTRIBUTE_REQUEST, registry, now)
        try:
            request = parse_attribute_request(verified, provider=self.provider_id)
        except InvalidMessage as exc:
            raise RequestRefused(400, "invalid-request", str(exc)) from exc
        self._check_asked(registry, request.attributes, (request.subject,), request.predicates)
        self._use_up(verified, now)
        return request

    def _check_predicates(
        self, predicates: Sequence[Predicate], offered: Mapping[str, AttributeSpec]
    ) -> None:
        """Each predicate binds exactly the parameters declared, each within its schema."""
        for predicate in predicates:
            try:
                check_bindings(
                    offered[predicate.attribute].parameters, predicate.parameters, str(predicate)
                )
            except ValueError as exc:
                raise RequestRefused(400, "invalid-parameters", str(exc)) from exc

    def _verify_batch(self, body: bytes, registry: Registry, now: int) -> AttributeBatchRequest:
        verified = self._verified(body, jws.ATTRIBUTE_BATCH_REQUEST, registry, now)
        member = registry.members.get(self.provider_id)
        max_items = member.provider.max_batch if member and member.provider else 1
        try:
            batch = parse_batch_request(verified, provider=self.provider_id, max_items=max_items)
        except InvalidMessage as exc:
            raise RequestRefused(400, "invalid-request", str(exc)) from exc
        self._check_asked(registry, batch.attributes, (item.subject for item in batch.items))
        self._use_up(verified, now)
        return batch

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

    async def answer_batch(self, body: bytes) -> str:
        """Verify one batch request and return the signed batch answer: every item answered,
        an item whose lookup failed or ran late as ``unavailable``."""
        registry = self._current_registry()
        now = int(self._clock())
        batch = self._verify_batch(body, registry, now)
        request = BatchLookupRequest(
            batch.attributes,
            {item.id: item.subject for item in batch.items},
            batch.as_of,
            batch.purpose,
        )
        timeout = self._timeout(registry)
        try:
            if self._batch_lookup is not None:
                async with asyncio.timeout(timeout):
                    found = await self._batch_lookup(request)
            else:
                found = await self._singles(request, timeout)
        except Exception as exc:  # the whole lookup failed: every item "unavailable"
            log.warning("batch_lookup_failed", error=type(exc).__name__, items=len(batch.items))
            found = {}
        answers = [
            _answer_of(self.provider_id, item.id, batch.attributes, found[item.id])
            if item.id in found
            else AttributeAnswer(self.provider_id, item.id, item.id, "unavailable", {})
            for item in batch.items
        ]
        self.answered += len(answers)
        self.batches_answered += 1
        claims = batch_response_claims(
            provider=self.provider_id,
            jti=new_jti(),
            request_jti=batch.jti,
            answers=answers,
            broker=batch.broker,
            now=int(self._clock()),
        )
        try:
            return jws.sign(claims, self._key, jws.ATTRIBUTE_BATCH_RESPONSE)
        except KeyUnavailable as exc:  # its token went away: refuse, never sign otherwise
            raise RequestRefused(503, "key-unavailable", "the signing key is unavailable") from exc

    async def _singles(self, request: BatchLookupRequest, limit_s: float) -> dict[str, Found]:
        """A batch through the single lookup, concurrently: what a provider without a batch
        lookup serves. An item whose lookup fails or is still running at the timeout is left
        out (it is answered ``unavailable``)."""
        tasks = {
            asyncio.ensure_future(
                self._lookup(
                    LookupRequest(request.attributes, subject, request.as_of, request.purpose)
                )
            ): item_id
            for item_id, subject in request.subjects.items()
        }
        done, pending = await asyncio.wait(tasks, timeout=limit_s)
        for task in pending:
            task.cancel()
        found: dict[str, Found] = {}
        failed = 0
        for task in done:
            if task.exception() is None:
                found[tasks[task]] = task.result()
            else:
                failed += 1
        if failed or pending:
            log.warning("lookup_failed", items=failed, late=len(pending))
        return found

    async def handle_attributes(self, request: web.Request) -> web.Response:
        try:
            token = await self.answer(await read_jwt_body(request))
        except RequestRefused as error:
            return _problem(error)
        return web.Response(text=token, content_type=jws.JWT_MEDIA_TYPE)

    async def handle_batch(self, request: web.Request) -> web.Response:
        try:
            body = await read_jwt_body(request, jws.MAX_BATCH_TOKEN_BYTES)
            token = await self.answer_batch(body)
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
            "batches_answered": self.batches_answered,
            "attributes": sorted(member.provider.attributes) if member and member.provider else [],
        }
        return web.json_response(body)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_provider_app(kit: ProviderKit) -> web.Application:
    app = web.Application(client_max_size=jws.MAX_BATCH_TOKEN_BYTES + 1024)
    app.router.add_post("/v1/attributes", kit.handle_attributes)
    app.router.add_post(BATCH_PATH, kit.handle_batch)
    app.router.add_get("/v1/status", kit.handle_status)
    app.router.add_get("/healthz", _healthz)
    return app
