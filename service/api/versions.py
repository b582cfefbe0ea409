"""/v1/models/{name}/versions, rollback and events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from service.api.access import ADMIN, READ, WRITE
from service.api.deps import HubDep, NameParam
from service.api.schemas import (
    MAX_EVENT_ID,
    MAX_VERSION,
    EventList,
    PromoteRequest,
    RollbackRequest,
    VersionList,
    VersionView,
)
from service.api.views import event_view, version_view

router = APIRouter(prefix="/v1/models/{name}", tags=["versions"])


@router.post("/versions", status_code=status.HTTP_201_CREATED, dependencies=WRITE)
async def create_version(name: NameParam, hub: HubDep) -> VersionView:
    row = await hub.checkpoint(name)
    return version_view(row, served_version=hub.live(name).learner.served.version)


@router.get("/versions", dependencies=READ)
async def list_versions(name: NameParam, hub: HubDep) -> VersionList:
    rows = await hub.version_rows(name)
    learner = hub.live(name).learner
    served = learner.served.version
    return VersionList(
        model=name,
        served_version=served,
        head_version=learner.head_version,
        versions=[version_view(row, served_version=served) for row in rows],
    )


@router.get("/versions/{version}", dependencies=READ)
async def get_version(
    name: NameParam, version: Annotated[int, Path(ge=1, le=MAX_VERSION)], hub: HubDep
) -> VersionView:
    row = await hub.version_row(name, version)
    return version_view(row, served_version=hub.live(name).learner.served.version)


@router.post("/rollback", dependencies=ADMIN)
async def rollback(name: NameParam, body: RollbackRequest, hub: HubDep) -> VersionView:
    await hub.rollback(name, body.version)
    row = await hub.version_row(name, body.version)
    return version_view(row, served_version=body.version)


@router.post("/promote", dependencies=ADMIN)
async def promote(name: NameParam, body: PromoteRequest, hub: HubDep) -> VersionView:
    await hub.promote(name, body.version)
    row = await hub.version_row(name, body.version)
    return version_view(row, served_version=body.version)


@router.get("/events", dependencies=READ)
async def list_events(
    name: NameParam, hub: HubDep, since: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0
) -> EventList:
    rows = await hub.events(name, since)
    return EventList(model=name, events=[event_view(row) for row in rows])
