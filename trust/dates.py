"""Dates and times exactly as the profile documents them, nothing more.

``date.fromisoformat`` accepts far more than ``YYYY-MM-DD`` since Python 3.11 — ISO week dates
(``1961-W26-7`` is read as 1961-07-02), ordinal dates, basic format (``19610702``) — and
``datetime.fromisoformat`` accepts times without a zone and with a space for ``T``. Every date
and time a message, the registry or a command reads goes through here.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from trust.errors import DateFormatError

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# RFC 3339 date-time: T (or t) between date and time, seconds, optional fraction, Z or offset.
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_date(value: object, name: str = "date") -> date:
    """``YYYY-MM-DD`` exactly (a real calendar date). Raises :class:`DateFormatError`."""
    if not isinstance(value, str) or _DATE.fullmatch(value) is None:
        raise DateFormatError(f"{name} must be YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise DateFormatError(f"{name} must be a real date, YYYY-MM-DD") from exc


def parse_date_time(value: object, name: str = "time") -> datetime:
    """An RFC 3339 date-time with its zone (``Z`` or ``±HH:MM``). Raises
    :class:`DateFormatError`."""
    if not isinstance(value, str) or _DATE_TIME.fullmatch(value) is None:
        raise DateFormatError(f"{name} must be an RFC 3339 time with a zone")
    text = value.upper()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    fraction = re.search(r"\.([0-9]+)", text)
    if fraction is not None and len(fraction.group(1)) > 6:  # Python keeps microseconds
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6], 1)
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise DateFormatError(f"{name} must be a real RFC 3339 time") from exc
