"""What every ``axb`` command shares: path and date types, readers for the files a user hands
in, the event loop, serving apps until stopped.

Paths are not checked by click (``exists=True`` would answer with a usage screen): the
readers here and the config loaders read them and say in one line which file is missing or
what is wrong with it (:class:`broker.errors.BadInput`, ``ConfigError``, ``SettingsError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import sys
import tomllib
from collections.abc import Callable, Coroutine, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import click
from aiohttp import web

from broker.errors import BadInput
from connectors.connections import ConnectionGuard, ConnectionLimits, serve

if TYPE_CHECKING:
    from broker.settings import Settings

CONFIG = click.Path(dir_okay=False, path_type=Path)
SCHEME_DIR = click.Path(file_okay=False, path_type=Path)
INPUT_FILE = click.Path(dir_okay=False, path_type=Path)
LISTEN_FD = click.option(
    "--listen-fd",
    type=click.IntRange(min=0),
    default=None,
    help="Serve on this inherited socket (a file descriptor) instead of binding the "
    "config's port: a parent that bound the port first hands it down.",
)

HOST = click.option(
    "--host",
    envvar="AXB_HOST",
    default=None,
    help="Listen on this address instead of the config's host [env AXB_HOST; the image sets "
    "0.0.0.0].",
)
PORT = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    envvar="AXB_PORT",
    default=None,
    help="Listen on this port instead of the config's port [env AXB_PORT; the image sets 8080].",
)

Endpoint = tuple[str, int] | socket.socket
"""Where an app is served: a host and port to bind, or a socket already bound."""


def read_text_file(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named as ``what`` (e.g. "registration")."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def open_binary_input(path: Path, what: str) -> BinaryIO:
    """A file read as it is (a log export may be large: it is streamed, not read whole)."""
    try:
        return path.open("rb")
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read_json_document(path: Path, what: str) -> Any:
    """A JSON file, any shape: the caller checks the shape (scheme admin does)."""
    try:
        return json.loads(read_text_file(path, what))
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} {path} is not JSON: {exc}") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    document = read_json_document(path, what)
    if not isinstance(document, dict):
        raise BadInput(f"{what} {path} is not a JSON object")
    return document


def read_toml_document(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text_file(path, what))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{what} {path} is not TOML: {exc}") from None


class IsoDate(click.ParamType):  # type: ignore[type-arg]  # generic in click >= 8.2
    """A calendar date written ``YYYY-MM-DD`` and nothing else: ``date.fromisoformat`` also
    takes week dates (``1961-W26-7``) and compact forms (``19610702``), which would silently
    check someone else's date of birth."""

    name = "YYYY-MM-DD"
    shape = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        if isinstance(value, str) and self.shape.fullmatch(value):
            with contextlib.suppress(ValueError):
                return date.fromisoformat(value)
        self.fail(f"{value!r} is not a date written YYYY-MM-DD", param, ctx)


DATE = IsoDate()


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


def run_server(main: Coroutine[Any, Any, None]) -> None:
    """Run a server's ``main`` to its end on a new event loop, then return at once — unlike
    ``asyncio.run``, which then waits for every thread of the loop's default executor. A
    thread may be stuck in ``getaddrinfo`` for a host that went away with the rest of a
    stack being stopped (a compose service's name, once its DNS is gone): waiting for it
    outlasted the container runtime's grace. Callers exit the process straight after
    (:func:`exit_after_orderly_stop`), so nothing is left to clean up."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main)


async def until_stopped() -> None:
    """Wait for SIGTERM (how containers and systemd stop a service) or SIGINT (Ctrl-C). Both
    end in the same orderly shutdown: requests in flight finish, the log is committed and
    checkpointed, stores are closed, and the process exits 0."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def exit_after_orderly_stop(code: int = 0) -> NoReturn:
    """Exit at once (0: a server has stopped in order — requests answered, the log
    committed and checkpointed, stores closed): the interpreter's own teardown would then
    garbage-collect the whole heap, which took 1.5 s of a 2 s stop, time a container stop
    or a rolling restart waits for and nothing needs."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The broker's connection timeouts and limit, from its settings."""
    return ConnectionLimits(
        keepalive_timeout_s=settings.keepalive_timeout_s,
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_connections=settings.max_connections,
        shutdown_timeout_s=settings.shutdown_timeout_s / 2,  # the app's teardown has the rest
    )


async def serve_forever(
    apps: Sequence[tuple[web.Application, Endpoint]],
    limits: ConnectionLimits | None = None,
    tls: ssl.SSLContext | None = None,
    *,
    on_stopping: Callable[[], None] | None = None,
    drain_s: float = 0.0,
) -> None:
    """Serve each app until cancelled; say where each listens, with the port actually bound
    (a config's port 0 lets the kernel choose one). Every port is bound before any app
    starts: a port in use is then one error, not a started broker shut down again. All apps
    share one connection guard (``limits``): they share the process's file descriptors."""
    listening: list[socket.socket] = []
    runners: list[web.AppRunner] = []
    guard = ConnectionGuard(limits or ConnectionLimits())
    try:
        for _, endpoint in apps:
            if isinstance(endpoint, socket.socket):
                listening.append(endpoint)
            else:
                host, port = endpoint
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                listening.append(socket.create_server((host, port), family=family))
        for (app, _), sock in zip(apps, listening, strict=True):
            runner = await serve(app, sock, guard, tls)
            runners.append(runner)
            host, port = runner.addresses[0][:2]
            click.echo(f"listening on http{'s' if tls else ''}://{host}:{port}", err=True)
        await until_stopped()
        if on_stopping is not None:  # e.g. /readyz 503, while requests are still served
            on_stopping()
        if drain_s > 0:
            await asyncio.sleep(drain_s)
    finally:
        failed: BaseException | None = None
        for runner in reversed(runners):
            try:
                await runner.cleanup()  # stop accepting, finish requests in flight, clean up
            except Exception as exc:  # the others still stop; the first failure is raised
                failed = failed or exc
        for sock in listening:
            sock.close()
        if failed is not None:
            raise failed
