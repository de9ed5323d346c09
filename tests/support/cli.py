"""The ``axb`` command line run as its own process, as an operator would run it."""

from __future__ import annotations

import asyncio
import sys


async def run_axb(*args: str) -> tuple[int, str, str]:
    """``axb ARGS`` as a separate process (its exit status, stdout, stderr), without blocking
    the event loop the test's broker runs on."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
