"""W3C Trace Context (``traceparent``) carried from a check to the providers it asks.

The broker's middleware reads the caller's ``traceparent`` header once per request
(:func:`accept`); the signed-HTTP connector sends a child of it to each provider
(:func:`outgoing_headers`): the same trace id, a parent id of the broker's own call, the same
flags. The value lives in a context variable, so the fan-out's tasks (copies of the request's
context) see it without a parameter through every layer. A malformed header is ignored, as the
specification asks: nothing is forwarded, and nothing is refused.

With OpenTelemetry on (``[tracing] otlp_endpoint``, the optional extra ``ax-broker[otel]``,
set up by :mod:`broker.otel`), :func:`server_span` opens a SERVER span for each request, a
child of the caller's ``traceparent`` when it sent one, and :func:`provider_span` a CLIENT
span for each provider call, whose context is the ``traceparent`` the provider is sent. Span
attributes are the method, the route, the provider's endpoint and the status: never a subject,
a token or a body. OpenTelemetry is imported only when it is on.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

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


# The request's OpenTelemetry tracer (``None``: tracing is off), set by :func:`server_span`.
_TRACER: ContextVar[Any] = ContextVar("axb_tracer", default=None)


@contextlib.contextmanager
def server_span(
    tracer: Any, name: str, headers: Mapping[str, str], attributes: Mapping[str, str]
) -> Iterator[Any]:
    """A SERVER span around one request (yields it, or ``None`` when ``tracer`` is)."""
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": headers["traceparent"]} if "traceparent" in headers else {}
    )
    token = _TRACER.set(tracer)
    try:
        with tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
        ) as span:
            yield span
    finally:
        _TRACER.reset(token)


@contextlib.contextmanager
def provider_span(endpoint: str) -> Iterator[dict[str, str]]:
    """Around one call to a provider: the headers to send it (its ``traceparent``). With
    tracing on, a CLIENT span whose context that ``traceparent`` carries."""
    tracer = _TRACER.get()
    if tracer is None:
        yield outgoing_headers()
        return
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    with tracer.start_as_current_span(
        "POST provider", kind=SpanKind.CLIENT, attributes={"url.full": endpoint}
    ):
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        yield carrier
