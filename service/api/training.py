"""/v1/models/{name}: training control (PATCH training, stop, resume)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.access import ADMIN, WRITE
from service.api.deps import HubDep, NameParam
from service.api.schemas import ModelView, TrainingPatch
from service.api.views import model_view
from service.learning.training_config import TrainingConfig

router = APIRouter(prefix="/v1/models/{name}", tags=["training"])


@router.patch("/training", dependencies=ADMIN)
async def update_training(name: NameParam, body: TrainingPatch, hub: HubDep) -> TrainingConfig:
    return await hub.update_training(name, body.model_dump(exclude_unset=True))


@router.post("/stop", dependencies=WRITE)
async def stop(name: NameParam, hub: HubDep) -> ModelView:
    await hub.stop(name)
    return model_view(hub.live(name))


@router.post("/resume", dependencies=WRITE)
async def resume(name: NameParam, hub: HubDep) -> ModelView:
    await hub.resume(name)
    return model_view(hub.live(name))
