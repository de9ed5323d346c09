"""Connection hygiene, against ``axb serve`` run as its own process: slow-loris heads, idle
keep-alive connections and trickling bodies are closed within their timeouts, and with the
open-files limit lowered a flood of idle connections neither stops checks on a connection
already open nor the registry reload. (Before, aiohttp kept an idle connection for 3,630 s,
waited for ever for a head or a body, and 1,100 idle connections under a 1,024 limit made 0
of 31,349 checks succeed and the registry reload fail with "Too many open files".)

Also the provider kit (``axb provider serve``) and the console: the same head timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from broker.scheme import dev as devscheme
from connectors.connections import ConnectionGuard, ConnectionLimits, connection_cap, serve
from members.console.app import start_console
from members.council import EligibilityClient
from tests.support.councils import blue_badge
from tests.support.processes import until_answers
from tests.support.servers import RunningProvider

REPO = Path(__file__).resolve().parents[2]
HEAD_S, BODY_S, KEEPALIVE_S = 1.0, 1.0, 3.0
SLACK_S = 1.5  # timers, a loaded machine
Served = Callable[..., contextlib.AbstractAsyncContextManager[object]]


def with_settings(config: Path, **settings: object) -> None:
    """Set top-level keys of a broker config (new ones go before its first table)."""
    lines = config.read_text().splitlines(keepends=True)
    for key, value in settings.items():
        line = f"{key} = {json.dumps(value)}\n"
        at = next((i for i, old in enumerate(lines) if old.startswith(f"{key} =")), None)
        if at is None:
            lines.insert(0, line)
        else:
            lines[at] = line
    config.write_text("".join(lines))


def spawn(
    args: list[str],
    sock: socket.socket,
    log: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *args, "--listen-fd", str(sock.fileno())],
            stdout=out,
            stderr=out,
            pass_fds=[sock.fileno()],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,
        )


@contextlib.asynccontextmanager
async def running(
    args: list[str],
    sock: socket.socket,
    url: str,
    log: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    process = spawn(args, sock, log, preexec_fn)
    sock.close()  # the child has it now
    try:
        await until_answers(url + "/healthz", process, log)
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def served_broker(
    scheme: devscheme.DevScheme,
    listeners: devscheme.Listeners,
    providers: dict[str, RunningProvider],
    tmp_path: Path,
) -> Callable[..., contextlib.AbstractAsyncContextManager[subprocess.Popen[bytes]]]:
    def start(
        preexec_fn: Callable[[], None] | None = None, **settings: object
    ) -> contextlib.AbstractAsyncContextManager[subprocess.Popen[bytes]]:
        with_settings(scheme.broker_config, **settings)
        return running(
            ["serve", "--config", str(scheme.broker_config)],
            listeners.broker,
            scheme.broker_url,
            tmp_path / "broker.log",
            preexec_fn,
        )

    return start


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port_of(url))


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes; returns how long that took and what it sent."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), limit_s):
            received += chunk
    return time.monotonic() - started, received


async def slow_loris(port: int, count: int, give_up_s: float) -> list[float]:
    """``count`` connections, each sending a request head one byte a second; how long each
    stayed open (``give_up_s`` if the server never closed it)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 60

    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            for byte in head:
                if time.monotonic() - started > give_up_s:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 1.0) == b"":  # a byte a second
                        break
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    return await asyncio.gather(*(one() for _ in range(count)))


async def test_slow_loris_connections_are_closed_within_the_head_timeout(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    async with served_broker(
        header_timeout_s=HEAD_S, body_timeout_s=BODY_S, keepalive_timeout_s=30
    ):
        lifetimes = await slow_loris(port_of(scheme.broker_url), 50, give_up_s=6)
    assert max(lifetimes) < HEAD_S + SLACK_S, lifetimes


async def test_a_connection_that_sends_nothing_is_closed_within_the_head_timeout(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    async with served_broker(header_timeout_s=HEAD_S, keepalive_timeout_s=30):
        reader, writer = await connect(scheme.broker_url)
        took, received = await closed_after(reader, 10)
        writer.close()
    assert received == b""
    assert took < HEAD_S + SLACK_S


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    async with served_broker(header_timeout_s=HEAD_S, keepalive_timeout_s=KEEPALIVE_S):
        reader, writer = await connect(scheme.broker_url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        took, received = await closed_after(reader, 15)
        writer.close()
    assert received == b""
    # kept past the head timeout (an idle kept-alive connection is not a slow head) ...
    assert took > HEAD_S + 0.5
    # ... and closed at the keep-alive timeout
    assert took < KEEPALIVE_S + SLACK_S


async def test_a_body_trickling_in_is_answered_408_and_closed_within_the_body_timeout(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    async with served_broker(
        header_timeout_s=HEAD_S, body_timeout_s=BODY_S, keepalive_timeout_s=30
    ):
        reader, writer = await connect(scheme.broker_url)
        writer.write(
            b"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\n"
            b"Content-Length: 4000\r\n\r\neyJ"
        )
        started = time.monotonic()

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    await asyncio.sleep(0.3)
                    writer.write(b"a")
                    await writer.drain()

        trickling = asyncio.create_task(trickle())
        _, received = await closed_after(reader, 10)
        took = time.monotonic() - started
        trickling.cancel()
        writer.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    assert b"application/problem+json" in head
    assert json.loads(body)["type"] == "urn:ax-broker:problem:request-timeout"
    assert BODY_S - 0.2 < took < BODY_S + SLACK_S


async def test_bodies_trickling_in_hold_no_place_so_real_checks_go_on(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    """A slow body is read before its check takes one of the broker's places: three times as
    many trickling bodies as places leave every real check answered, none refused 503.
    (Before, the place came first: 64 byte-a-second bodies refused every check for as long
    as the body timeout, and the slow-clients bench saw 98 % of checks refused.)"""
    places = 4
    async with (
        served_broker(
            max_checks_in_flight=places,
            header_timeout_s=30,
            body_timeout_s=30,
            keepalive_timeout_s=30,
        ),
        EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client,
    ):
        assert await blue_badge(client) == "yes"
        writers = []
        for _ in range(3 * places):
            _, writer = await connect(scheme.broker_url)
            writer.write(
                b"POST /v1/checks HTTP/1.1\r\nHost: x\r\nContent-Type: application/jwt\r\n"
                b"Content-Length: 4000\r\n\r\neyJ"
            )
            await writer.drain()
            writers.append(writer)
        try:
            await asyncio.sleep(0.3)  # every trickling request has its head in
            outcomes = [await blue_badge(client) for _ in range(6)]
        finally:
            for writer in writers:
                writer.close()
    assert outcomes == ["yes"] * 6


def registry_seq(document: bytes) -> int:
    payload = document.split(b".")[1]
    seq: int = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))["seq"]
    return seq


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            held.append(socket.create_connection(("127.0.0.1", port)))
        yield held
    finally:
        for sock in held:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


async def test_idle_connections_under_a_low_open_files_limit_stop_neither_checks_nor_reloads(
    served_broker: Served, scheme: devscheme.DevScheme
) -> None:
    # idle connections are held for the whole test: only the connection limit protects
    async with (
        served_broker(
            preexec_fn=low_fd_limit,
            header_timeout_s=120,
            keepalive_timeout_s=120,
            registry_poll_s=0.2,
        ),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as operator,
        EligibilityClient.from_config(
            scheme.council_config(devscheme.COUNCIL_BLUE_BADGE)
        ) as client,
    ):

        async def check() -> str:
            return await blue_badge(client)

        async def seq_in_force() -> int:
            async with operator.get(scheme.broker_url + "/v1/registry") as response:
                return registry_seq(await response.read())

        assert await check() == "yes"  # the council's connection is open now
        before = await seq_in_force()
        with idle_connections(port_of(scheme.broker_url), 300):
            await asyncio.sleep(0.5)
            outcomes = [await check() for _ in range(8)]  # on the connection already open
            assert outcomes == ["yes"] * 8
            devscheme.publish_registry(scheme, seq=before + 1)
            for _ in range(50):
                if await seq_in_force() == before + 1:
                    break
                await asyncio.sleep(0.2)
            assert await seq_in_force() == before + 1, "the registry reload stopped"
            assert await check() == "yes"


def test_the_connection_cap_keeps_descriptors_free_under_the_open_files_limit() -> None:
    assert connection_cap(1000, 1024) == 1024 - 128
    assert connection_cap(1000, 256) == 128
    assert connection_cap(1000, 100) == 50
    assert connection_cap(50, 20000) == 50
    assert connection_cap(1000, resource.RLIM_INFINITY) == 1000


@contextlib.asynccontextmanager
async def hello_server(max_connections: int) -> AsyncIterator[tuple[int, ConnectionGuard]]:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    sock = devscheme.bind_loopback(0)
    guard = ConnectionGuard(ConnectionLimits(max_connections=max_connections, header_timeout_s=30))
    runner = await serve(app, sock, guard)
    try:
        yield sock.getsockname()[1], guard
    finally:
        await runner.cleanup()


async def test_at_the_cap_a_new_connection_displaces_the_oldest_that_sent_no_request() -> None:
    async with (
        hello_server(max_connections=5) as (port, guard),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
    ):
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            assert await response.text() == "hello"
        with idle_connections(port, 10) as held:
            await asyncio.sleep(0.3)
            closed = [closed_by_server(sock) for sock in held]
            # the session's connection has sent a request: it keeps its place, and the four
            # places left go to the newest silent connections
            assert closed == [True] * 6 + [False] * 4
            assert (guard.open, guard.evicted, guard.refused) == (5, 6, 0)
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                assert await response.text() == "hello"
            fresh = aiohttp.ClientSession()  # a real client gets in, at a silent one's cost
            async with fresh, fresh.get(f"http://127.0.0.1:{port}/") as response:
                assert await response.text() == "hello"
            assert guard.evicted == 7
        assert guard.refused == 0


async def test_at_the_cap_with_every_connection_in_use_a_new_one_is_closed_at_once() -> None:
    async with hello_server(max_connections=2) as (port, guard):
        sessions = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(2)
        ]
        try:
            for session in sessions:  # two keep-alive connections, each with a request done
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert await response.text() == "hello"
            with idle_connections(port, 3) as held:
                await asyncio.sleep(0.3)
                assert all(closed_by_server(sock) for sock in held)
            assert (guard.refused, guard.evicted) == (3, 0)
            for session in sessions:  # the connections already open still work
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert await response.text() == "hello"
        finally:
            for session in sessions:
                await session.close()


async def test_the_provider_kit_closes_a_slow_head(
    scheme: devscheme.DevScheme, listeners: devscheme.Listeners, tmp_path: Path
) -> None:
    sock = listeners.providers[devscheme.HMRC]
    port = sock.getsockname()[1]
    async with running(
        ["provider", "serve", "--config", str(scheme.provider_config(devscheme.HMRC))],
        sock,
        f"http://127.0.0.1:{port}",
        tmp_path / "provider.log",
    ):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        took, _ = await closed_after(reader, 30)
        writer.close()
    assert took < ConnectionLimits().header_timeout_s + SLACK_S
    assert time.monotonic() - started >= ConnectionLimits().header_timeout_s - 0.5


async def test_the_console_closes_a_slow_head(scheme: devscheme.DevScheme) -> None:
    runner, console = await start_console(scheme.root / "auditors" / f"{devscheme.AUDITOR}.toml")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", console.port)
        writer.write(b"GET /login HTTP/1.1\r\n")
        took, _ = await closed_after(reader, 30)
        writer.close()
    finally:
        await runner.cleanup()
    assert ConnectionLimits().header_timeout_s - 0.5 < took
    assert took < ConnectionLimits().header_timeout_s + SLACK_S


@contextlib.contextmanager
def out_of_file_descriptors() -> Iterator[None]:
    """Lower this process's soft open-files limit to the lowest free descriptor: the next
    ``open`` fails with EMFILE ("Too many open files"), as under a flood of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_registry_reload_survives_running_out_of_file_descriptors(
    scheme: devscheme.DevScheme,
) -> None:
    from broker.settings import load_settings
    from connectors.registry_source import RegistrySource

    source = RegistrySource(load_settings(scheme.broker_config).scheme)
    seq = source.snapshot.seq
    devscheme.publish_registry(scheme, seq=seq + 1)
    with out_of_file_descriptors():
        with pytest.raises(OSError, match="Too many open files"):
            os.close(os.open(os.devnull, os.O_RDONLY))  # the limit is real
        assert source.reload() is False  # logged, the snapshot kept
    assert source.snapshot.seq == seq
    watcher = asyncio.create_task(source.watch(0.05))  # the next poll succeeds
    try:
        for _ in range(100):
            if source.snapshot.seq == seq + 1:
                break
            await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    assert source.snapshot.seq == seq + 1
