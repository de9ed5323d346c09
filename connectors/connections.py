"""Connection hygiene for every HTTP server we run: the broker, the provider kit, the console.

aiohttp on its own keeps an idle connection for an hour, waits for ever for a request head or
a body still arriving, and accepts connections until the process runs out of file
descriptors, after which nothing works: not the checks on connections already open (a check
needs sockets to its providers and Redis) and not the registry reload (it opens a file). So
every server is served through a :class:`ConnectionGuard`:

- **keep-alive**: an idle connection is closed ``keepalive_timeout_s`` after its last
  response (aiohttp's own timer, set on the runner);
- **request head**: a connection that has not sent a complete request head within
  ``header_timeout_s`` (of connecting, or of the first byte of its next request) is closed
  (slow-loris); aiohttp has no such option, so a thin protocol wrapper keeps the timer;
- **body**: a body still arriving ``body_timeout_s`` after its head is answered ``408`` (a
  problem document, if no response has started), its handler is cancelled (nothing has been
  done with half a body) and the connection is closed;
- **a connection limit**: at ``max_connections`` open at once (and never so many that
  fewer than :data:`RESERVED_FDS` descriptors stay free under ``RLIMIT_NOFILE``) a new
  connection takes the place of the oldest connection that has not yet sent one complete
  request head (a slow-loris or a silent socket: nobody's request is lost), as nginx drains
  its reusable connections; when every open connection has sent a request, the new one is
  closed at once. So descriptors stay available for the connections already open, their
  outgoing calls, and files, and a thousand slow clients cannot lock real ones out. Every
  server of one process shares one guard: they share one descriptor table.

The wrapper reads a few private attributes of aiohttp's ``RequestHandler`` (the request count,
the queued messages, the waiter for the next request); ``tests/integration/test_connections``
fails if a new aiohttp changes them.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import StreamReader, web
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("connectors.connections")

RESERVED_FDS = 128
"""Descriptors kept free for what is not an incoming connection: outgoing calls to providers
and Redis, the consent log, the registry file, the listening sockets."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    keepalive_timeout_s: float = 15.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_connections: int = 1000
    shutdown_timeout_s: float = 60.0  # how long a stop waits for requests in flight


def connection_cap(max_connections: int, fd_limit: int) -> int:
    """How many incoming connections may be open at once under a soft ``RLIMIT_NOFILE`` of
    ``fd_limit`` (``resource.RLIM_INFINITY`` or less than 0: no limit): ``max_connections``,
    but never so many that fewer than :data:`RESERVED_FDS` descriptors stay free (half of
    them, for a limit too small to keep that many)."""
    if fd_limit < 0 or fd_limit == resource.RLIM_INFINITY:
        return max_connections
    room = fd_limit - RESERVED_FDS if fd_limit > 2 * RESERVED_FDS else fd_limit // 2
    return max(1, min(max_connections, room))


def _problem_408() -> bytes:
    body = json.dumps(
        {
            "type": "urn:ax-broker:problem:request-timeout",
            "title": "The request body did not arrive in time",
            "status": 408,
        }
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


REQUEST_TIMEOUT_RESPONSE = _problem_408()


class ConnectionGuard:
    """The limits, and the count of incoming connections open in this process."""

    def __init__(self, limits: ConnectionLimits, *, fd_limit: int | None = None) -> None:
        self.limits = limits
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0] if fd_limit is None else fd_limit
        self.cap = connection_cap(limits.max_connections, soft)
        self.open = 0
        self.refused = 0
        self.evicted = 0
        self._at_cap_logged = False
        # connections that have not yet sent one complete request head, oldest first
        self._headless: dict[_Watched, None] = {}

    def runner(self, app: web.Application) -> web.AppRunner:
        """An app runner with the keep-alive timeout (no access log: the apps log their own
        lines, without personal data)."""
        return web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=self.limits.keepalive_timeout_s,
            shutdown_timeout=self.limits.shutdown_timeout_s,
        )

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            if self.open >= self.cap:
                if not self._at_cap_logged:
                    self._at_cap_logged = True
                    log.warning("connection_limit_reached", cap=self.cap)
                if not self._headless:
                    self.refused += 1
                    return _Refused()
                oldest = next(iter(self._headless))
                self.forget_headless(oldest)
                self.evicted += 1
                oldest.evict()  # its descriptor is freed as the loop closes it
            else:
                self._at_cap_logged = False
            self.open += 1  # counted now: the loop may accept several before any starts
            watched = _Watched(server(), self)
            self._headless[watched] = None
            return watched

        return make

    def forget_headless(self, connection: _Watched) -> None:
        self._headless.pop(connection, None)


async def serve(
    app: web.Application,
    sock: socket.socket,
    guard: ConnectionGuard,
    tls: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Serve ``app`` on the bound socket ``sock`` under ``guard`` (over TLS with ``tls``);
    returns the runner (its ``cleanup`` stops accepting, finishes requests in flight and
    cleans up)."""
    runner = guard.runner(app)
    await runner.setup()
    try:
        await GuardedSockSite(runner, sock, guard, tls).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class GuardedSockSite(web.SockSite):
    """A ``SockSite`` whose connections go through the guard."""

    __slots__ = ("_guard",)

    def __init__(
        self,
        runner: web.AppRunner,
        sock: socket.socket,
        guard: ConnectionGuard,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, sock, ssl_context=tls)
        self._guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)  # what BaseSite.start does
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server),
            sock=self._sock,
            backlog=self._backlog,
            ssl=self._ssl_context,
        )


class _Refused(asyncio.Protocol):
    """A connection beyond the limit: closed at once, its descriptor freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Watched(asyncio.Protocol):
    """aiohttp's request handler, with the head and body timers around it."""

    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._loop = asyncio.get_running_loop()
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._counted = True  # the guard counted this connection when it made the protocol
        self._made = False
        self._evicted = False

    # the protocol, forwarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made = True
        self._inner.connection_made(transport)
        if self._evicted:  # made room for another before the loop had started this one
            self._inner.force_close()
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        heads_before = self._heads()
        self._inner.data_received(data)
        if self._heads() != heads_before:  # a complete request head arrived
            self._guard.forget_headless(self)
            self._cancel_head_timer()
            payload = self._latest_payload()
            if payload is not None and not payload.is_eof():
                self._arm_body_timer(payload)
        elif self._head_timer is None and self._waiting_for_request():
            self._arm_head_timer()  # the first bytes of the next request on this connection

    def eof_received(self) -> None:
        self._inner.eof_received()  # None: the transport closes (a half-close ends it)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._guard.forget_headless(self)
        if self._counted:
            self._counted = False
            self._guard.open -= 1
        self._inner.connection_lost(exc)

    def evict(self) -> None:
        """Close this connection to make room: it has not sent a request head, so no
        request of its is lost. Its place is given up now, not when the close completes."""
        self._cancel_head_timer()
        self._evicted = True
        if self._counted:
            self._counted = False
            self._guard.open -= 1
        if self._made:
            self._inner.force_close()

    # aiohttp's state (private attributes, read only)

    def _heads(self) -> int:
        count: int = self._inner._request_count
        return count

    def _latest_payload(self) -> StreamReader | None:
        messages: Any = self._inner._messages
        return messages[-1][1] if messages else None

    def _waiting_for_request(self) -> bool:
        waiter = self._inner._waiter
        return waiter is not None and not waiter.done() and not self._inner._messages

    # the timers

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        heads = self._heads()
        self._head_timer = self._loop.call_later(
            self._guard.limits.header_timeout_s, self._head_timed_out, heads
        )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self, heads: int) -> None:
        self._head_timer = None
        if self._heads() == heads:
            log.debug("request_head_timeout")
            self._inner.force_close()

    def _arm_body_timer(self, payload: StreamReader) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self._loop.call_later(
            self._guard.limits.body_timeout_s, self._body_timed_out, payload
        )

    def _body_timed_out(self, payload: StreamReader) -> None:
        self._body_timer = None
        if payload.is_eof():
            return
        inner = self._inner
        request: web.BaseRequest | None = inner._current_request
        if request is not None and request._payload is payload:
            writer: Any = request._payload_writer
            started = writer._headers_written or writer._headers_buf is not None
            if not started and inner.transport is not None:
                inner.transport.write(REQUEST_TIMEOUT_RESPONSE)
            log.info("request_body_timeout", path=request.path)
        task = inner._task_handler
        if task is not None:
            task.cancel()  # the handler has only half a body: nothing to finish
        inner.force_close()
