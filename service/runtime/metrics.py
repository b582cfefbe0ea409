"""Prometheus metrics: HTTP traffic measured at the edge, model state read at scrape time.

Each app has its own registry (no global state, so tests can build many apps). Model figures
are read from the hub when Prometheus scrapes, so training pays nothing per step for them;
samples per second is `rate(gradual_training_samples_total[1m])`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.runtime.live import LiveModel

HANDOFF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gradual_http_requests", "HTTP requests by route and status.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gradual_http_request_seconds", "HTTP request latency by route.",
            ["method", "route"], registry=self.registry,
        )  # fmt: skip
        self.predict_rows = Histogram(
            "gradual_predict_batch_rows", "Rows per forward pass serving predictions.",
            buckets=ROW_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # Scale-out: this replica's share of the models and how they move.
        self.handoffs = Counter(
            "gradual_handoffs", "Models this replica handed over (out) or took over (in).",
            ["direction"], registry=self.registry,
        )  # fmt: skip
        self.handoff_seconds = Histogram(
            "gradual_handoff_seconds", "From the old owner's decision to this replica's takeover.",
            buckets=HANDOFF_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.models_owned = Gauge(
            "gradual_models_owned", "Models whose training this replica owns.", ["replica"],
            registry=self.registry,
        )  # fmt: skip

    def watch_owned(self, replica: str, owned: Callable[[], int]) -> None:
        self.models_owned.labels(replica).set_function(owned)

    def watch_models(self, models: Callable[[], list[LiveModel]]) -> None:
        self.registry.register(ModelCollector(models))


class ModelCollector(Collector):
    def __init__(self, models: Callable[[], list[LiveModel]]) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for live in self.models():
            learner, name = live.learner, [live.name]
            families["steps"].add_metric(name, learner.head.step)
            families["samples"].add_metric(name, learner.head.samples_seen)
            families["served"].add_metric(name, learner.served.version)
            families["head"].add_metric(name, learner.head_version)
            families["queue"].add_metric(name, live.pipeline.depth)
            families["stopped"].add_metric(name, float(learner.control.state == "stopped"))
            families["rollbacks"].add_metric(name, learner.recorder.counts["rollback"])
            families["early_stops"].add_metric(name, learner.recorder.counts["early_stop"])
            families["validation_rows"].add_metric(name, learner.buffer.size)
            for key in ("train_loss", "val_loss"):
                value = learner.recorder.last_round.get(key)
                if value is not None:
                    families[key].add_metric(name, value)
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                families["device_memory"].add_metric(
                    [f"cuda:{index}"], torch.cuda.memory_allocated(index)
                )
        yield from families.values()


def _families() -> dict[str, CounterMetricFamily | GaugeMetricFamily]:
    model = ["model"]
    return {
        "steps": CounterMetricFamily("gradual_training_steps", "Optimizer steps.", labels=model),
        "samples": CounterMetricFamily(
            "gradual_training_samples", "Rows seen by training.", labels=model
        ),
        "served": GaugeMetricFamily("gradual_served_version", "Served version.", labels=model),
        "head": GaugeMetricFamily("gradual_head_version", "Training head's version.", labels=model),
        "queue": GaugeMetricFamily("gradual_queue_depth", "Pending batches.", labels=model),
        "stopped": GaugeMetricFamily(
            "gradual_stopped", "1 when training is stopped.", labels=model
        ),
        "rollbacks": CounterMetricFamily("gradual_rollbacks", "Rollbacks.", labels=model),
        "early_stops": CounterMetricFamily("gradual_early_stops", "Early stops.", labels=model),
        "validation_rows": GaugeMetricFamily(
            "gradual_validation_rows", "Rows in the validation buffer.", labels=model
        ),
        "train_loss": GaugeMetricFamily(
            "gradual_train_loss", "Train loss of the last round.", labels=model
        ),
        "val_loss": GaugeMetricFamily(
            "gradual_validation_loss", "Validation loss of the last round.", labels=model
        ),
        "device_memory": GaugeMetricFamily(
            "gradual_device_memory_bytes", "Accelerator memory allocated.", labels=["device"]
        ),
    }


class RequestMetrics:
    """Pure ASGI middleware: counts and times every request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def send_with_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status[0])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
