"""The services the suite shares with other runs: one Redis database, one PostgreSQL server.

Both addresses come from the environment so that concurrent runs on one machine keep apart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg

REDIS_URL = os.environ.get("AXB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_ADMIN_DSN = os.environ.get("AXB_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_admin(sql: str) -> None:
    """One statement on the PostgreSQL server as its administrator (create or drop a
    database or schema)."""
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database_of_its_own() -> AsyncIterator[str]:
    """A PostgreSQL database made for one test, its DSN; dropped after (sessions and all)."""
    name = f"axb_test_{secrets.token_hex(6)}"
    await pg_admin(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        await pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
