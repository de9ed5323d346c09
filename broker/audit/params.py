"""Query parameters of the audit API and the public log endpoints, read strictly."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from broker.errors import BadRequest

_COUNT = re.compile(r"[0-9]{1,15}")


def count(raw: str, name: str) -> int:
    """A non-negative integer in ASCII digits (``str.isdigit`` also accepts ``²``)."""
    if not _COUNT.fullmatch(raw):
        raise BadRequest("bad-request", f"{name} must be a non-negative integer")
    return int(raw)


def int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise BadRequest("bad-request", f"query parameter {name!r} is required")
        return default
    return count(raw, name)


def time_param(request: web.Request, name: str) -> int | None:
    """An ISO 8601 date or time (UTC if no zone) as epoch milliseconds, or None if absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest("bad-request", f"{name} must be an ISO 8601 date or time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
