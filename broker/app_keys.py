"""Typed application keys: what the app factory puts in the app and the handlers read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.gate import Gate
from broker.metrics import Metrics
from broker.overload import LoadShedder
from broker.pipeline import CheckPipeline, RecordedStep
from broker.resilience import ProviderGuards
from broker.settings import Settings
from broker.shutdown import Teardown
from broker.stores.admission import AdmissionStore
from broker.stores.consent_log import ConsentLog
from broker.transparency import TransparencyLog
from connectors.registry_source import RegistrySource


@dataclass(frozen=True)
class Stores:
    admission: AdmissionStore
    consent_log: ConsentLog


SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", RegistrySource)
STORES = web.AppKey("stores", Stores)
PIPELINE = web.AppKey("pipeline", CheckPipeline)
STEP = web.AppKey("step", RecordedStep)
METRICS = web.AppKey("metrics", Metrics)
HTTP = web.AppKey("http", aiohttp.ClientSession)
TRANSPARENCY = web.AppKey("transparency", TransparencyLog)
GUARDS = web.AppKey("guards", ProviderGuards)
GATE = web.AppKey("gate", Gate)
SHEDDER = web.AppKey("shedder", LoadShedder)
TEARDOWN = web.AppKey("teardown", Teardown)
# set on SIGTERM: /readyz answers 503 "stopping" while checks in flight (and, for drain_s,
# new ones) are still answered, so load balancers stop sending first
STOPPING = web.AppKey("stopping", asyncio.Event)
# under ``axb serve --workers N``: the supervisor's status file (how many workers are alive)
WORKERS_FILE: web.AppKey[Path] = web.AppKey("workers_file")
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
PROVIDER_REPORTS = web.RequestKey("provider_reports", list)
