"""Prometheus metrics, in a registry of the app's own (several apps can share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.checks = Counter(
            "axb_checks_total", "Checks by result", ["result"], registry=self.registry
        )
        self.check_seconds = Histogram(
            "axb_check_seconds",
            "Time to answer a check",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.provider_calls = Counter(
            "axb_provider_calls_total",
            "Provider calls by status",
            ["provider", "status"],
            registry=self.registry,
        )
