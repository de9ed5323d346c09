"""A test broker's consent-log database, reached behind the broker's back on either backend.

Tests use these to play the operator who edits the database, and to point ``axb`` commands
at the log a test broker writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from broker.scheme import dev as devscheme
from broker.settings import Settings
from broker.stores.consent_log import Appended, PostgresLocation
from tests.support.services import PG_ADMIN_DSN, pg_admin

# To run a module's brokers on each consent-log backend, override ``consent_log_overrides``
# there to return ``each_log_backend``.
LOG_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def log_backend(name: str) -> AsyncIterator[dict[str, object]]:
    """Broker settings for a consent log on ``name``: ``sqlite`` keeps the scheme's file;
    ``postgres`` gets a schema of its own in the test database, dropped afterwards."""
    if name == "sqlite":
        yield {}
        return
    schema = f"axb_t_{secrets.token_hex(6)}"
    try:
        yield {"consent_log": PG_ADMIN_DSN, "consent_log_schema": schema}
    finally:
        await pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def config_for_log(scheme: devscheme.DevScheme, settings: Settings) -> Path:
    """The scheme's broker config, pointed at the consent log ``settings`` use (for ``axb``
    commands run against a test broker's log)."""
    text = scheme.broker_config.read_text()
    line = 'consent_log = "log/consent-log.sqlite3"\n'
    assert line in text
    if isinstance(settings.consent_log, PostgresLocation):
        text = text.replace(
            line,
            f'consent_log = "{settings.consent_log.dsn}"\n'
            f'consent_log_schema = "{settings.consent_log.schema}"\n',
        )
    path = scheme.root / "broker-this-log.toml"
    path.write_text(text)
    return path


async def log_sql(settings: Settings, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement on a test broker's consent-log database, on either backend, as the
    operator could behind the broker's back (``?`` placeholders); returns its rows."""
    if isinstance(settings.consent_log, PostgresLocation):
        numbered = iter(range(1, len(params) + 1))
        db = await asyncpg.connect(
            settings.consent_log.dsn, server_settings={"search_path": settings.consent_log.schema}
        )
        try:
            rows = await db.fetch(re.sub(r"\?", lambda _: f"${next(numbered)}", sql), *params)
        finally:
            await db.close()
        return [tuple(row) for row in rows]
    with contextlib.closing(sqlite3.connect(settings.consent_log_path)) as lite:
        found: list[tuple[Any, ...]] = lite.execute(sql, params).fetchall()
        lite.commit()
    return found


async def edit_record(settings: Settings, index: int, **changes: object) -> None:
    """The operator edits a committed record's body in the database, on either backend."""
    [(body,)] = await log_sql(settings, "SELECT body FROM records WHERE log_index = ?", index)
    edited = orjson.dumps({**orjson.loads(body), **changes}, option=orjson.OPT_SORT_KEYS)
    await log_sql(settings, "UPDATE records SET body = ? WHERE log_index = ?", edited, index)


async def gather_indices(
    *appends: Awaitable[Appended], return_exceptions: bool = False
) -> list[Any]:
    """Run consent-log appends together: each one's log index (or, with
    ``return_exceptions``, its error)."""
    results = await asyncio.gather(*appends, return_exceptions=return_exceptions)
    return [r.index if isinstance(r, Appended) else r for r in results]
