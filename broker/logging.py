"""Structured logs: JSON lines (console in development), context bound per request.

Nothing personal reaches a log: handlers never log bodies, and as a second line of defence
this processor drops any event key that names an identifier or a token.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

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


def configure_logging(
    *, json: bool = True, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            drop_sensitive,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
