"""Structured logs: JSON lines (console in development), context bound per request.

Nothing personal reaches a log: handlers never log bodies, and as a second line of defence
this processor drops any event key that names an identifier or a token.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

SENSITIVE_KEYS = frozenset(
    {
        "subject",
        "family_name",
        "given_names",
        "date_of_birth",
        "postcode",
        "nino",
        "vehicle_registration",
        "token",
        "body",
        "authorization",
        "secret",
    }
)


def drop_sensitive(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


_KEPT: list[TextIO] = []


def configure_logging(
    *, json: bool = True, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    out = stream or sys.stderr
    renderer: Any
    factory: Any
    if json:  # orjson renders bytes, written as they are: a line costs a few microseconds
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        binary: Any = getattr(out, "buffer", None) or out
        _KEPT.append(out)  # a text file collected would close the buffer written to
        factory = structlog.BytesLoggerFactory(file=binary)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        factory = structlog.PrintLoggerFactory(file=out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_sensitive,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
