"""/v2: the Open Inference Protocol (KServe / Triton v2 HTTP), beside the native /v1 API.

Existing inference clients read a model's metadata and call infer unchanged. Errors on these
routes answer in the protocol's shape, `{"error": message}` (the native API keeps
`{code, message, field}`): the route class below maps them, with `service.api.errors`' table
for status codes, except that 422 becomes the protocol's 400. Readiness is told by the status
code as the protocol's probes expect: 200 ready, 503 not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.access import PUBLIC, READ
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.errors import error_headers, status_for, validation_problem
from service.api.responses import FastJSONResponse
from service.api.schemas import MAX_VERSION
from service.config import Settings
from service.errors import GradualError
from service.oip import schemas as inference
from service.oip.schemas import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from service.runtime.hub import ModelHub

log = logging.getLogger("gradual.api")

BINARY_HEADER = "inference-header-content-length"
BINARY_REFUSED = (
    "binary tensor data is not supported (the server lists no binary_tensor_data extension); "
    "send data as JSON (tritonclient: set_data_from_numpy(..., binary_data=False))"
)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
VersionParam = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="The model version, as a number.")
]


class ProtocolRoute(APIRoute):
    """A route whose errors, its own validation included, answer `{"error": message}`."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            if BINARY_HEADER in request.headers:
                return protocol_error(400, BINARY_REFUSED)
            try:
                return await handler(request)
            except GradualError as exc:
                status = status_for(exc)
                response = protocol_error(400 if status == 422 else status, exc.message)
                response.headers.update(error_headers(exc))
                return response
            except RequestValidationError as exc:
                problem = validation_problem(exc)
                return protocol_error(400, problem[0] if problem else "the body is not JSON")
            except StarletteHTTPException as exc:
                return protocol_error(exc.status_code, str(exc.detail))
            except Exception as exc:  # the protocol's shape for the unexpected too
                log.exception("unhandled error", exc_info=exc)
                return protocol_error(500, "internal error; see the service log")

        return handle


def protocol_error(status: int, message: str) -> FastJSONResponse:
    return FastJSONResponse({"error": message}, status_code=status)


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ProtocolError} for code in (400, 404)}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "Not ready (the same body)."}}

# Triton's Python client sends JSON without a Content-Type; infer is read-only, so reading
# such a body as JSON (as the native API does) opens no cross-site write.
router = APIRouter(
    prefix="/v2", tags=["open inference protocol"], route_class=ProtocolRoute, responses=ERRORS,
    strict_content_type=False,
)  # fmt: skip


@router.get("", dependencies=READ)
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="gradual", version=request.app.version, extensions=[])


@router.get("/health/live", dependencies=PUBLIC)
async def server_live() -> ServerLive:
    return ServerLive(live=True)


@router.get("/health/ready", response_model=ServerReady, responses=NOT_READY, dependencies=PUBLIC)
async def server_ready(request: Request, hub: HubDep) -> FastJSONResponse:
    ready = bool(request.app.state.loaded) and await _database_answers(hub)
    return _readiness(ServerReady(ready=ready))


@router.get("/models/{name}", dependencies=READ)
async def model_metadata(name: NameParam, hub: HubDep) -> ModelMetadata:
    return await _metadata(hub, name)


@router.get("/models/{name}/versions/{version}", dependencies=READ)
async def version_metadata(name: NameParam, version: VersionParam, hub: HubDep) -> ModelMetadata:
    await hub.version_row(name, version)  # 404 for a version the model never had
    return await _metadata(hub, name)


@router.get(
    "/models/{name}/ready", response_model=ModelReady, responses=NOT_READY, dependencies=READ
)
async def model_ready(name: NameParam, hub: HubDep) -> FastJSONResponse:
    if name not in hub.failed:  # a model that failed to load is known, but not ready
        hub.live(name)
    return _readiness(ModelReady(name=name, ready=name not in hub.failed))


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady, responses=NOT_READY, dependencies=READ,
)  # fmt: skip
async def version_ready(name: NameParam, version: VersionParam, hub: HubDep) -> FastJSONResponse:
    row = await hub.version_row(name, version)
    return _readiness(ModelReady(name=name, ready=row.status == "ready"))


@router.post("/models/{name}/infer", response_model_exclude_none=True, dependencies=READ)
async def infer(
    name: NameParam, body: InferenceRequest, hub: HubDep, settings: SettingsDep
) -> InferenceResponse:
    return await _infer(hub, settings, name, body, version=None)


@router.post(
    "/models/{name}/versions/{version}/infer", response_model_exclude_none=True, dependencies=READ
)
async def infer_version(
    name: NameParam,
    version: VersionParam,
    body: InferenceRequest,
    hub: HubDep,
    settings: SettingsDep,
) -> InferenceResponse:
    return await _infer(hub, settings, name, body, version=version)


async def _infer(
    hub: ModelHub,
    settings: Settings,
    name: NameParam,
    body: InferenceRequest,
    *,
    version: int | None,
) -> InferenceResponse:
    spec = hub.live(name).spec
    names = inference.output_names(spec, body.outputs)
    inputs = inference.input_matrix(
        body, spec, max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs
    )
    served, result = await hub.predict(name, inputs, version)
    outputs = inference.output_tensors(spec, result, names)
    return InferenceResponse(
        model_name=name, model_version=str(served), id=body.id, outputs=outputs
    )


async def _metadata(hub: ModelHub, name: str) -> ModelMetadata:
    spec = hub.live(name).spec
    ready = [row.number for row in await hub.version_rows(name) if row.status == "ready"]
    return inference.model_metadata(name, spec, ready)


async def _database_answers(hub: ModelHub) -> bool:
    try:
        await to_thread.run_sync(hub.registry.ping)
    except Exception:  # any driver error means "not ready"
        return False
    return True


def _readiness(state: ServerReady | ModelReady) -> FastJSONResponse:
    return FastJSONResponse(state.model_dump(), status_code=200 if state.ready else 503)
