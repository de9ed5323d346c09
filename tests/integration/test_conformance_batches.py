"""The conformance checker's batch checks catch a provider that breaks batches, and only the
checks it breaks: an item left out, an answer not bound to its batch, more items accepted
than the provider declared. A provider that declares no batches passes them as not
applicable (the VES adapter in ``test_conformance``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from broker.scheme import dev as devscheme
from connectors.conformance import ConformanceTarget, run_conformance, target_from_scheme
from connectors.conformance.target import load_scheme_registry
from connectors.provider_kit import ProviderKit, create_provider_app
from connectors.reference.attributes import DWP_ATTRIBUTES
from connectors.reference.population import TEST_IDENTITIES, PopulationIndex
from connectors.reference.providers import reference_batch_lookup, reference_lookup
from tests.support.servers import serve_on
from trust import jws
from trust.batch import AttributeBatchRequest, parse_batch_request
from trust.errors import InvalidMessage
from trust.keys import SigningKey
from trust.messages import new_jti
from trust.registry import Registry


def claims_of(token: str | bytes) -> dict[str, Any]:
    return jws.parse_json_object(
        jws.decode_compact(token, max_bytes=jws.MAX_BATCH_TOKEN_BYTES).payload
    )


class TamperingBatches(ProviderKit):
    """The provider kit, but every signed batch answer is changed by ``tamper`` and re-signed."""

    def tamper(self, claims: dict[str, Any]) -> dict[str, Any]:
        return claims

    async def answer_batch(self, body: bytes) -> str:
        claims = self.tamper(claims_of(await super().answer_batch(body)))
        return jws.sign(claims, self._key, jws.ATTRIBUTE_BATCH_RESPONSE)


class DropsAnItem(TamperingBatches):
    def tamper(self, claims: dict[str, Any]) -> dict[str, Any]:
        return {**claims, "items": claims["items"][:-1]}


class UnboundBatch(TamperingBatches):
    def tamper(self, claims: dict[str, Any]) -> dict[str, Any]:
        return {**claims, "request": new_jti()}


class TakesAnyNumber(ProviderKit):
    """Ignores the ``max_batch`` it declared."""

    def _verify_batch(self, body: bytes, registry: Registry, now: int) -> AttributeBatchRequest:
        verified = self._verified(body, jws.ATTRIBUTE_BATCH_REQUEST, registry, now)
        try:
            return parse_batch_request(verified, provider=self.provider_id, max_items=10_000)
        except InvalidMessage:
            return super()._verify_batch(body, registry, now)


BROKEN: Mapping[str, tuple[Callable[..., ProviderKit], frozenset[str]]] = {
    "drops-an-item": (DropsAnItem, frozenset({"answer-batch-items"})),
    "does-not-bind-the-batch": (
        UnboundBatch,
        frozenset({"answer-batch-bound", "answer-batch-items"}),
    ),
    "takes-any-number-of-items": (TakesAnyNumber, frozenset({"refuses-batch-too-large"})),
}


@pytest.fixture
async def broken_batches(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners, request: pytest.FixtureRequest
) -> AsyncIterator[ConformanceTarget]:
    factory, _ = BROKEN[request.param]
    registry = load_scheme_registry(scheme.root)
    index = PopulationIndex(TEST_IDENTITIES.values())
    kit = factory(
        provider_id=devscheme.DWP,
        key=SigningKey.from_pem(scheme.key_path(devscheme.DWP).read_bytes()),
        registry=lambda: registry,
        lookup=reference_lookup(DWP_ATTRIBUTES, index),
        batch_lookup=reference_batch_lookup(index),
    )
    runner = await serve_on(create_provider_app(kit), listeners.providers[devscheme.DWP])
    endpoint = f"http://127.0.0.1:{scheme.provider_ports[devscheme.DWP]}/v1/attributes"
    try:
        yield target_from_scheme(scheme.root, endpoint=endpoint, provider_id=devscheme.DWP)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("broken_batches", sorted(BROKEN), indirect=True)
async def test_a_provider_that_breaks_batches_fails_exactly_those_checks(
    broken_batches: ConformanceTarget, request: pytest.FixtureRequest
) -> None:
    assert broken_batches.max_batch == devscheme.REFERENCE_BATCH
    assert broken_batches.batch_endpoint == broken_batches.endpoint + "/batch"
    report = await run_conformance(broken_batches)
    _, expected = BROKEN[request.node.callspec.params["broken_batches"]]
    assert report.failed_ids == expected, report.render()
