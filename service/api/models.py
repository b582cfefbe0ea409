"""/v1/models: create, list, get, delete, predict, partial-fit."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from service.api.bodies import json_object, optional_version
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.views import model_view
from service.batches import matrix_from, targets_from
from service.schemas import (
    CreateModel,
    FitRequest,
    FitResponse,
    ModelList,
    ModelView,
    PredictRequest,
    PredictResponse,
)

router = APIRouter(prefix="/v1/models", tags=["models"])


def _documented_body(model: type[PredictRequest] | type[FitRequest]) -> dict[str, object]:
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_model(body: CreateModel, hub: HubDep) -> ModelView:
    return model_view(await hub.create(body))


@router.get("")
async def list_models(hub: HubDep) -> ModelList:
    return ModelList(models=[model_view(live) for live in hub.all()])


@router.get("/{name}")
async def get_model(name: NameParam, hub: HubDep) -> ModelView:
    return model_view(hub.live(name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(name: NameParam, hub: HubDep) -> Response:
    await hub.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/predict", openapi_extra=_documented_body(PredictRequest))
async def predict(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep
) -> PredictResponse:
    spec = hub.live(name).spec
    payload = await json_object(request, allowed={"inputs", "version"})
    inputs = matrix_from(
        payload.get("inputs"),
        field="inputs",
        features=spec.inputs,
        max_rows=settings.max_batch_rows,
        max_abs=settings.max_input_abs,
    )
    version, result = await hub.predict(name, inputs, optional_version(payload))
    return PredictResponse(
        model=name,
        version=version,
        predictions=result.predictions,
        probabilities=result.probabilities,
    )


@router.post("/{name}/partial-fit", openapi_extra=_documented_body(FitRequest))
async def partial_fit(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep
) -> FitResponse:
    spec = hub.live(name).spec
    payload = await json_object(request, allowed={"inputs", "targets"})
    inputs = matrix_from(
        payload.get("inputs"),
        field="inputs",
        features=spec.inputs,
        max_rows=settings.max_batch_rows,
        max_abs=settings.max_input_abs,
    )
    targets = targets_from(
        payload.get("targets"), spec=spec, rows=inputs.shape[0], max_abs=settings.max_input_abs
    )
    outcome = await hub.partial_fit(name, inputs, targets)
    head = outcome.model.head
    return FitResponse(
        model=name,
        step=head.step,
        samples_seen=head.samples_seen,
        trained=outcome.result.trained,
        train_loss=outcome.result.train_loss,
        version=outcome.model.served.version,
    )
