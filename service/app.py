"""The application factory: no global state, so every test builds a fresh app."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.middleware.cors import CORSMiddleware

from service.api import (
    cluster,
    dashboard,
    docs,
    errors,
    health,
    models,
    oip,
    openapi,
    progress,
    telemetry,
    training,
    versions,
)
from service.api.deps import discover_model
from service.api.direct import DirectRoutes
from service.api.edge import Edge
from service.api.schemas import ErrorBody
from service.config import Settings
from service.lifespan import lifespan_for
from service.oip.schemas import ProtocolError
from service.runtime.metrics import Metrics, RequestMetrics

# Every route of the API, in routing order (the access tests walk these).
ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    models.router,
    versions.router,
    training.router,
    progress.router,
    telemetry.router,
    oip.router,
    dashboard.router,
    docs.router,
    cluster.router,
)


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None, *, lifespan: Lifespan | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:  # fmt: skip
    """The app; `lifespan` and `metrics` replace the trainer's (a reader process's differ)."""
    settings = settings or Settings()
    app = FastAPI(
        title="Gradual",
        version="0.1.0",
        summary="Online learning for PyTorch models: versioned, guarded, streamed.",
        lifespan=lifespan or lifespan_for(settings),
        # JSON without a Content-Type is read as JSON on every route, as predict does; other
        # types are refused with a 415 at the edge (service.api.limits).
        strict_content_type=False,
        # /docs and /redoc are served by service.api.docs from packaged files, not a CDN.
        docs_url=None,
        redoc_url=None,
        # Off, FastAPI skips its per-request lookup of OpenTelemetry's global providers (a
        # fifth of the CPU of a one-row predict); Prometheus metrics are ours either way.
        telemetry=None if settings.opentelemetry else NO_TELEMETRY,
    )
    metrics = metrics or Metrics()
    app.state.metrics = metrics
    errors.install(app)
    openapi.install(app, ErrorBody.model_json_schema(), ProtocolError.model_json_schema())
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(discover_model)])
    # The last added runs first: metrics, CORS, then the edge's checks (host, cross-site
    # writes, name, body limits) in one layer, then predict and partial-fit's direct path.
    app.add_middleware(DirectRoutes)
    app.add_middleware(
        Edge, hosts=settings.trusted_hosts, origins=settings.cors_origins,
        max_bytes=settings.max_body_bytes,
    )  # fmt: skip
    if settings.cors_origins:  # off by default: browsers then refuse cross-origin reads
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["authorization", "content-type", "last-event-id"],
            expose_headers=["retry-after", "www-authenticate"],
            max_age=600,
        )
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
