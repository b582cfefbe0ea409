"""Dependencies: long-lived objects made in the lifespan, reached through `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.schemas import NAME_PATTERN
from service.config import Settings
from service.runtime.hub import ModelHub


# async: a plain `def` dependency costs a thread-pool hop on every request.
async def get_hub(request: Request) -> ModelHub:
    hub: ModelHub = request.app.state.hub
    return hub


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def discover_model(request: Request) -> None:
    """With several replicas, a model created on another one may not be here yet: look it up
    in the database before the route answers 404."""
    name = request.path_params.get("name")
    hub: ModelHub = request.app.state.hub
    if isinstance(name, str) and hub.cluster is not None and not hub.has(name):
        await hub.models.discover(name)


HubDep = Annotated[ModelHub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NameParam = Annotated[str, Path(pattern=NAME_PATTERN, description="The model's name.")]
