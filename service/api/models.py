"""/v1/models: create, list, get, delete, predict, partial-fit, validation rows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel

from service.api.access import ADMIN, READ, WRITE
from service.api.bodies import (
    NDJSON,
    NPY,
    SAFETENSORS,
    media_type,
    optional_version,
    payload,
)
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.fitting import FIT_KEYS, labelled_batch, ndjson_fit
from service.api.responses import DuplexStreamingResponse, FastJSONResponse
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
from service.api.views import fit_view, model_view, validation_view
from service.runtime.batches import matrix_from

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
    spec = hub.live(name).spec
    fields = await payload(request, allowed={"inputs", "version"})
    inputs = matrix_from(
        fields.get("inputs"), field="inputs", features=spec.inputs,
        max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs,
    )  # fmt: skip
    version, result = await hub.predict(name, inputs, optional_version(fields) or version)
    # Built here and serialised by orjson: the hot path skips response-model validation.
    body = {"model": name, "version": version, "predictions": result.predictions}
    return FastJSONResponse(body | {"probabilities": result.probabilities})


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
    spec = hub.live(name).spec
    fields = await payload(request, allowed=FIT_KEYS)
    batch = labelled_batch({"batch_id": batch_id} | fields, spec, settings)
    outcome = await hub.partial_fit(
        name, batch.inputs, batch.targets, batch_id=batch.batch_id, wait=wait
    )
    if outcome.queued is not None:
        queued = QueuedResponse(model=name, batch_id=batch.batch_id, queued=outcome.queued)
        return FastJSONResponse(queued.model_dump(), status_code=status.HTTP_202_ACCEPTED)
    # Serialised by orjson: FastAPI would validate the response model a second time.
    return FastJSONResponse(fit_view(hub.live(name), outcome, batch.batch_id).model_dump())


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
