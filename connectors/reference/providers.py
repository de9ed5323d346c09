"""The reference DWP-style and HMRC-style providers: the provider kit around a lookup over
the synthetic population. Run one with ``axb provider serve --config providers/X.toml``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from aiohttp import web

from connectors.config import (
    ConfigError,
    load_signing_key,
    read_toml,
    require_str,
    resolve,
    scheme_files,
)
from connectors.provider_kit import Lookup, LookupRequest, ProviderKit, create_provider_app
from connectors.reference.attributes import DWP_ATTRIBUTES, HMRC_ATTRIBUTES, evaluate
from connectors.reference.population import PopulationIndex, generate_population
from connectors.registry_source import RegistrySource

OFFERED: Mapping[str, Mapping[str, str]] = {"dwp": DWP_ATTRIBUTES, "hmrc": HMRC_ATTRIBUTES}


def reference_lookup(offered: Mapping[str, str], index: PopulationIndex) -> Lookup:
    """A lookup answering ``offered`` attributes by exact match on surname and date of birth
    (and NINO when the broker sends one)."""

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        fields = request.subject.fields
        person = index.match(
            fields["family_name"], date.fromisoformat(fields["date_of_birth"]), fields.get("nino")
        )
        if person is None:
            return None
        return {name: evaluate(person, name, request.as_of) for name in request.attributes}

    return lookup


@dataclass(frozen=True)
class ProviderService:
    app: web.Application
    kit: ProviderKit
    registry: RegistrySource
    host: str
    port: int


def build_reference_provider(
    config_path: Path, *, clock: Callable[[], float] = time.time
) -> ProviderService:
    table = read_toml(config_path)
    base = config_path.parent
    kind = require_str(table, "reference")
    if kind not in OFFERED:
        raise ConfigError(f"reference must be one of {sorted(OFFERED)}")
    registry = RegistrySource(scheme_files(base, table), clock=clock)
    kit = ProviderKit(
        provider_id=require_str(table, "provider_id"),
        key=load_signing_key(resolve(base, table.get("signing_key"), "signing_key")),
        registry=registry.current,
        lookup=reference_lookup(OFFERED[kind], PopulationIndex(generate_population())),
        clock=clock,
    )
    port = table.get("port", 0)
    if type(port) is not int:
        raise ConfigError("port must be an integer")
    app = create_provider_app(kit)

    async def watch_registry(app: web.Application) -> AsyncIterator[None]:
        watcher = asyncio.create_task(registry.watch(float(table.get("registry_poll_s", 2.0))))
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    app.cleanup_ctx.append(watch_registry)
    return ProviderService(app, kit, registry, str(table.get("host", "127.0.0.1")), port)
