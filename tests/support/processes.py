"""Servers run as their own processes (``axb serve``, ``axb provider serve``): their log's
tail, and waiting until one answers."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
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
