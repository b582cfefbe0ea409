"""/healthz (the process is up) and /readyz (database and Redis answer, models are loaded)."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request

from service.api.access import PUBLIC
from service.api.deps import HubDep
from service.api.responses import FastJSONResponse
from service.api.schemas import Health
from service.errors import GradualError

# Probes answer without a token: they reveal only "up" / "ready" and counts.
router = APIRouter(tags=["health"], dependencies=PUBLIC)


@router.get("/healthz")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Health}})
async def readyz(request: Request, hub: HubDep) -> FastJSONResponse:
    detail: dict[str, object] = {
        "models": len(hub.all()),
        "failed": hub.models.failed,
        "compile": hub.limits.compile,  # GRADUAL_COMPILE as it runs ("off" if unavailable)
    }
    try:
        await to_thread.run_sync(hub.registry.ping)
    except Exception as exc:  # any driver error means "not ready", never a 500
        detail["database"] = f"unreachable: {type(exc).__name__}"
        return FastJSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
    if not request.app.state.loaded:
        return FastJSONResponse({"status": "loading", "detail": detail}, status_code=503)
    detail["database"] = "ok"
    if hub.storage.fault is not None and not await to_thread.run_sync(hub.storage.probe):
        return _storage_fault(hub.storage.fault, detail)
    if hub.cluster is not None:
        try:
            await hub.cluster.redis.ping()
        except Exception as exc:  # batches cannot be made durable without Redis
            detail["redis"] = f"unreachable: {type(exc).__name__}"
            return FastJSONResponse({"status": "unavailable", "detail": detail}, status_code=503)
        detail["redis"] = "ok"
        detail["owned"] = hub.cluster.training()
    return FastJSONResponse({"status": "ready", "detail": detail})


def _storage_fault(fault: GradualError | None, detail: dict[str, object]) -> FastJSONResponse:
    """Not ready for writes (the last one failed, and a probe write still does); predictions
    are still served, and the body says so."""
    if fault is not None:  # (cleared meanwhile by a write that succeeded: report it anyway)
        detail["storage"] = {"code": fault.code, "field": fault.field, "message": fault.message}
    detail["predictions"] = "served"
    code = fault.code if fault is not None else "storage_unavailable"
    return FastJSONResponse({"status": code, "detail": detail}, status_code=503)
