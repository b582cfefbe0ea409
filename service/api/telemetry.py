"""/metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.access import READ
from service.runtime.metrics import Metrics

router = APIRouter(tags=["telemetry"], dependencies=READ)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(generate_latest(registry.exposition), media_type=CONTENT_TYPE_LATEST)
