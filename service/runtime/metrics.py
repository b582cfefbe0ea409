"""Prometheus metrics: HTTP traffic measured at the edge, model state read at scrape time.

Each app has its own registry (no global state, so tests can build many apps). Model figures
are read from the hub when Prometheus scrapes, so training pays nothing per step for them;
samples per second is `rate(gradual_training_samples_total[1m])`. Under `gradual serve
--workers N` every process keeps its counters and histograms in one shared folder
(prometheus-client's multiprocess mode) and the trainer's `/metrics` adds them up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.runtime.live import LiveModel
from service.storage.guard import StorageGuard

HANDOFF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


def share_across_processes(folder: Path) -> None:
    """Prometheus' multiprocess mode for this process and the ones it starts: the counters and
    histograms made after this call live in files of `folder`, one per process."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)  # read by prometheus-client (children)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class Metrics:
    """The service's metrics. `shared`: the folder of the processes' multiprocess files (see
    `share_across_processes`); `/metrics` then sums every process's counters and histograms."""

    def __init__(self, shared: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        # What /metrics exposes: this registry, or every process's files plus this one's
        # collectors of live state (models, storage).
        self.exposition = self.registry
        if shared is not None:
            self.exposition = CollectorRegistry()
            MultiProcessCollector(self.exposition, path=str(shared))  # type: ignore[no-untyped-call]
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

    def watch_owned(self, replica: str, owned: Callable[[], int]) -> None:
        """Read at scrape time (a collector, not a gauge: one value for every process)."""
        self.exposition.register(OwnedCollector(replica, owned))

    def watch_models(self, models: Callable[[], list[LiveModel]]) -> None:
        self.exposition.register(ModelCollector(models))

    def watch_storage(self, storage: StorageGuard) -> None:
        self.exposition.register(StorageCollector(storage))


class OwnedCollector(Collector):
    """How many models this replica trains (scale-out with Redis)."""

    def __init__(self, replica: str, owned: Callable[[], int]) -> None:
        self.replica = replica
        self.owned = owned

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "gradual_models_owned", "Models whose training this replica owns.", labels=["replica"]
        )
        family.add_metric([self.replica], self.owned())
        yield family


class StorageCollector(Collector):
    """Free bytes of each directory written to, the reserve, and whether writes fail now."""

    def __init__(self, storage: StorageGuard) -> None:
        self.storage = storage

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "gradual_storage_free_bytes",
            "Free bytes of a directory written to: log (the data dir), weights, database.",
            labels=["resource"],
        )
        for resource, size in self.storage.free_bytes().items():
            free.add_metric([resource], size)
        yield free
        yield GaugeMetricFamily(
            "gradual_storage_reserve_bytes",
            "Changes are refused once a directory has no more free space than this.",
            value=self.storage.reserve,
        )
        yield GaugeMetricFamily(
            "gradual_storage_fault",
            "1 while the last write failed for lack of space or a read-only directory.",
            value=float(self.storage.fault is not None),
        )


class ModelCollector(Collector):
    def __init__(self, models: Callable[[], list[LiveModel]]) -> None:
        self.models = models

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for live in self.models():
            status, name = live.status, [live.name]
            families["steps"].add_metric(name, status.step)
            families["samples"].add_metric(name, status.samples_seen)
            families["served"].add_metric(name, status.served_version)
            families["head"].add_metric(name, status.head_version)
            families["queue"].add_metric(name, live.pipeline.depth)
            families["stopped"].add_metric(name, float(status.state == "stopped"))
            families["rollbacks"].add_metric(name, status.rollbacks)
            families["early_stops"].add_metric(name, status.early_stops)
            families["validation_rows"].add_metric(name, status.validation_rows)
            for key in ("train_loss", "val_loss"):
                value = status.last_round.get(key)
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
