"""HTTP handlers of the service: parse, call, render. Errors are rendered by the middleware in
``app``; the audit API's handlers are in :mod:`broker.audit`."""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from broker.app_keys import (
    CLOCK,
    GATE,
    GUARDS,
    METRICS,
    OPENAPI,
    PIPELINE,
    PROVIDER_REPORTS,
    REGISTRY,
    SETTINGS,
    SHEDDER,
    STOPPING,
    STORES,
    TRANSPARENCY,
    WORKERS_FILE,
)
from broker.audit.export import b64
from connectors.base import read_jwt_body
from trust import jws, policy
from trust.jws import JWT_MEDIA_TYPE
from trust.keys import jwks_document
from trust.messages import parse_withdrawal
from trust.records import WithdrawalRecord, iso_ms


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def post_check(request: web.Request) -> web.Response:
    # The body first, then a place: a client sending its body a byte a second holds no place
    # (its connection's body timer ends it), so slow clients cannot lock real checks out.
    body = await read_jwt_body(request)
    app = request.app
    async with app[SHEDDER].place(lambda: _client_gone(request)):
        return await _check(request, body)


async def _check(request: web.Request, body: bytes) -> web.Response:
    app = request.app
    started = time.perf_counter()
    result = await app[PIPELINE].run(body)
    metrics = app[METRICS]
    metrics.check_seconds.observe(time.perf_counter() - started)
    metrics.check_outcomes.labels(result.check, result.requester, result.outcome).inc()
    for report in result.reports:
        metrics.provider_calls.labels(report.provider, report.status).inc()
        if report.latency_ms > 0:  # a call made (not one skipped by its circuit or an outage)
            metrics.provider_call_seconds.labels(report.provider).observe(report.latency_ms / 1000)
    request[PROVIDER_REPORTS] = [
        {"provider": r.provider, "status": r.status, "ms": r.latency_ms} for r in result.reports
    ]
    return web.Response(text=result.token, content_type=JWT_MEDIA_TYPE)


async def get_jwks(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    registered = request.app[REGISTRY].snapshot.keys_of(settings.broker_id)
    keys = {settings.signing_key.kid: settings.signing_key.verifying_key}
    keys.update({key.kid: key for key in registered})
    response = web.json_response(jwks_document(keys.values()))
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def get_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def get_readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[STOPPING].is_set():  # first, so that load balancers stop sending new checks here
        return web.json_response({"status": "stopping"}, status=503)
    registry = app[REGISTRY].snapshot
    checks = {
        "registry": registry.fresh_at(int(app[CLOCK]())),
        "admission_store": await app[STORES].admission.ready(),
        "consent_log": await app[STORES].consent_log.ready(),
    }
    ready = all(checks.values())
    status = "ready" if ready else "not-ready"
    body: dict[str, object] = {"status": status, "checks": checks, "registry_seq": registry.seq}
    workers = app.get(WORKERS_FILE)
    if workers is not None:  # the port stays served while a worker restarts: still ready
        try:
            body["workers"] = orjson.loads(workers.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            body["workers"] = None  # the supervisor has not written it yet
    return web.json_response(body, status=200 if ready else 503)


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI], dumps=lambda doc: orjson.dumps(doc).decode())


async def get_metrics(request: web.Request) -> web.Response:
    payload = request.app[METRICS].exposition()
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_providers(request: web.Request) -> web.Response:
    """Each provider's availability, circuit state, scheduled outages and latency percentiles."""
    registry = request.app[REGISTRY].snapshot
    guards = request.app[GUARDS]
    now = int(request.app[CLOCK]())
    providers = []
    for member in registry.members.values():
        if member.provider is None:
            continue
        info = member.provider
        tracked = guards.snapshot(member.id)
        outage = info.outage_at(now)
        circuit = tracked["circuit"]["state"] if tracked else "closed"
        if not member.active:
            availability = "suspended"
        elif outage is not None:
            availability = "scheduled-outage"
        elif circuit == "open":
            availability = "unavailable"
        else:
            availability = "available"
        providers.append(
            {
                "id": member.id,
                "name": member.name,
                "availability": availability,
                "attributes": sorted(info.attributes),
                "timeout_ms": info.timeout_ms,
                "outages": [
                    {"from": iso_ms(o.start * 1000), "to": iso_ms(o.end * 1000), "reason": o.reason}
                    for o in info.outages
                    if o.end > now
                ],
                **(
                    tracked
                    or {
                        "circuit": {"state": "closed", "consecutive_failures": 0},
                        "latency_ms": {"p50": None, "p95": None, "p99": None, "samples": 0},
                        "calls": {},
                        "in_flight": 0,
                        "max_concurrency": info.max_concurrency,
                    }
                ),
            }
        )
    return web.json_response({"providers": providers, "registry_seq": registry.seq})


async def get_registry(request: web.Request) -> web.Response:
    """The signed registry in force: anyone can verify it against the scheme's anchors, and
    other brokers and providers can poll it (``registry_url``)."""
    return web.Response(body=request.app[REGISTRY].document, content_type=JWT_MEDIA_TYPE)


async def post_withdrawal(request: web.Request) -> web.Response:
    """A council records that a resident withdrew a consent (``consent-withdrawal+jwt``);
    later checks citing it are refused."""
    body = await read_jwt_body(request)
    app = request.app
    passed = await app[GATE].admit(
        body,
        jws.CONSENT_WITHDRAWAL,
        lambda verified, _: parse_withdrawal(verified),
        authorize=policy.authorize_withdrawal,
    )
    withdrawal = passed.message
    record = WithdrawalRecord(
        recorded_at_ms=int(app[CLOCK]() * 1000),
        requester=withdrawal.requester,
        consent_id=withdrawal.consent_id,
        withdrawn_at=withdrawal.withdrawn_at,
        request_jti=withdrawal.jti,
    )
    appended = await app[TRANSPARENCY].append(record)
    return web.json_response(
        {
            "log_index": appended.index,
            "record_digest": b64(appended.digest),
            "consent_id": withdrawal.consent_id,
        }
    )
