"""Servers run as their own processes (``axb serve``, ``axb provider serve``): their log's
tail, waiting until one answers, and ``axb serve --workers`` on a shared log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def until_answers(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (up to 15 s) until ``url`` answers below 500; fails with the log's tail if the
    process exits or never answers."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert process.poll() is None, tail(log)
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.05)
    pytest.fail(f"{url} never answered:\n{tail(log)}")


ROOT = Path(__file__).resolve().parents[2]


def workers_config(config: Path, dsn: str | None, schema: str | None) -> Path:
    """``config`` (a development scheme's broker.toml) on the PostgreSQL log ``dsn``/``schema``
    (``None``: its own SQLite file), with an 8 s shutdown bound, beside it."""
    text = config.read_text()
    line = 'consent_log = "log/consent-log.sqlite3"\n'
    assert line in text
    on_pg = "" if dsn is None else f'consent_log = "{dsn}"\nconsent_log_schema = "{schema}"\n'
    shared = (on_pg or line) + "shutdown_timeout_s = 8\n"
    path = config.with_name("broker-workers.toml")
    path.write_text(text.replace(line, shared))
    return path


def start_workers(
    config: Path, fd: int, log: Path, redis_url: str, workers: int = 2
) -> subprocess.Popen[bytes]:
    """``axb serve --workers N`` serving the bound socket ``fd``, its output in ``log``."""
    argv = ["serve", "--config", str(config), "--workers", str(workers)]
    argv += ["--redis-url", redis_url, "--listen-fd", str(fd)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "broker.cli", *argv],
            stdout=out,
            stderr=out,
            pass_fds=[fd],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
