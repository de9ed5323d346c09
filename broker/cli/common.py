"""What every ``axb`` command shares: path types, the event loop, serving apps until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from pathlib import Path

import click
from aiohttp import web

CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
SCHEME_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
LISTEN_FD = click.option(
    "--listen-fd",
    type=click.IntRange(min=0),
    default=None,
    help="Serve on this inherited socket (a file descriptor) instead of binding the "
    "config's port: a parent that bound the port first hands it down.",
)

Endpoint = tuple[str, int] | socket.socket
"""Where an app is served: a host and port to bind, or a socket already bound."""


def inherited_socket(fd: int) -> socket.socket:
    """The bound TCP socket a parent process handed down as file descriptor ``fd`` (serving
    it starts it listening, if the parent had not)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise click.BadParameter(f"{fd} is not an open socket", param_hint="--listen-fd") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise click.BadParameter(f"{fd} is not a TCP socket", param_hint="--listen-fd")
    return sock


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_forever(apps: Sequence[tuple[web.Application, Endpoint]]) -> None:
    """Serve each app until cancelled; say where each listens, with the port actually bound
    (a config's port 0 lets the kernel choose one)."""
    runners = []
    try:
        for app, endpoint in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            if isinstance(endpoint, socket.socket):
                await web.SockSite(runner, endpoint).start()
            else:
                await web.TCPSite(runner, *endpoint).start()
            host, port = runner.addresses[0][:2]
            click.echo(f"listening on http://{host}:{port}", err=True)
        await asyncio.Event().wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
