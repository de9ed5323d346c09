"""The reference providers: the provider kit around a lookup. Run one with
``axb provider serve --config providers/X.toml``; the config's ``reference`` picks the kind:

- ``dwp``, ``hmrc``: DWP-style and HMRC-style lookups over the synthetic population, with a
  batch lookup for batched requests;
- ``dvla-keeper``: ``registered-keeper`` over the synthetic keeper register
  (:mod:`connectors.reference.keepers`); batches through the kit's single lookups;
- ``dvla-ves``: ``vehicle-taxed`` and ``vehicle-mot-valid`` from a DVLA Vehicle Enquiry
  Service endpoint (the real one, or :mod:`connectors.reference.dvla_stub`). Extra keys:
  ``ves_url`` (base URL, without the ``/vehicle-enquiry/v1/vehicles`` path),
  ``ves_api_key_file`` (a file holding the API key) and optionally ``ves_deadline_s`` (how
  long one enquiry may take, retries after a 429 included; default 1.8). The service owns
  its HTTP session: opened on app startup, closed on cleanup. VES has no batch API, so the
  development scheme declares no batches for it (``max_batch`` 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from connectors.config import (
    load_signing_key,
    read_toml,
    require_str,
    resolve,
    scheme_files,
)
from connectors.dvla_ves import VES_ATTRIBUTES, DvlaVesClient, VesUnavailable, ves_lookup
from connectors.errors import ConfigError
from connectors.provider_kit import (
    BatchLookup,
    BatchLookupRequest,
    Found,
    Lookup,
    LookupRequest,
    ProviderKit,
    create_provider_app,
)
from connectors.reference.attributes import DWP_ATTRIBUTES, HMRC_ATTRIBUTES, evaluate
from connectors.reference.keepers import KEEPER_ATTRIBUTES, keeper_lookup
from connectors.reference.population import PopulationIndex, generate_population
from connectors.registry_source import RegistrySource
from trust.messages import Subject

OFFERED: Mapping[str, Mapping[str, str]] = {
    "dwp": DWP_ATTRIBUTES,
    "hmrc": HMRC_ATTRIBUTES,
    "dvla-keeper": KEEPER_ATTRIBUTES,
    "dvla-ves": VES_ATTRIBUTES,
}
DEFAULT_VES_DEADLINE_S = 1.8

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _found(
    index: PopulationIndex, subject: Subject, attributes: Sequence[str], as_of: date
) -> Found:
    fields = subject.fields
    person = index.match(
        fields["family_name"], date.fromisoformat(fields["date_of_birth"]), fields.get("nino")
    )
    if person is None:
        return None
    return {name: evaluate(person, name, as_of) for name in attributes}


def reference_lookup(offered: Mapping[str, str], index: PopulationIndex) -> Lookup:
    """A lookup answering ``offered`` attributes by exact match on surname and date of birth
    (and NINO when the broker sends one)."""

    async def lookup(request: LookupRequest) -> Found:
        return _found(index, request.subject, request.attributes, request.as_of)

    return lookup


def reference_batch_lookup(index: PopulationIndex) -> BatchLookup:
    """The same lookup for a whole batch in one call, as a provider answers a batch from one
    database query."""

    async def lookup(request: BatchLookupRequest) -> dict[str, Found]:
        return {
            item_id: _found(index, subject, request.attributes, request.as_of)
            for item_id, subject in request.subjects.items()
        }

    return lookup


def _read_api_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read ves_api_key_file {path}: {type(exc).__name__}") from None
    if not key or any(ch.isspace() for ch in key):
        raise ConfigError(f"ves_api_key_file {path} must hold one API key")
    return key


def _ves_provider(table: dict[str, Any], base: Path) -> tuple[Lookup, CleanupContext]:
    """The VES lookup and the cleanup context that owns its HTTP session."""
    url = require_str(table, "ves_url")
    if not url.startswith(("https://", "http://")):
        raise ConfigError("ves_url must be an http(s) URL")
    api_key = _read_api_key(resolve(base, table.get("ves_api_key_file"), "ves_api_key_file"))
    deadline_s = table.get("ves_deadline_s", DEFAULT_VES_DEADLINE_S)
    if type(deadline_s) not in (int, float) or not 0 < deadline_s <= 60:
        raise ConfigError("ves_deadline_s must be a number of seconds in (0, 60]")
    running: list[Lookup] = []

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            client = DvlaVesClient(http, url, api_key)
            running.append(ves_lookup(client, deadline_s=float(deadline_s)))
            try:
                yield
            finally:
                running.clear()

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        if not running:
            raise VesUnavailable("ves-session-not-started")
        return await running[0](request)

    return lookup, session


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
    contexts: list[CleanupContext] = []
    lookup: Lookup
    batch_lookup: BatchLookup | None = None  # None: the kit runs the single lookups
    if kind == "dvla-keeper":
        lookup = keeper_lookup()
    elif kind == "dvla-ves":
        lookup, session = _ves_provider(table, base)
        contexts.append(session)
    else:
        index = PopulationIndex(generate_population())
        lookup = reference_lookup(OFFERED[kind], index)
        batch_lookup = reference_batch_lookup(index)
    kit = ProviderKit(
        provider_id=require_str(table, "provider_id"),
        key=load_signing_key(resolve(base, table.get("signing_key"), "signing_key")),
        registry=registry.current,
        lookup=lookup,
        batch_lookup=batch_lookup,
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
    app.cleanup_ctx.extend(contexts)
    return ProviderService(app, kit, registry, str(table.get("host", "127.0.0.1")), port)


def build_ves_stub(config_path: Path) -> tuple[web.Application, str, int]:
    """The DVLA VES test-environment stub a development scheme points its adapter at, with the
    keeper register's synthetic vehicles added to its fleet."""
    from connectors.reference.dvla_stub import create_ves_stub_app
    from connectors.reference.keepers import keeper_fleet

    table = read_toml(config_path)
    api_key = _read_api_key(resolve(config_path.parent, table.get("api_key_file"), "api_key_file"))
    port = table.get("port", 0)
    if type(port) is not int:
        raise ConfigError("port must be an integer")
    app = create_ves_stub_app(api_key, keeper_fleet())
    return app, str(table.get("host", "127.0.0.1")), port
