"""Query parameters of the audit API and the public log endpoints, read strictly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time

from aiohttp import web

from broker.errors import BadRequest
from trust.dates import parse_date, parse_date_time
from trust.errors import DateFormatError

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
    """A date (``YYYY-MM-DD``, from midnight UTC) or an RFC 3339 time with its zone, as epoch
    milliseconds, or None if absent: the forms the document names, read by ``trust.dates``
    (``datetime.fromisoformat`` would also take week dates, basic format and zone-less
    times)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        if len(raw) == len("YYYY-MM-DD"):
            moment = datetime.combine(parse_date(raw, name), time(), UTC)
        else:
            moment = parse_date_time(raw, name)
    except DateFormatError as exc:
        raise BadRequest(
            "bad-request", f"{name} must be a date (YYYY-MM-DD) or an RFC 3339 time"
        ) from exc
    return int(moment.timestamp() * 1000)
