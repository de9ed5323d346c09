"""The witness's HTTP interface (C2SP tlog-witness): ``POST /add-checkpoint`` and, for
monitors, ``GET /<lowercase hex SHA-256 of the origin>/checkpoint``.

Refusals carry the spec's status and a one-line plain-text reason; a 409 says the size the
witness last cosigned, as ``text/x.tlog.size``. This module is the one place where the
witness's refusals become HTTP. Nothing here logs more than the origin, sizes and statuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from broker.witness.settings import WitnessSettings
from broker.witness.state import WitnessState
from trust.errors import KeyUnavailable
from trust.witnessing import MAX_BODY_BYTES, WitnessRefusal, parse_add_checkpoint

log = structlog.get_logger("broker.witness")
SIZE_MEDIA_TYPE = "text/x.tlog.size"
STATE = web.AppKey("witness_state", WitnessState)


def create_witness_app(
    settings: WitnessSettings, *, clock: Callable[[], float] = time.time
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    by_hash = {hashlib.sha256(o.encode("utf-8")).hexdigest(): o for o in settings.log_keys}

    async def add_checkpoint(request: web.Request) -> web.Response:
        try:
            submitted = parse_add_checkpoint(await request.read())
        except WitnessRefusal as refusal:
            log.warning("checkpoint_refused", status=refusal.status, reason=refusal.detail)
            return web.Response(status=refusal.status, text=refusal.detail + "\n")
        try:
            cosignature = await asyncio.to_thread(
                app[STATE].add_checkpoint,
                submitted,
                log_keys=settings.log_keys,
                cosigner=settings.cosigner,
                now=int(clock()),
            )
        except WitnessRefusal as refusal:
            log.warning(
                "checkpoint_refused",
                status=refusal.status,
                # an unknown origin is the caller's text: never written to the log
                origin=submitted.origin if submitted.origin in settings.log_keys else None,
                latest_size=refusal.latest_size,
                reason=refusal.detail,
            )
            if refusal.status == 409:
                return web.Response(
                    status=409, text=f"{refusal.latest_size}\n", content_type=SIZE_MEDIA_TYPE
                )
            return web.Response(status=refusal.status, text=refusal.detail + "\n")
        except KeyUnavailable:  # the token went away: no cosignature, the state unchanged
            log.error("witness_key_unavailable", origin=submitted.origin)
            return web.Response(status=503, text="the witness's key is unavailable\n")
        log.info("checkpoint_cosigned", origin=submitted.origin, old_size=submitted.old_size)
        return web.Response(text=cosignature.line, content_type="text/plain")

    async def get_checkpoint(request: web.Request) -> web.Response:
        origin = by_hash.get(request.match_info["origin_hash"])
        latest = None if origin is None else app[STATE].latest(origin)
        if latest is None:
            raise web.HTTPNotFound(text="no checkpoint cosigned for that log\n")
        return web.Response(text=latest[2], content_type="text/plain")

    async def state(app: web.Application) -> AsyncIterator[None]:
        app[STATE] = WitnessState(settings.state_path)
        yield
        app[STATE].close()

    app.cleanup_ctx.append(state)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{origin_hash:[0-9a-f]{64}}/checkpoint", get_checkpoint)
    return app
