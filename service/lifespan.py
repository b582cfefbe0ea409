"""Long-lived resources: created at start, closed at stop, nowhere else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from anyio import to_thread
from fastapi import FastAPI
from grpc import aio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from service import crashpoints
from service.config import Settings
from service.oip.grpc import server as grpc_server
from service.runtime.hub import ModelHub
from service.runtime.metrics import Metrics
from service.storage import consistency
from service.storage.db import migrate
from service.storage.db.engine import make_engine, make_sessionmaker
from service.storage.registry import Registry
from service.storage.weightstore import WeightStorage, open_store

log = logging.getLogger("gradual")


def lifespan_for(settings: Settings):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        crashpoints.arm(settings.crashpoint)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        url = settings.resolved_database_url
        await to_thread.run_sync(migrate.upgrade, url)
        engine, progress = make_engine(url), make_engine(url, wait_for_disk=False)
        metrics: Metrics = app.state.metrics
        registry = Registry(make_sessionmaker(engine), make_sessionmaker(progress))
        store = open_store(settings)
        await to_thread.run_sync(_check_store, registry, store, settings)
        redis = _redis(settings.redis_url, settings.replica_id) if settings.redis_url else None
        hub = ModelHub(settings, registry, store, metrics=metrics, redis=redis)
        metrics.watch_models(hub.all)
        metrics.watch_storage(hub.storage)
        app.state.settings = settings
        app.state.hub = hub
        app.state.loaded = False
        await hub.models.load_all()
        if hub.cluster is not None:
            await hub.cluster.start()
        app.state.redis = redis
        app.state.loaded = True
        grpc = await _start_grpc(app, hub, settings)
        log.info("gradual ready: %d models on %s", len(hub.all()), hub.device)
        _log_access(settings)
        try:
            yield
        finally:
            if grpc is not None:
                await grpc_server.stop(grpc)
            if hub.cluster is not None:
                await hub.cluster.stop_consuming()
            await hub.close()  # finish queued steps before the engine goes
            if hub.cluster is not None:
                await hub.cluster.release()  # after the final snapshots: ack, hand leases back
            if redis is not None:
                await redis.aclose()
            engine.dispose()
            progress.dispose()

    return lifespan


async def _start_grpc(app: FastAPI, hub: ModelHub, settings: Settings) -> aio.Server | None:
    """The Open Inference Protocol's gRPC service, when GRADUAL_GRPC_PORT is set."""
    app.state.grpc_port = None
    if settings.grpc_port is None:
        return None
    server, app.state.grpc_port = await grpc_server.start(
        hub, settings, loaded=lambda: bool(app.state.loaded), version=app.version
    )
    return server


def _log_access(settings: Settings) -> None:
    if settings.auth_enabled:
        log.info("access: bearer tokens required (%d configured)", len(settings.api_tokens))
    elif settings.insecure:
        log.warning(
            "no API tokens and --insecure: anyone who reaches %s may do anything", settings.host
        )
    else:
        log.warning(
            "no API tokens configured: the API is open, so it listens on %s (loopback) only; "
            "set GRADUAL_API_TOKENS to serve a network (see SECURITY.md)",
            settings.host,
        )


def _check_store(registry: Registry, store: WeightStorage, settings: Settings) -> None:
    """`gradual check` at start, before anything writes: logs and repairs, never stops the start."""
    try:
        # replicas share the folder: a file younger than a minute may be a peer's checkpoint
        grace = 60.0 if settings.redis_url else 0.0
        report = consistency.check(registry, store, repair=True, grace_s=grace)
    except Exception:  # a start must not fail on its own self-check
        log.exception("consistency check failed; starting anyway")
        return
    for finding in report.findings:
        log.warning("consistency: %s", finding.describe())
    log.info(
        "consistency: %d versions and %d files checked, %d findings",
        report.versions, report.files, len(report.findings),
    )  # fmt: skip


def _redis(url: str, replica: str) -> Redis:
    """A client that fails fast when Redis is down (the caller answers 503 and retries later),
    named for its replica in Redis' `CLIENT LIST`."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)
    name = f"gradual:{replica}"
    return Redis.from_url(url, socket_connect_timeout=2.0, retry=retry, client_name=name)
