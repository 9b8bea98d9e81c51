"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.batching import BatchStats
from service.scheduler import Turn

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "glimpse_requests",
            "HTTP requests by route and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "glimpse_request_seconds",
            "Whole-request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "glimpse_stage_seconds",
            "Predict latency split into decode (validation), queue, model and encode.",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "glimpse_batch_size",
            "Instances per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.instances = Counter(
            "glimpse_instances", "Instances predicted.", registry=self.registry
        )
        self.turn_wait = Histogram(
            "glimpse_turn_wait_seconds",
            "Time a model call waited for its turn on the model, by model and kind of work.",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_rows = Counter(
            "glimpse_model_rows",
            "Model rows run (images, glimpse sets, explanation rows), by model and kind.",
            ["model", "kind"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "glimpse_in_flight_requests", "Requests being handled.", registry=self.registry
        )

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.stage.labels("model").observe(stats.run_seconds)
        for seconds in stats.queue_seconds:
            self.stage.labels("queue").observe(seconds)

    def observe_turn(self, model: str, turn: Turn) -> None:
        self.turn_wait.labels(model, turn.kind.value).observe(turn.waited_s)
        self.model_rows.labels(model, turn.kind.value).inc(turn.rows)
