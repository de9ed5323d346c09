"""The reference providers: the provider kit around a lookup. Run one with
``axb provider serve --config providers/X.toml``; the config's ``reference`` picks the kind:

- ``dwp``, ``hmrc``: DWP-style and HMRC-style lookups over the synthetic population, with a
  batch lookup for batched requests;
- ``council-blue-badge``: ``blue-badge-holder`` from a council's own Blue Badge register
  (:mod:`connectors.reference.blue_badges`), for the residents of the synthetic population;
- ``dvla-keeper``: ``registered-keeper`` over the synthetic keeper register
  (:mod:`connectors.reference.keepers`); batches through the kit's single lookups;
- ``dvla-ves``: ``vehicle-taxed`` and ``vehicle-mot-valid`` from a DVLA Vehicle Enquiry
  Service endpoint (the real one, or :mod:`connectors.reference.dvla_stub`). Extra keys:
  ``ves_url`` (base URL, without the ``/vehicle-enquiry/v1/vehicles`` path),
  ``ves_api_key_file`` (a file holding the API key) and optionally ``ves_deadline_s`` (how
  long one enquiry may take, retries after a 429 included; default 1.8). The service owns
  its HTTP session: opened on app startup, closed on cleanup.
- ``dwp-cis``: the free-school-meals benefits and ``uc-take-home-pay-below`` from a DWP
  Citizen Information API endpoint (the real one, or :mod:`connectors.reference.dwp_cis_stub`)
  through :mod:`connectors.dwp_cis`. Extra keys: ``cis_url`` (base URL),
  ``cis_token_url`` (default ``{cis_url}/oauth2/token``), ``cis_client_id``,
  ``cis_client_secret_file``, ``cis_policy_id`` and optionally ``cis_deadline_s`` (default
  1.8). ``instigating-user-id`` is the provider's own id. It owns its HTTP session too.
  VES and CIS have no batch API, so the development scheme declares no batches for them
  (``max_batch`` 1).
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
    configured_signer,
    read_toml,
    require_str,
    resolve,
    scheme_files,
)
from connectors.dvla_ves import VES_ATTRIBUTES, DvlaVesClient, VesUnavailable, ves_lookup
from connectors.dwp_cis import CIS_ATTRIBUTES, DwpCisClient, DwpUnavailable, cis_lookup
from connectors.errors import ConfigError, ProviderFault
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
from connectors.reference.blue_badges import BADGE_ATTRIBUTES, badge_lookup
from connectors.reference.keepers import KEEPER_ATTRIBUTES, keeper_lookup
from connectors.reference.population import PopulationIndex, generate_population
from connectors.reference.predicates import evaluate_predicate
from connectors.registry_source import RegistrySource
from trust.messages import Subject
from trust.parameters import Predicate

OFFERED: Mapping[str, Mapping[str, str]] = {
    "dwp": DWP_ATTRIBUTES,
    "hmrc": HMRC_ATTRIBUTES,
    "dvla-keeper": KEEPER_ATTRIBUTES,
    "dvla-ves": VES_ATTRIBUTES,
    "dwp-cis": CIS_ATTRIBUTES,
    "council-blue-badge": BADGE_ATTRIBUTES,
}
DEFAULT_VES_DEADLINE_S = 1.8

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def _found(
    index: PopulationIndex,
    subject: Subject,
    attributes: Sequence[str],
    as_of: date,
    predicates: Sequence[Predicate] = (),
) -> Found:
    fields = subject.fields
    person = index.match(
        fields["family_name"], date.fromisoformat(fields["date_of_birth"]), fields.get("nino")
    )
    if person is None:
        return None
    answers = {name: evaluate(person, name, as_of) for name in attributes}
    for predicate in predicates:
        answers[str(predicate)] = evaluate_predicate(person, predicate, as_of)
    return answers


def reference_lookup(offered: Mapping[str, str], index: PopulationIndex) -> Lookup:
    """A lookup answering ``offered`` attributes (and the reference predicates) by exact match
    on surname and date of birth (and NINO when the broker sends one)."""

    async def lookup(request: LookupRequest) -> Found:
        return _found(index, request.subject, request.attributes, request.as_of, request.predicates)

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


def _read_api_key(path: Path, what: str = "ves_api_key_file") -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {type(exc).__name__}") from None
    if not key or any(ch.isspace() for ch in key):
        raise ConfigError(f"{what} {path} must hold one secret")
    return key


def _deadline(table: dict[str, Any], name: str) -> float:
    deadline_s = table.get(name, DEFAULT_VES_DEADLINE_S)
    if type(deadline_s) not in (int, float) or not 0 < deadline_s <= 60:
        raise ConfigError(f"{name} must be a number of seconds in (0, 60]")
    return float(deadline_s)


def _session_lookup(
    build: Callable[[aiohttp.ClientSession], Lookup], not_started: ProviderFault
) -> tuple[Lookup, CleanupContext]:
    """A lookup built around an HTTP session the service owns: opened on app startup, closed
    on cleanup; asked before startup (or after cleanup) it raises ``not_started``."""
    running: list[Lookup] = []

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            running.append(build(http))
            try:
                yield
            finally:
                running.clear()

    async def lookup(request: LookupRequest) -> Mapping[str, bool] | None:
        if not running:
            raise not_started
        return await running[0](request)

    return lookup, session


def _ves_provider(table: dict[str, Any], base: Path) -> tuple[Lookup, CleanupContext]:
    """The VES lookup and the cleanup context that owns its HTTP session."""
    url = require_str(table, "ves_url")
    if not url.startswith(("https://", "http://")):
        raise ConfigError("ves_url must be an http(s) URL")
    api_key = _read_api_key(resolve(base, table.get("ves_api_key_file"), "ves_api_key_file"))
    deadline_s = _deadline(table, "ves_deadline_s")
    return _session_lookup(
        lambda http: ves_lookup(DvlaVesClient(http, url, api_key), deadline_s=deadline_s),
        VesUnavailable("ves-session-not-started"),
    )


def _cis_provider(table: dict[str, Any], base: Path) -> tuple[Lookup, CleanupContext]:
    """The DWP CIS lookup and the cleanup context that owns its HTTP session."""
    url = require_str(table, "cis_url")
    token_url = str(table.get("cis_token_url", url.rstrip("/") + "/oauth2/token"))
    for value in (url, token_url):
        if not value.startswith(("https://", "http://")):
            raise ConfigError("cis_url and cis_token_url must be http(s) URLs")
    client_id, policy_id = require_str(table, "cis_client_id"), require_str(table, "cis_policy_id")
    secret_file = resolve(base, table.get("cis_client_secret_file"), "cis_client_secret_file")
    secret = _read_api_key(secret_file, "cis_client_secret_file")
    deadline_s = _deadline(table, "cis_deadline_s")
    instigator = require_str(table, "provider_id")

    def build(http: aiohttp.ClientSession) -> Lookup:
        client = DwpCisClient(
            http,
            base_url=url,
            token_url=token_url,
            client_id=client_id,
            client_secret=secret,
            policy_id=policy_id,
        )
        return cis_lookup(client, instigator=instigator, deadline_s=deadline_s)

    return _session_lookup(build, DwpUnavailable("dwp-session-not-started"))


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
    elif kind == "council-blue-badge":
        lookup = badge_lookup(PopulationIndex(generate_population()))
    elif kind == "dwp-cis":
        lookup, session = _cis_provider(table, base)
        contexts.append(session)
    else:
        index = PopulationIndex(generate_population())
        lookup = reference_lookup(OFFERED[kind], index)
        batch_lookup = reference_batch_lookup(index)
    kit = ProviderKit(
        provider_id=require_str(table, "provider_id"),
        key=configured_signer(base, table.get("signing_key"), "signing_key"),
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


def build_cis_stub(config_path: Path) -> tuple[web.Application, str, int]:
    """The DWP Citizen Information API stub (:mod:`connectors.reference.dwp_cis_stub`) on the
    synthetic population: ``client_id``, ``client_secret_file``, ``host``, ``port``."""
    from connectors.reference.dwp_cis_stub import create_cis_stub_app

    table = read_toml(config_path)
    secret_file = resolve(config_path.parent, table.get("client_secret_file"), "client_secret_file")
    secret = _read_api_key(secret_file, "client_secret_file")
    port = table.get("port", 0)
    if type(port) is not int:
        raise ConfigError("port must be an integer")
    app = create_cis_stub_app(require_str(table, "client_id"), secret)
    return app, str(table.get("host", "127.0.0.1")), port


def build_stub(config_path: Path) -> tuple[web.Application, str, int]:
    """The stub a development scheme's ``stubs/<name>.toml`` describes: DWP's CIS
    (``dwp-cis-stub``, written when ``axb demo`` joins the CIS adapter) or DVLA's VES."""
    build = build_cis_stub if config_path.stem == "dwp-cis-stub" else build_ves_stub
    return build(config_path)
