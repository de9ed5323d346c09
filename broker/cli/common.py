"""What every ``axb`` command shares: path types, the event loop, serving apps until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import click
from aiohttp import web

CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
SCHEME_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_forever(apps: list[tuple[web.Application, str, int]]) -> None:
    runners = []
    try:
        for app, host, port in apps:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
            runners.append(runner)
            click.echo(f"listening on http://{host}:{port}", err=True)
        await asyncio.Event().wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
