"""Apps, brokers and providers served on loopback for a test, and the fixture type that
starts brokers.

Every server here serves a socket that is bound before anyone learns its port (port 0, or a
``devscheme.Listeners`` socket the scheme names): no test picks a port that looks free and
hopes to bind it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from broker.app_keys import REGISTRY
from broker.scheme import dev as devscheme
from broker.settings import Settings
from connectors.reference.providers import ProviderService


@dataclass
class RunningBroker:
    url: str
    settings: Settings
    app: web.Application
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def wait_for_seq(self, seq: int) -> None:
        """Until the broker has picked up the registry of ``seq`` (it polls the file)."""
        for _ in range(200):
            if self.app[REGISTRY].snapshot.seq >= seq:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"broker never reached registry seq {seq}")


class StartBroker(Protocol):
    """The ``start_broker`` fixture: a broker on the scheme's config with ``overrides``
    (``port=0`` for one more broker on a port of its own; its URL says which)."""

    async def __call__(
        self, *, public_checkpoint_every_seconds: float = 0.0, **overrides: object
    ) -> RunningBroker: ...


async def serve_on(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Serve ``app`` on a socket bound already; stopping the runner closes it (as does an app
    that fails to start)."""
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner


async def start_app(app: web.Application, port: int = 0) -> web.AppRunner:
    """Serve ``app`` on 127.0.0.1: on a port of its own (``port_of`` says which), or on
    ``port`` when a server this test stopped has just released it."""
    return await serve_on(app, devscheme.bind_loopback(port))


def port_of(runner: web.AppRunner) -> int:
    """The port a started runner is bound to."""
    port: int = runner.addresses[0][1]
    return port


def url_of(runner: web.AppRunner) -> str:
    return f"http://127.0.0.1:{port_of(runner)}"


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port held bound but not listening: connecting to it is refused, and no
    server can take it, for as long as the ``with`` lasts."""
    with devscheme.bind_loopback() as held:
        yield held.getsockname()[1]


@dataclass
class RunningProvider:
    service: ProviderService
    runner: web.AppRunner | None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
