"""Prometheus metrics, in a registry of the app's own (several apps can share a process).

Named to Prometheus's conventions (base units, ``_total`` for counters) and checked with
``promtool check metrics`` in the suite. What an operator reads:

- checks: ``axb_checks_total{result}`` (answered, or the problem that ended the request),
  ``axb_check_outcomes_total{check, requester, outcome}`` for answered and refused checks (the
  members and checks of the registry: a bounded set), ``axb_check_seconds``;
- providers: ``axb_provider_calls_total{provider, status}``,
  ``axb_provider_call_seconds{provider}``, ``axb_provider_circuit_state{provider}`` (0 closed,
  1 half-open, 2 open) and ``axb_provider_in_flight{provider}``, read at scrape time;
- the consent log: ``axb_log_append_seconds`` (from a check's append to its record durable),
  ``axb_log_batch_records`` and ``axb_log_commit_seconds`` per group commit,
  ``axb_log_records`` (as far as this process knows) and ``axb_checkpoint_age_seconds``,
  read at scrape;
- ``axb_admission_errors_total``: checks the replay store could not admit (Redis down);
- the process: ``process_*`` (CPU, memory, open files) and ``python_*``, and
  ``axb_worker_info{pid}``, so each worker of ``axb serve --workers N`` is told apart.

Under ``axb serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor) a scrape
answers for every worker, whichever it reaches: prometheus-client's multiprocess mode sums
the counters and histograms over the workers (a dead worker's counts kept), and the gauges are
each live worker's, labelled ``pid``: ``axb_worker_info``, ``axb_provider_circuit_state`` and
``process_*`` (memory, open files, start time; ``process_cpu_seconds_total`` is a counter of
every worker's CPU). ``axb_provider_in_flight`` is summed over the workers,
``axb_log_records`` is the largest any worker knows and ``axb_checkpoint_age_seconds`` the
smallest (the freshest checkpoint). Each worker writes its gauges every second and at each
scrape it answers. ``python_*`` series are not kept across processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_ALL: dict[str, Any] = {"multiprocess_mode": "liveall"}  # each live worker's, by pid
_PROCESS_GAUGES = (
    ("process_resident_memory_bytes", "Resident memory size in bytes"),
    ("process_virtual_memory_bytes", "Virtual memory size in bytes"),
    ("process_open_fds", "Number of open file descriptors"),
    ("process_max_fds", "Maximum number of open file descriptors"),
    ("process_start_time_seconds", "Start time of the process since unix epoch in seconds"),
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_LOG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)  # a commit's time


@dataclass(frozen=True, slots=True)
class ProviderState:
    provider: str
    circuit: str
    in_flight: int


class _ScrapeTime(Collector):
    """Gauges read from the broker's own state when Prometheus scrapes."""

    def __init__(
        self,
        providers: Callable[[], list[ProviderState]],
        log_size: Callable[[], int],
        checkpoint_age_s: Callable[[], float],
    ) -> None:
        self.providers = providers
        self.log_size = log_size
        self.checkpoint_age_s = checkpoint_age_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        circuit = GaugeMetricFamily(
            "axb_provider_circuit_state",
            "Each provider's circuit breaker: 0 closed, 1 half-open, 2 open",
            labels=["provider"],
        )
        in_flight = GaugeMetricFamily(
            "axb_provider_in_flight", "Calls in flight to each provider", labels=["provider"]
        )
        for state in self.providers():
            circuit.add_metric([state.provider], CIRCUIT_STATES[state.circuit])
            in_flight.add_metric([state.provider], state.in_flight)
        yield circuit
        yield in_flight
        yield GaugeMetricFamily(
            "axb_log_records",
            "Records in the consent log, as far as this process knows",
            value=self.log_size(),
        )
        yield GaugeMetricFamily(
            "axb_checkpoint_age_seconds",
            "Seconds since the latest checkpoint this process knows of (NaN: none yet)",
            value=self.checkpoint_age_s(),
        )


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.checks = Counter("axb_checks_total", "Checks by result", ["result"], registry=r)
        self.check_outcomes = Counter(
            "axb_check_outcomes_total",
            "Answered and refused checks by check, requester and outcome (or band)",
            ["check", "requester", "outcome"],
            registry=r,
        )
        self.check_seconds = Histogram(
            "axb_check_seconds", "Time to answer a check", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.provider_calls = Counter(
            "axb_provider_calls_total",
            "Provider calls by status",
            ["provider", "status"],
            registry=r,
        )
        self.provider_call_seconds = Histogram(
            "axb_provider_call_seconds",
            "Time a provider took to answer a call (or to fail it)",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.log_append_seconds = Histogram(
            "axb_log_append_seconds",
            "From a record's append to its being durable (group commit included)",
            buckets=_LOG_BUCKETS,
            registry=r,
        )
        self.log_batch_records = Histogram(
            "axb_log_batch_records",
            "Records per group commit of the consent log",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),
            registry=r,
        )
        self.log_commit_seconds = Histogram(
            "axb_log_commit_seconds",
            "Time one group commit of the consent log took",
            buckets=_LOG_BUCKETS,
            registry=r,
        )
        self.admission_errors = Counter(
            "axb_admission_errors_total",
            "Checks the replay store could not admit (it was unavailable)",
            registry=r,
        )
        self.bulk_notices = Counter(
            "axb_bulk_notices_total",
            "Attempts to post a bulk job's end-of-job notice, by result "
            "(delivered, retrying, gave-up)",
            ["result"],
            registry=r,
        )
        self.multiprocess = MULTIPROCESS_ENV in os.environ
        self._state: _ScrapeTime | None = None
        if self.multiprocess:
            self._workers = _WorkerGauges(r)
            return
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge("axb_worker_info", "This broker process", ["pid"], registry=r).labels(
            str(os.getpid())
        ).set(1)

    def observe_commit(self, records: int, seconds: float) -> None:
        self.log_batch_records.observe(records)
        self.log_commit_seconds.observe(seconds)

    def read_at_scrape(
        self,
        providers: Callable[[], list[ProviderState]],
        log_size: Callable[[], int],
        checkpoint_age_s: Callable[[], float] = lambda: math.nan,
    ) -> None:
        """Register the gauges read from the broker's state at each scrape (under
        ``--workers``: written by :meth:`publish`)."""
        self._state = _ScrapeTime(providers, log_size, checkpoint_age_s)
        if not self.multiprocess:
            self.registry.register(self._state)

    def publish(self) -> None:
        """Under ``--workers``: write this worker's gauges where the others' scrapes read them
        (every second, and before each scrape this worker answers)."""
        if self.multiprocess and self._state is not None:
            self._workers.publish(self._state)

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or under ``--workers`` every
        worker's."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        self.publish()
        together = CollectorRegistry()
        multiprocess.MultiProcessCollector(together)  # type: ignore[no-untyped-call]
        return generate_latest(together)


class _WorkerGauges:
    """A worker's gauges in multiprocess mode (see the module doc)."""

    def __init__(self, r: CollectorRegistry) -> None:
        info = Gauge("axb_worker_info", "This broker process", registry=r, **_LIVE_ALL)
        info.set(1)
        self._circuit = Gauge(
            "axb_provider_circuit_state",
            "Each provider's circuit breaker: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=r,
            **_LIVE_ALL,
        )
        self._in_flight = Gauge(
            "axb_provider_in_flight",
            "Calls in flight to each provider",
            ["provider"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self._log_records = Gauge(
            "axb_log_records",
            "Records in the consent log, as far as any worker knows",
            multiprocess_mode="livemax",
            registry=r,
        )
        self._checkpoint_age = Gauge(
            "axb_checkpoint_age_seconds",
            "Seconds since the latest checkpoint any worker signed (+Inf: none yet)",
            multiprocess_mode="livemin",
            registry=r,
        )
        self._process = {
            name: Gauge(name, doc, registry=r, **_LIVE_ALL) for name, doc in _PROCESS_GAUGES
        }
        self._cpu = Counter(
            "process_cpu_seconds", "Total user and system CPU time spent in seconds", registry=r
        )
        self._cpu_seen = 0.0
        self._reader = ProcessCollector(registry=None)

    def publish(self, state: _ScrapeTime) -> None:
        for provider in state.providers():
            self._circuit.labels(provider.provider).set(CIRCUIT_STATES[provider.circuit])
            self._in_flight.labels(provider.provider).set(provider.in_flight)
        self._log_records.set(state.log_size())
        age = state.checkpoint_age_s()
        self._checkpoint_age.set(math.inf if math.isnan(age) else age)
        for family in self._reader.collect():
            for sample in family.samples:
                if sample.name in self._process:
                    self._process[sample.name].set(sample.value)
                elif sample.name == "process_cpu_seconds_total" and sample.value > self._cpu_seen:
                    self._cpu.inc(sample.value - self._cpu_seen)
                    self._cpu_seen = sample.value
