"""The app factory. Resources with a lifetime live in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import structlog
from aiohttp import web

from broker.app_keys import (
    CLOCK,
    GATE,
    GUARDS,
    HTTP,
    METRICS,
    OPENAPI,
    PIPELINE,
    PROVIDER_REPORTS,
    REGISTRY,
    SETTINGS,
    SHEDDER,
    STEP,
    STOPPING,
    STORES,
    TEARDOWN,
    TRANSPARENCY,
    Stores,
)
from broker.bulk.service import install as install_bulk
from broker.coalesce import Coalescer
from broker.cosigning import WitnessClient
from broker.errors import BrokerError, ClientGone, Refused, StoreUnavailable
from broker.gate import Gate
from broker.metrics import Metrics, ProviderState
from broker.openapi import openapi_document
from broker.otel import TRACING, start_tracing
from broker.overload import LoadShedder
from broker.pipeline import CheckPipeline, RecordedStep
from broker.problems import problem, problem_for
from broker.resilience import ProviderGuards
from broker.routes import ROUTES, add_routes
from broker.settings import Settings
from broker.shutdown import Teardown
from broker.stores.admission import AdmissionStore, MemoryAdmissionStore, RedisAdmissionStore
from broker.stores.consent_log import open_consent_log
from broker.transparency import TransparencyLog
from connectors.base import Connector
from connectors.errors import ConnectorError
from connectors.registry_source import RegistrySource
from connectors.signed_http import SignedHttpConnector
from connectors.tracing import accept as accept_traceparent
from connectors.tracing import server_span
from trust import jws
from trust.errors import TrustError

log = structlog.get_logger("broker")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds a request id, renders every error as problem+json, writes the canonical line;
    with tracing on, inside the request's SERVER span."""
    tracing = request.app.get(TRACING)
    if tracing is None:
        return await _in_context(request, handler)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    attributes = {"http.request.method": request.method, "http.route": route}
    with server_span(
        tracing.tracer, f"{request.method} {route}", request.headers, attributes
    ) as span:
        response = await _in_context(request, handler)
        span.set_attribute("http.response.status_code", response.status)
        return response


async def _in_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    structlog.contextvars.clear_contextvars()
    supplied = request.headers.get("X-Request-Id", "")
    request_id = supplied if 8 <= len(supplied) <= 64 and supplied.isalnum() else uuid.uuid4().hex
    structlog.contextvars.bind_contextvars(request_id=request_id)
    trace = accept_traceparent(request.headers.get("traceparent"))
    if trace is not None:  # a trace id is no personal data: it ties the line to the trace
        structlog.contextvars.bind_contextvars(trace_id=trace.trace_id)
    started = time.perf_counter()
    slug: str | None = None
    reason: str | None = None
    try:
        response = await handler(request)
    except ClientGone:  # nobody is waiting: nothing was done, and nothing can be delivered
        slug, response = "client-gone", web.Response(status=499)
    except web.HTTPException as exc:
        slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
            exc.status, "bad-request"
        )
        response = problem(slug)
        if "Allow" in exc.headers:  # RFC 9110 §15.5.6: a 405 names the methods allowed
            response.headers["Allow"] = exc.headers["Allow"]
    except (BrokerError, TrustError, ConnectorError) as exc:
        response, slug = problem_for(exc)
        reason = getattr(exc, "reason", None) or type(exc).__name__
        metrics = request.app[METRICS]
        if isinstance(exc, Refused):
            metrics.check_outcomes.labels(exc.check, exc.requester, "refused").inc()
        elif isinstance(exc, StoreUnavailable):
            metrics.admission_errors.inc()
    except Exception:
        log.exception("unhandled_error")
        response, slug = problem_for(RuntimeError())
    response.headers["X-Request-Id"] = request_id
    if request.path == "/v1/checks":
        request.app[METRICS].checks.labels(slug or "answered").inc()
        if slug == "overloaded":
            return response  # counted, and summed up once a second (broker.overload)
        log.info(
            "check",
            status=response.status,
            problem=slug,
            reason=reason,
            providers=request.get(PROVIDER_REPORTS),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
    return response


async def publish_metrics(metrics: Metrics, every_s: float = 1.0) -> None:
    """Under ``axb serve --workers N``: write this worker's gauges each second, for the
    scrapes the other workers answer (nothing to do for a process on its own)."""
    while metrics.multiprocess:
        metrics.publish()
        await asyncio.sleep(every_s)


def forget_window_s(settings: Settings) -> int:
    """How long a forgotten jti could still be presented: the longest token lifetime plus
    leeway."""
    return jws.MAX_LIFETIME_SECONDS + settings.leeway_s


def make_admission_store(settings: Settings) -> AdmissionStore:
    window = forget_window_s(settings)
    if settings.redis_url:
        return RedisAdmissionStore(
            settings.redis_url, prefix=settings.redis_prefix, forget_window_s=window
        )
    return MemoryAdmissionStore(forget_window_s=window)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    app = web.Application(middlewares=[request_context], client_max_size=64 * 1024, handler_args={})
    registry = RegistrySource(settings.scheme, url=settings.registry_url, clock=clock)
    stores = Stores(
        make_admission_store(settings),
        open_consent_log(settings.consent_log),
    )
    connectors: dict[str, Connector] = {}

    def connector(provider_id: str) -> Connector:
        if provider_id not in connectors:
            connectors[provider_id] = SignedHttpConnector(
                provider_id=provider_id,
                session=app[HTTP],
                broker_key=settings.signing_key,
                registry=lambda: registry.snapshot,
                clock=clock,
            )
        return connectors[provider_id]

    app[SETTINGS] = settings
    tracing = start_tracing(settings)
    if tracing is not None:
        app[TRACING] = tracing
    # the teardown's half of the stop; aiohttp's runner spends the other half on requests
    app[TEARDOWN] = Teardown(settings.shutdown_timeout_s / 2)
    app[STOPPING] = asyncio.Event()
    app[REGISTRY] = registry
    app[STORES] = stores
    metrics = app[METRICS] = Metrics()
    transparency = TransparencyLog(
        stores.consent_log,
        settings.log_signer,
        every_records=settings.checkpoint_every_records,
        every_seconds=settings.checkpoint_every_seconds,
        on_demand_every_seconds=settings.public_checkpoint_every_seconds,
        clock=clock,
    )
    app[TRANSPARENCY] = transparency
    transparency.observe_append = metrics.log_append_seconds.observe
    stores.consent_log.observe_commit = metrics.observe_commit
    app[GUARDS] = ProviderGuards()
    metrics.read_at_scrape(
        providers=lambda: [
            ProviderState(p, g.breaker.state, g.in_flight) for p, g in app[GUARDS].items()
        ],
        log_size=lambda: transparency.known_size,
        checkpoint_age_s=transparency.checkpoint_age_s,
    )
    window_s = settings.coalesce_window_ms / 1000
    coalescer = Coalescer(window_s=window_s, guards=app[GUARDS]) if window_s > 0 else None
    app[CLOCK] = clock
    app[GATE] = Gate(
        broker_id=settings.broker_id,
        leeway_s=settings.leeway_s,
        default_rate_limit=settings.rate_limit_per_second,
        registry=registry,
        admission=stores.admission,
        seen_before=stores.consent_log.seen_query,
        forget_window_s=forget_window_s(settings),
        clock=clock,
    )
    app[OPENAPI] = openapi_document(ROUTES)
    app[SHEDDER] = LoadShedder(
        max_in_flight=settings.max_checks_in_flight,
        max_wait_s=settings.max_check_wait_ms / 1000,
        max_loop_lag_s=settings.max_loop_lag_ms / 1000,
    )
    app[STEP] = RecordedStep(
        settings=settings,
        connector=connector,
        transparency=transparency,
        guards=app[GUARDS],
        clock=clock,
        coalescer=coalescer,
    )
    app[PIPELINE] = CheckPipeline(
        settings=settings,
        gate=app[GATE],
        consent_log=stores.consent_log,
        step=app[STEP],
        clock=clock,
    )

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await stores.consent_log.start()
        try:
            await transparency.start()
        except BaseException:  # a log that fails its start check is closed, not left open
            await stores.consent_log.close()
            raise
        checkpointer = asyncio.create_task(transparency.run(), name="checkpointer")
        app[HTTP] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=128),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        witnesses = WitnessClient(transparency, registry.current, lambda: app[HTTP], clock=clock)
        cosigner = asyncio.create_task(
            witnesses.run(settings.checkpoint_every_seconds), name="cosigner"
        )
        watcher = asyncio.create_task(registry.watch(settings.registry_poll_s), name="registry")
        lag = asyncio.create_task(app[SHEDDER].watch_loop(), name="loop-lag")
        gauges = asyncio.create_task(publish_metrics(metrics), name="worker-gauges")
        yield
        stop = app[TEARDOWN]
        for task in (watcher, checkpointer, lag, cosigner, gauges):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop.step(task.get_name(), task)
        if coalescer is not None:
            await stop.step("coalescer", coalescer.close())
        await stop.step("http-client", app[HTTP].close())
        await stop.step("admission-store", stores.admission.close())
        if await stop.step("consent-log-drain", stores.consent_log.drain()):
            try:  # a checkpoint at shutdown covers every record
                await stop.step("final-checkpoint", transparency.checkpoint())
            except Exception:
                log.exception("final_checkpoint_failed")
        await stop.step("consent-log-close", stores.consent_log.close())
        if tracing is not None:
            await stop.step("tracing-flush", tracing.close())
        stop.check()

    app.cleanup_ctx.append(resources)
    install_bulk(app)  # after the log's resources: stops before they do
    add_routes(app)
    if settings.resident is not None:
        from broker.resident.page import add_resident_routes

        add_resident_routes(app)
    return app
