"""The services the suite shares with other runs: one Redis database, one PostgreSQL server.

Both addresses come from the environment so that concurrent runs on one machine keep apart.
"""

from __future__ import annotations

import os

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
