"""/v1/models: create, list, get, delete, predict, partial-fit, validation rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel

from service.api.bodies import json_object, optional_version
from service.api.deps import HubDep, NameParam, SettingsDep
from service.api.views import fit_view, model_view, validation_view
from service.batches import matrix_from, targets_from
from service.config import Settings
from service.hub import ModelHub
from service.schemas import (
    CreateModel,
    FitRequest,
    FitResponse,
    ModelList,
    ModelView,
    PredictRequest,
    PredictResponse,
    ValidationRequest,
    ValidationView,
)

router = APIRouter(prefix="/v1/models", tags=["models"])


def _documented_body(model: type[BaseModel]) -> dict[str, Any]:
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
        payload.get("inputs"), field="inputs", features=spec.inputs,
        max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs,
    )  # fmt: skip
    version, result = await hub.predict(name, inputs, optional_version(payload))
    return PredictResponse(
        model=name, version=version, predictions=result.predictions,
        probabilities=result.probabilities,
    )  # fmt: skip


@router.post("/{name}/partial-fit", openapi_extra=_documented_body(FitRequest))
async def partial_fit(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep
) -> FitResponse:
    inputs, targets = await _labelled_rows(name, request, hub, settings)
    report = await hub.partial_fit(name, inputs, targets)
    return fit_view(hub.live(name), report)


@router.post("/{name}/validation", openapi_extra=_documented_body(ValidationRequest))
async def add_validation(
    name: NameParam, request: Request, hub: HubDep, settings: SettingsDep
) -> ValidationView:
    inputs, targets = await _labelled_rows(name, request, hub, settings)
    await hub.add_validation(name, inputs, targets)
    return validation_view(hub.live(name))


@router.get("/{name}/validation")
async def get_validation(name: NameParam, hub: HubDep) -> ValidationView:
    return validation_view(hub.live(name))


async def _labelled_rows(
    name: str, request: Request, hub: ModelHub, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    spec = hub.live(name).spec
    payload = await json_object(request, allowed={"inputs", "targets"})
    inputs = matrix_from(
        payload.get("inputs"), field="inputs", features=spec.inputs,
        max_rows=settings.max_batch_rows, max_abs=settings.max_input_abs,
    )  # fmt: skip
    targets = targets_from(
        payload.get("targets"), spec=spec, rows=inputs.shape[0], max_abs=settings.max_input_abs
    )
    return inputs, targets
