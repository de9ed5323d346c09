"""W3C Trace Context (``traceparent``) carried from a check to the providers it asks.

The broker's middleware reads the caller's ``traceparent`` header once per request
(:func:`accept`); the signed-HTTP connector sends a child of it to each provider
(:func:`outgoing_headers`): the same trace id, a parent id of the broker's own call, the same
flags. The value lives in a context variable, so the fan-out's tasks (copies of the request's
context) see it without a parameter through every layer. A malformed header is ignored, as the
specification asks: nothing is forwarded, and nothing is refused.
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

_SHAPE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_PARENT = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    parent_id: str
    flags: str

    def child(self) -> TraceParent:
        return TraceParent(self.trace_id, secrets.token_hex(8), self.flags)

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """A version-00 ``traceparent`` (or a later version's first four fields), or None."""
    if value is None:
        return None
    match = _SHAPE.match(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or (version == "00" and match.end() != len(value.strip())):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    return TraceParent(trace_id, parent_id, flags)


_CURRENT: ContextVar[TraceParent | None] = ContextVar("axb_traceparent", default=None)


def accept(value: str | None) -> TraceParent | None:
    """Make the caller's ``traceparent`` (if well formed) the current request's."""
    parsed = parse_traceparent(value)
    _CURRENT.set(parsed)
    return parsed


def outgoing_headers() -> dict[str, str]:
    """The ``traceparent`` for a call made on behalf of the current request, if it has one."""
    current = _CURRENT.get()
    return {} if current is None else {"traceparent": current.child().header}
