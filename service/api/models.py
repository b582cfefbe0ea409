"""/v1/models: create, list, get, delete, predict, partial-fit, validation rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel

from service.api.access import ADMIN, READ, WRITE
from service.api.answers import fit_answer, predict_answer
from service.api.bodies import (
    NDJSON,
    NPY,
    SAFETENSORS,
    media_type,
    payload,
)
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.fitting import labelled_batch, ndjson_fit
from service.api.responses import DuplexStreamingResponse
from service.api.schemas import (
    MAX_VERSION,
    CandidateList,
    CandidateView,
    CreateModel,
    ErrorBody,
    FitRequest,
    FitResponse,
    ModelList,
    ModelView,
    PredictRequest,
    PredictResponse,
    QueuedResponse,
    ValidationRequest,
    ValidationView,
)
from service.api.views import model_view, validation_view

router = APIRouter(prefix="/v1/models", tags=["models"])


NPY_HELP = (
    "NumPy .npy: the inputs array (N, features), or a structured array with fields "
    "`inputs` (features,) and `targets`. Loaded with allow_pickle=False."
)
NDJSON_ANSWER = "An NDJSON body is answered with one JSON line per batch, then a summary."
SAFETENSORS_HELP = "safetensors: tensors named `inputs` and (for training) `targets`."


def _documented_body(model: type[BaseModel], *, stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": model.model_json_schema()}}
    binary = {"type": "string", "format": "binary"}
    content[NPY] = {"schema": binary | {"description": NPY_HELP}}
    content[SAFETENSORS] = {"schema": binary | {"description": SAFETENSORS_HELP}}
    if stream:
        content[NDJSON] = {"schema": {"type": "string", "description": "One JSON batch per line."}}
    return {"requestBody": {"required": True, "content": content}}


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=ADMIN)
async def create_model(body: CreateModel, hub: HubDep) -> ModelView:
    return model_view(await hub.create(body))


@router.get("", dependencies=READ)
async def list_models(hub: HubDep) -> ModelList:
    return ModelList(models=[model_view(live) for live in hub.all()])


@router.get("/{name}", dependencies=READ)
async def get_model(name: NameParam, hub: HubDep) -> ModelView:
    return model_view(hub.live(name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, dependencies=ADMIN)
async def delete_model(name: NameParam, hub: HubDep) -> Response:
    await hub.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{name}/predict", openapi_extra=_documented_body(PredictRequest), dependencies=READ,
    response_model=PredictResponse,
)  # fmt: skip
async def predict(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep,
    version: Annotated[
        int | None, Query(ge=1, le=MAX_VERSION, description="Binary bodies: the version.")
    ] = None,
) -> Response:  # fmt: skip
    body = await request.body()
    return await predict_answer(name, media_type(request), body, hub, settings, version)


@router.post(
    "/{name}/partial-fit",
    openapi_extra=_documented_body(FitRequest, stream=True),
    response_model=FitResponse,
    responses={
        200: {"content": {NDJSON: {"schema": {"type": "string", "description": NDJSON_ANSWER}}}},
        202: {"model": QueuedResponse},
        429: {"model": ErrorBody},
    },
    dependencies=WRITE,
)
async def partial_fit(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep,
    wait: Annotated[bool, Query(description="false: queue the batch and answer 202.")] = True,
    on_error: Annotated[
        Literal["skip", "stop"], Query(description="NDJSON: skip bad lines, or stop there.")
    ] = "skip",
    batch_id: Annotated[
        str | None, Query(max_length=128, description="Binary bodies: the idempotency key.")
    ] = None,
) -> Response | FitResponse:  # fmt: skip
    if media_type(request) == NDJSON:
        lines = ndjson_fit(name, request.stream(), hub, settings, on_error=on_error)
        return DuplexStreamingResponse(lines, media_type=NDJSON)
    body = await request.body()
    kind = media_type(request)
    return await fit_answer(name, kind, body, hub, settings, wait=wait, batch_id=batch_id)


@router.post(
    "/{name}/validation", openapi_extra=_documented_body(ValidationRequest), dependencies=WRITE
)
async def add_validation(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep
) -> ValidationView:
    spec = hub.live(name).spec
    fields = await payload(request, allowed={"inputs", "targets"})
    batch = labelled_batch(fields, spec, settings)
    await hub.add_validation(name, batch.inputs, batch.targets)
    return validation_view(hub.live(name))


@router.get("/{name}/validation", dependencies=READ)
async def get_validation(name: NameParam, hub: HubDep) -> ValidationView:
    return validation_view(hub.live(name))


@router.get("/{name}/candidates", dependencies=READ)
async def get_candidates(name: NameParam, hub: HubDep) -> CandidateList:
    candidates = await hub.candidates(name)
    return CandidateList(
        model=name, candidates=[CandidateView.model_validate(c) for c in candidates]
    )
