"""/v2: the Open Inference Protocol (KServe / Triton v2 HTTP), beside the native /v1 API.

Existing inference clients read a model's metadata and call infer unchanged, JSON or with the
binary tensor data extension (`service.oip.binary_tensors`). Errors on these routes answer in the
protocol's shape, `{"error": message}` (the native API keeps `{code, message, field}`): the
route class below maps them, with `service.api.errors`' table for status codes, except that
422 becomes the protocol's 400. Readiness is told by the status code as the protocol's probes
expect: 200 ready, 503 not. The operations themselves are `service.oip.protocol`'s, which the gRPC
service shares.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.access import PUBLIC, READ
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.errors import error_headers, status_for, validation_problem
from service.api.responses import FastJSONResponse
from service.api.schemas import MAX_VERSION
from service.config import Settings
from service.errors import GradualError, InvalidInput
from service.oip import binary_tensors, protocol
from service.oip.schemas import (
    BinaryOutputs,
    InferenceRequest,
    InferenceResponse,
    InputTensor,
    ModelMetadata,
    ModelReady,
    ProtocolError,
    ServerLive,
    ServerMetadata,
    ServerReady,
    json_inputs,
    to_binary,
)
from service.runtime.batches import decode_json
from service.runtime.hub import ModelHub

log = logging.getLogger("gradual.api")

OCTETS = "application/octet-stream"
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
VersionParam = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="The model version, as a number.")
]
HeaderLength = Annotated[
    int | None,
    Header(
        alias=binary_tensors.HEADER, ge=0,
        description="Binary tensor data: the length of the JSON header; the inputs' raw bytes "
        "(parameters.binary_data_size each) follow it.",
    ),
]  # fmt: skip


class ProtocolRoute(APIRoute):
    """A route whose errors, its own validation included, answer `{"error": message}`."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
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
    extensions = [binary_tensors.EXTENSION]
    return ServerMetadata(name="gradual", version=request.app.version, extensions=extensions)


@router.get("/health/live", dependencies=PUBLIC)
async def server_live() -> ServerLive:
    return ServerLive(live=True)


@router.get("/health/ready", response_model=ServerReady, responses=NOT_READY, dependencies=PUBLIC)
async def server_ready(request: Request, hub: HubDep) -> FastJSONResponse:
    ready = await protocol.server_ready(hub, loaded=bool(request.app.state.loaded))
    return _readiness(ServerReady(ready=ready))


@router.get("/models/{name}", dependencies=READ)
async def model_metadata(name: NameParam, hub: HubDep) -> ModelMetadata:
    return await protocol.metadata(hub, name, None)


@router.get("/models/{name}/versions/{version}", dependencies=READ)
async def version_metadata(name: NameParam, version: VersionParam, hub: HubDep) -> ModelMetadata:
    return await protocol.metadata(hub, name, version)


@router.get(
    "/models/{name}/ready", response_model=ModelReady, responses=NOT_READY, dependencies=READ
)
async def model_ready(name: NameParam, hub: HubDep) -> FastJSONResponse:
    ready = await protocol.model_ready(hub, name, None)
    return _readiness(ModelReady(name=name, ready=ready))


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady, responses=NOT_READY, dependencies=READ,
)  # fmt: skip
async def version_ready(name: NameParam, version: VersionParam, hub: HubDep) -> FastJSONResponse:
    ready = await protocol.model_ready(hub, name, version)
    return _readiness(ModelReady(name=name, ready=ready))


def _self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its `$defs` written in place: OpenAPI documents (and ReDoc)
    cannot resolve a `#/$defs/...` reference inside an operation."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _self_contained(InferenceRequest.model_json_schema())}
        },
    }
}
INFER_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            OCTETS: {
                "schema": {"type": "string", "format": "binary"},
                "description": "Binary outputs: the JSON header (its length in the "
                "Inference-Header-Content-Length header), then the outputs' raw bytes.",
            }
        }
    }
}


@router.post(
    "/models/{name}/infer", response_model=InferenceResponse, responses=INFER_ANSWER,
    openapi_extra=INFER_BODY, dependencies=READ,
)  # fmt: skip
async def infer(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep,
    header_length: HeaderLength = None,
) -> Response:  # fmt: skip
    return await _infer(hub, settings, name, request, header_length, version=None)


@router.post(
    "/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
    responses=INFER_ANSWER, openapi_extra=INFER_BODY, dependencies=READ,
)  # fmt: skip
async def infer_version(
    name: NameParam, version: VersionParam, request: Request, hub: HubDep,
    settings: SettingsDep, header_length: HeaderLength = None,
) -> Response:  # fmt: skip
    return await _infer(hub, settings, name, request, header_length, version=version)


async def _infer(
    hub: ModelHub,
    settings: Settings,
    name: str,
    request: Request,
    header_length: int | None,
    *,
    version: int | None,
) -> Response:
    hub.live(name)  # an unknown model is a 404 whatever the body
    body, tensors = _infer_request(await request.body(), header_length)
    binary = BinaryOutputs.of(body)
    requested = [output.name for output in body.outputs] if body.outputs else None
    served, outputs = await protocol.infer(
        hub, settings, name, tensors, outputs=requested, version=version
    )
    answer = InferenceResponse(
        model_name=name, model_version=str(served), id=body.id, outputs=outputs
    )
    return _answer(answer, binary)


def _infer_request(
    content: bytes, header_length: int | None
) -> tuple[InferenceRequest, list[InputTensor]]:
    """The body → the request, and its inputs with their JSON data or their binary bytes."""
    header, tail = binary_tensors.split(content, header_length)
    payload = decode_json(header)
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    try:
        body = InferenceRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    sizes = [
        binary_tensors.binary_size(tensor.parameters, field=f"inputs.{index}")
        for index, tensor in enumerate(body.inputs)
    ]
    raw = binary_tensors.chunks(sizes, tail, binary=header_length is not None)
    return body, json_inputs(body, raw)


def _answer(answer: InferenceResponse, binary: BinaryOutputs) -> Response:
    """JSON, or with binary outputs the JSON header and their bytes after it."""
    if not any(binary.wanted(output.name) for output in answer.outputs):
        return FastJSONResponse(answer.model_dump(exclude_none=True))
    tail = to_binary(answer.outputs, binary)
    body, length = binary_tensors.frame(answer.model_dump(exclude_none=True), tail)
    return Response(body, media_type=OCTETS, headers={binary_tensors.HEADER: str(length)})


def _readiness(state: ServerReady | ModelReady) -> FastJSONResponse:
    return FastJSONResponse(state.model_dump(), status_code=200 if state.ready else 503)
