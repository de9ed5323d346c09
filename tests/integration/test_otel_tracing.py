"""OpenTelemetry tracing (the optional extra), on a real broker, a real provider and an OTLP/HTTP
collector on loopback that decodes what it is sent: a check with a council's ``traceparent``
is one trace: the broker's SERVER span a child of the council's, a CLIENT span per provider
call, and the provider sent a ``traceparent`` whose parent is that CLIENT span. Nothing in any
span names a subject or carries a token. With no endpoint configured nothing is exported; a
configured endpoint without the extra installed is refused at start."""

from __future__ import annotations

import sys

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from broker.errors import SettingsError
from broker.otel import TRACING
from broker.scheme import dev as devscheme
from connectors.reference.population import subject_of
from members.council import EligibilityClient
from tests.support.servers import RunningProvider, StartBroker, start_app, url_of

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
COUNCIL_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{COUNCIL_SPAN}-01"
SERVER, CLIENT = 2, 3  # opentelemetry.proto SpanKind values


async def check(client: EligibilityClient, url: str, headers: dict[str, str]) -> tuple[int, str]:
    """One Blue Badge check: its status and the query token sent."""
    token, _ = client.sign_query(
        devscheme.BLUE_BADGE_CHECK,
        purpose="blue-badge-application",
        subject=subject_of("bb-yes-dla"),
        assurance="P2",
    )
    async with client.session.post(
        f"{url}/v1/checks",
        data=token,
        headers={"Content-Type": "application/jwt", "Accept": "application/jwt", **headers},
    ) as response:
        await response.read()
        return response.status, token


async def test_a_check_is_one_trace_from_the_council_to_each_provider(
    scheme: devscheme.DevScheme,
    providers: dict[str, RunningProvider],
    start_broker: StartBroker,
) -> None:
    exported: list[ExportTraceServiceRequest] = []
    bodies: list[bytes] = []

    async def collector(request: web.Request) -> web.Response:
        body = await request.read()
        bodies.append(body)
        exported.append(ExportTraceServiceRequest.FromString(body))
        return web.Response(status=200, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collector)
    otlp = await start_app(app)

    real = providers[devscheme.DWP]
    await real.stop()
    seen: list[str | None] = []

    async def dwp(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        answer = await real.service.kit.answer(await request.read())
        return web.Response(text=answer, content_type="application/jwt")

    provider_app = web.Application()
    provider_app.router.add_post("/v1/attributes", dwp)
    provider = await start_app(provider_app, real.service.port)
    try:
        broker = await start_broker(
            tracing={"otlp_endpoint": url_of(otlp) + "/v1/traces", "service_name": "axb-test"}
        )
        async with EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client:
            status, token = await check(client, broker.url, {"traceparent": PARENT})
            assert status == 200
        await broker.stop()  # flushes the exporter
    finally:
        await provider.cleanup()
        await otlp.cleanup()

    spans = [
        (resource.resource, span)
        for request in exported
        for resource in request.resource_spans
        for scoped in resource.scope_spans
        for span in scoped.spans
    ]
    services = {
        attribute.value.string_value
        for resource, _ in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert services == {"axb-test"}
    ours = [span for _, span in spans if span.trace_id.hex() == TRACE]
    [server] = [s for s in ours if s.kind == SERVER]
    assert server.name == "POST /v1/checks"
    assert server.parent_span_id.hex() == COUNCIL_SPAN
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    clients = [s for s in ours if s.kind == CLIENT]
    assert len(clients) >= 1
    assert all(s.parent_span_id == server.span_id for s in clients)
    [sent] = [h for h in seen if h is not None]
    assert sent.startswith(f"00-{TRACE}-")
    assert sent.split("-")[2] in {s.span_id.hex() for s in clients}  # the provider's parent

    person = subject_of("bb-yes-dla")
    exported_bytes = b"".join(bodies)
    for value in person.values():
        assert value.encode() not in exported_bytes
    assert token.split(".")[1].encode() not in exported_bytes
    assert broker.app.get(TRACING) is not None


async def test_no_endpoint_no_tracing_and_an_endpoint_without_the_extra_is_refused(
    start_broker: StartBroker, providers: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await start_broker()
    assert broker.app.get(TRACING) is None
    for name in [m for m in sys.modules if m.startswith("opentelemetry.sdk")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk", None)  # as if not installed
    with pytest.raises(SettingsError, match=r"ax-broker\[otel\]"):
        await start_broker(port=0, tracing={"otlp_endpoint": "http://127.0.0.1:9/v1/traces"})
