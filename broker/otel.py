"""OpenTelemetry tracing, the optional extra (``pip install 'ax-broker[otel]'``): on when
``[tracing] otlp_endpoint`` names an OTLP/HTTP traces URL (a collector's
``http://collector:4318/v1/traces``), off and never imported otherwise.

Each broker app has a tracer provider of its own (not the process-global one, so several apps
in one process, as in the tests, never share or override each other's), exporting in batches
from a background thread; the app's cleanup flushes it. The spans are opened by
:mod:`connectors.tracing`: one SERVER span a request, one CLIENT span a provider call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from broker.errors import SettingsError
from broker.settings import Settings


@dataclass(frozen=True, slots=True)
class Tracing:
    tracer: Any  # opentelemetry.trace.Tracer
    provider: Any  # opentelemetry.sdk.trace.TracerProvider

    async def close(self) -> None:
        """Export what is left and stop the exporter's thread."""
        await asyncio.to_thread(self.provider.shutdown)


TRACING: web.AppKey[Tracing] = web.AppKey("tracing")


def start_tracing(settings: Settings) -> Tracing | None:
    """The app's tracing, or ``None`` when no OTLP endpoint is configured. Raises
    ``SettingsError`` if one is and the extra is not installed."""
    if settings.tracing_otlp_endpoint is None:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SettingsError(
            "[tracing] otlp_endpoint needs OpenTelemetry: pip install 'ax-broker[otel]'"
        ) from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.tracing_service_name})
    )
    exporter = OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return Tracing(provider.get_tracer("ax-broker"), provider)
